"""The one clock every part of the pipeline stamps its events with.

All parts of a run share one machine clock (CLOCK_REALTIME, epoch seconds), so
timestamps taken in different processes can be subtracted for the latency
profile. Durations inside one process use ``monotonic()``, which never jumps.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

now = time.time
monotonic = time.monotonic


def isoformat(epoch: float) -> str:
    """Epoch seconds as the ISO 8601 UTC string the event contract uses.

    A time outside what ``datetime`` can show (before year 1, after 9999, not a number: a
    row stored by an older version, say) is shown as the nearest end of that range rather
    than failing whatever answer it is part of."""
    try:
        return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        end = datetime.max if epoch > 0 else datetime.min
        return end.replace(tzinfo=timezone.utc).isoformat()


def parse_iso(text: str) -> float:
    """ISO 8601 time (with offset; naive means UTC) to epoch seconds."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()
