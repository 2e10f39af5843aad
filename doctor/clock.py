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
    """Epoch seconds as the ISO 8601 UTC string the event contract uses."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


def parse_iso(text: str) -> float:
    """ISO 8601 time (with offset; naive means UTC) to epoch seconds."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()
