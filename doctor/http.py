"""The one HTTP client setup: every request has a timeout, tokens stay out of logs."""

from __future__ import annotations

from typing import Any

import requests


class TimeoutSession(requests.Session):
    """A requests session whose every call gets ``timeout_s`` unless it says otherwise."""

    def __init__(self, timeout_s: float, token: str = "") -> None:
        super().__init__()
        self.timeout_s = timeout_s
        if token:
            self.headers["X-Auth-Token"] = token

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # noqa: D102
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, **kwargs)
