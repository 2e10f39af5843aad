"""Publishing events to the embedded Notifier over HTTP (``POST <url>/v1/events``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from doctor.http import HttpClient, HttpError
from notifier.base import EventPublisher, PublishError

LOG = logging.getLogger(__name__)


class HttpPublisher(EventPublisher):
    """POSTs event lists to a Notifier; retries connection errors and 5xx a few times."""

    def __init__(self, url: str, token: str = "", timeout_s: float = 2.0,
                 attempts: int = 5, retry_delay_s: float = 0.05) -> None:
        self.url = url.rstrip("/") + "/v1/events"
        self.session = HttpClient(timeout_s, token)
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s

    def publish(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.session.post(self.url, json=events)
            except HttpError as exc:
                problem = str(exc)
            else:
                if response.status < 300:
                    return
                problem = f"HTTP {response.status}: {response.text[:300]}"
                if 400 <= response.status < 500:
                    break  # the Notifier refused them: retrying will not help
            if attempt < self.attempts:
                LOG.warning("publishing %d events to %s failed (%s); retry %d/%d",
                            len(events), self.url, problem, attempt, self.attempts - 1)
                time.sleep(self.retry_delay_s * 2 ** (attempt - 1))
        raise PublishError(f"{len(events)} events not delivered to {self.url}: {problem}")

    def close(self) -> None:
        self.session.close()
