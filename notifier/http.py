"""Publishing events to the embedded Notifier over HTTP (``POST <url>/v1/events``)."""

from __future__ import annotations

import logging
from typing import Any

from doctor.events import DEFAULT_MAX_EVENTS
from doctor.http import HttpClient, HttpError, TokenSource
from doctor.logs import escape
from doctor.redact import redact_url
from doctor.retry import Backoff, GaveUp, retry
from notifier.base import EventPublisher, PublishError

LOG = logging.getLogger(__name__)


class _Failed(Exception):
    """An attempt worth repeating: no answer, or an answer that is not 2xx or 4xx."""


class _Refused(Exception):
    """A 4xx: the Notifier refused the events, retrying will not help."""


class HttpPublisher(EventPublisher):
    """POSTs event lists to a Notifier; retries connection errors and 5xx a few times.

    A list longer than ``max_events`` (the receivers' smallest cap per request) goes in
    requests of that many, in order. ``token``: the X-Auth-Token, static or a token source
    (``doctor.http``); no token to send is a failed attempt, retried as a 5xx is."""

    def __init__(self, url: str, token: str | TokenSource = "", timeout_s: float = 2.0,
                 attempts: int = 5, retry_delay_s: float = 0.05,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.url = url.rstrip("/") + "/v1/events"
        self.session = HttpClient(timeout_s, token)
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self.max_events = max_events

    def publish(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), self.max_events):
            self._publish(events[start:start + self.max_events])

    def _publish(self, events: list[dict[str, Any]]) -> None:
        def attempt() -> None:
            try:
                response = self.session.post(self.url, json=events)
            except HttpError as exc:
                raise _Failed(str(exc)) from None
            if response.status < 300:
                return
            problem = f"HTTP {response.status}: {response.text[:300]}"
            raise (_Refused if 400 <= response.status < 500 else _Failed)(problem)

        def failed(exc: BaseException, attempt: int, delay: float | None) -> None:
            if delay is not None:
                LOG.warning("publishing %d events to %s failed (%s); retry %d/%d",
                            len(events), redact_url(self.url), escape(exc, 500), attempt,
                            self.attempts - 1)

        try:
            # Waits of retry_delay_s, doubling: 0.05, 0.1, 0.2, 0.4 s by default.
            retry(attempt, backoff=Backoff(self.retry_delay_s), transient=(_Failed,),
                  attempts=max(1, self.attempts), on_failure=failed)
        except (GaveUp, _Refused) as exc:
            problem = str(exc.last if isinstance(exc, GaveUp) else exc)
            raise PublishError(f"{len(events)} events not delivered to {self.url}: "
                               f"{problem}", final=isinstance(exc, _Refused)) from None

    def close(self) -> None:
        self.session.close()
