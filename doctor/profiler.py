"""Latency checkpoints of one fault, on the shared clock.

Doctor's profile of a host failure has ten checkpoints. Each part appends the
ones it sees to a JSON-lines file (one ``write`` per line on a file opened
with O_APPEND, so several processes can share it); the run script reads them
back and prints the per-step profile. The file is the user's alone (mode 0600): its ids and
times tell how the cloud behaves.
"""

from __future__ import annotations

import json
import os
from typing import Any

from doctor import clock

CHECKPOINTS = {
    "T00": "link down",
    "T01": "raw failure (monitor detected)",
    "T02": "found affected",
    "T03": "set VM error",
    "T04": "marked host down",
    "T05": "notified VM error",
    "T06": "transformed event",
    "T07": "evaluated event",
    "T08": "fired alarm",
    "T09": "received alarm",
}


class Profiler:
    """Appends checkpoints to ``path``; with no path it records nothing."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._fd: int | None = None

    def record(self, checkpoint: str, at: float | None = None, **fields: Any) -> None:
        if not self.path:
            return
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"unknown checkpoint {checkpoint!r}")
        line = {"checkpoint": checkpoint, "time": clock.now() if at is None else at, **fields}
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        if self._fd is None:  # opened once: a checkpoint costs one write(2)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:  # a file made by another process of the run (the same user) or left open
                if os.fstat(self._fd).st_mode & 0o077:
                    os.fchmod(self._fd, 0o600)
            except OSError:  # someone else's file: theirs to close
                pass
        os.write(self._fd, data)


def read(path: str) -> list[dict[str, Any]]:
    """Every checkpoint recorded in ``path``, in file order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
