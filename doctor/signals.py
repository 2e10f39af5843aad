"""How every daemon waits for its end (SIGTERM or Ctrl-C, or a time limit), and how tools end
the daemons they started."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterable


def wait_for_stop(duration_s: float | None = None) -> None:
    """Block until SIGTERM or SIGINT arrives (or ``duration_s`` has passed)."""
    stopping = threading.Event()

    def handle(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stopping.wait(duration_s)


def terminate_all(processes: Iterable[subprocess.Popen], timeout_s: float = 10.0,
                  signum: int = signal.SIGTERM) -> None:
    """Signal (SIGTERM) every process still running, wait for each (bounded), SIGKILL the
    stragglers."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
