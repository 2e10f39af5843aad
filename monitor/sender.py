"""Delivery of Doctor events to the Inspector, off the probe loop's thread (an outbox).

Events go out in order, batched when several are waiting (a mass failure is
one request, not hundreds). A 2xx accepts them, a 4xx refuses them for good
(logged with the Inspector's reason); anything else, a timeout or a refused
connection is retried with exponential backoff until accepted, with the same
``monitor_event_id`` so the Inspector acts once.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from doctor.events import HostEvent
from doctor.http import HttpClient, HttpError, HttpResponse, TokenSource
from doctor.outbox import Outbox, OutboxClosed
from doctor.retry import Backoff, RetryError, retry

LOG = logging.getLogger(__name__)
MAX_BATCH = 100


class _Failed(Exception):
    """A delivery attempt that is retried: no answer, or neither 2xx nor 4xx."""


@dataclass
class Delivery:
    """The fate of one event: for logs, tests and the benchmark."""

    event: HostEvent
    status: int | None  # HTTP status of the final answer; None when printed or abandoned
    attempts: int


class InspectorSender:
    """Delivers submitted HostEvents to ``<url>/events`` from an outbox's worker thread.

    With no URL, events are written to ``stream`` as JSON lines instead. ``token``: the
    X-Auth-Token, static or a token source (``doctor.http``; a Keystone token, say): no token
    to send is a failed attempt, retried as a refused connection is.
    """

    def __init__(self, url: str, token: str | TokenSource = "", timeout_s: float = 2.0,
                 retry_initial_s: float = 0.05, retry_max_s: float = 1.0,
                 stream: TextIO | None = None,
                 on_delivered: Callable[[Delivery], None] | None = None) -> None:
        self.url = url.rstrip("/") + "/events" if url else ""
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stream = stream if stream is not None else sys.stdout
        self.on_delivered = on_delivered
        self.session = HttpClient(timeout_s, token)
        self._stop = threading.Event()  # ends a delivery's retries
        self._outbox: Outbox[HostEvent] = Outbox(self._deliver, name="event-sender",
                                                 max_batch=MAX_BATCH)

    def start(self) -> None:
        self._outbox.start()

    def submit(self, event: HostEvent) -> None:
        try:
            self._outbox.put(event)
        except OutboxClosed:
            LOG.error("sender stopped: %s not sent to the inspector", event.monitor_event_id)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after delivering what is queued, waiting at most ``timeout_s``; then give up
        on a delivery still retrying (reported with status None) and on what is queued."""
        if self._outbox.started:
            self._outbox.flush(timeout_s)
            self._stop.set()
        self._outbox.close(0.0, join_s=1.0)
        self.session.close()

    def _deliver(self, batch: list[HostEvent]) -> None:
        body = [event.to_doctor() for event in batch]
        if not self.url:
            for item in body:
                self.stream.write(json.dumps(item) + "\n")
            self.stream.flush()
            self._done(batch, None, 1)
            return
        ids = ", ".join(e.monitor_event_id for e in batch)
        tries = 0

        def attempt() -> HttpResponse:
            nonlocal tries
            tries += 1
            try:
                response = self.session.put(self.url, json=body)
            except HttpError as exc:
                raise _Failed(str(exc)) from None
            if response.status >= 300 and not 400 <= response.status < 500:
                raise _Failed(f"HTTP {response.status}")
            return response

        def failed(exc: BaseException, attempts: int, _delay: float | None) -> None:
            if attempts == 1 or attempts % 10 == 0:
                LOG.warning("delivering %s to %s failed (%s); retrying every <= %.1f s",
                            ids, self.url, exc, self.retry_max_s)

        try:
            response = retry(attempt, backoff=Backoff(self.retry_initial_s, self.retry_max_s),
                             transient=(_Failed,), stop=self._stop, on_failure=failed)
        except RetryError as exc:
            LOG.error("stopped before the inspector accepted %s", ids)
            self._done(batch, None, exc.attempts)
            return
        if response.status < 300:
            LOG.info("inspector accepted %s (HTTP %d, attempt %d)", ids, response.status, tries)
        else:
            LOG.error("inspector refused %s with HTTP %d: %s; not retrying", ids,
                      response.status, response.text[:500])
        self._done(batch, response.status, tries)

    def _done(self, batch: list[HostEvent], status: int | None, attempts: int) -> None:
        if self.on_delivered is not None:
            for event in batch:
                self.on_delivered(Delivery(event, status, attempts))
