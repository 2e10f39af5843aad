"""The tests' one way to wait for something, always bounded."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0,
               what: str = "the condition", interval_s: float = 0.01) -> Any:
    """The predicate's first truthy value; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def wait_answering(process: subprocess.Popen, url: str, log: Path, what: str,
                   timeout_s: float = 15.0) -> None:
    """Until ``url`` answers an HTTP GET; kills ``process`` and fails with its log if it
    exits first or ``timeout_s`` passes."""
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{what} did not start: {log.read_text()}") from None
            time.sleep(0.05)
