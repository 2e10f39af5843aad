"""How every daemon waits for its end: SIGTERM or Ctrl-C, or an optional time limit."""

from __future__ import annotations

import signal
import threading


def wait_for_stop(duration_s: float | None = None) -> None:
    """Block until SIGTERM or SIGINT arrives (or ``duration_s`` has passed)."""
    stopping = threading.Event()

    def handle(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stopping.wait(duration_s)
