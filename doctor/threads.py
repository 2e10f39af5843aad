"""Thread names the kernel sees (``top -H``, /proc/PID/task/TID/comm), for operators and benches."""

from __future__ import annotations

import ctypes
import ctypes.util

_PR_SET_NAME = 15
_libc = None


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (15 bytes at most) in the kernel; no-op if unsupported."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
