"""Doctor's sample Consumer: receives Aodh's alarm actions, optionally recovers the failed VMs.

    POST <path> (default /failure)   Aodh's alarm payload -> 200 at once, logged and kept
    GET  /failures[?since=<epoch>]   what was received (a JSON list, oldest first)
    DELETE /failures                 forget it

Each alarm is logged as ``doctor consumer notified at <epoch seconds>``, as
Doctor's sample consumer does, and recorded as checkpoint T09 in the profile.
With ``recovery = recreate`` (Doctor's step 10), a worker thread recreates
each failed VM on a healthy host through the Controller, never the handler.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Any

from flask import Flask, Response, jsonify, request

from consumer.base import Consumer, Notification
from consumer.config import ConsumerConfig
from controller.base import ControllerError, NotFound
from controller.client import ControllerClient
from doctor import clock
from doctor.api import ApiError, json_app, json_body
from doctor.events import VIM_STATUS_UPDATE, EventError, parse_ceilometer_event, traits
from doctor.profiler import Profiler
from doctor.wsgi import HttpServer

LOG = logging.getLogger(__name__)
MAX_KEPT = 10_000  # notifications kept for GET /failures; the oldest go first


def parse_alarm(body: Any) -> tuple[str, str, str, str]:
    """(alarm_id, alarm_name, instance_id, vim_id) of Aodh's event-alarm payload: an
    instance's event (``instance_id``) or a VIM's ``vim.status.update`` (``vim_id``; then
    instance_id is ''). EventError names the field that is wrong."""
    if not isinstance(body, dict):
        raise EventError("body", "must be a JSON object (Aodh's alarm action payload)")
    alarm_id = body.get("alarm_id")
    if not isinstance(alarm_id, str) or not alarm_id.strip():
        raise EventError("alarm_id", "required, a non-empty string")
    alarm_name = body.get("alarm_name", "")
    if not isinstance(alarm_name, str):
        raise EventError("alarm_name", "must be a string")
    reason_data = body.get("reason_data")
    if not isinstance(reason_data, dict):
        raise EventError("reason_data", "required, a JSON object")
    if reason_data.get("type") != "event":
        raise EventError("reason_data.type", f"expected 'event' (an event alarm), got "
                                             f"{reason_data.get('type')!r}")
    event = parse_ceilometer_event(reason_data.get("event"), "reason_data.event")
    found = traits(event)
    vim_id = found.get("vim_id")
    if event.get("event_type") == VIM_STATUS_UPDATE and isinstance(vim_id, str) and vim_id:
        return alarm_id, alarm_name, "", vim_id
    instance_id = found.get("instance_id")
    if not isinstance(instance_id, str) or not instance_id.strip():
        raise EventError("reason_data.event.traits.instance_id",
                         "required, a non-empty string trait")
    return alarm_id, alarm_name, instance_id, ""


class Recovery:
    """Recreates failed VMs on a healthy host, one after another, in its own thread.

    A new server with the same name and project goes to the first host (by
    name) that is not forced down and is not the failed one; then the failed
    server is deleted. Each instance is recovered once, however often its
    alarm repeats; if no replacement could be made, a later alarm tries again.
    """

    def __init__(self, controller: ControllerClient) -> None:
        self.controller = controller
        self.recovered: dict[str, str] = {}  # failed instance id -> its replacement's id
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer-recovery", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, instance_id: str) -> None:
        with self._lock:
            if instance_id in self._claimed:
                LOG.info("instance %s: recovery already done or under way", instance_id)
                return
            self._claimed.add(instance_id)
        self._queue.put(instance_id)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the recovery under way (each Controller call has a timeout), drop the rest."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread.ident is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            instance_id = self._queue.get()
            if instance_id is None:
                return
            if self._stopping.is_set():
                LOG.warning("instance %s: not recovered, the consumer is stopping", instance_id)
                continue
            try:
                self._recover(instance_id)
            except Exception:  # noqa: BLE001  (one failed recovery must not end the worker)
                LOG.exception("instance %s: recovery failed", instance_id)
                self._release(instance_id)

    def _release(self, instance_id: str) -> None:
        with self._lock:
            self._claimed.discard(instance_id)

    def _recover(self, instance_id: str) -> None:
        try:
            failed = self.controller.get_server(instance_id)
        except NotFound:
            LOG.warning("instance %s: no longer exists; nothing to recover", instance_id)
            return
        try:
            healthy = [h.name for h in self.controller.list_hosts()
                       if not h.forced_down and h.name != failed.host]
            if not healthy:
                LOG.error("instance %s: no healthy host to recreate it on (failed host %s); "
                          "a later alarm will try again", instance_id, failed.host)
                self._release(instance_id)
                return
            replacement = self.controller.create_server(failed.name, failed.project_id,
                                                        healthy[0])
        except ControllerError as exc:
            LOG.error("instance %s: not recreated: %s; a later alarm will try again",
                      instance_id, exc)
            self._release(instance_id)
            return
        self.recovered[instance_id] = replacement.id
        try:
            self.controller.delete_server(failed.id)
        except ControllerError as exc:
            # The replacement runs; deleting the failed one is left to the operator.
            LOG.error("instance %s: recreated as %s on %s, but not deleted: %s", instance_id,
                      replacement.id, replacement.host, exc)
            return
        LOG.info("instance %s (%s) recovered: recreated as %s on %s, the failed one deleted",
                 instance_id, failed.name, replacement.id, replacement.host)


class SampleConsumer(Consumer):
    """Doctor's sample consumer: an HTTP endpoint for alarm actions, and what it received."""

    def __init__(self, config: ConsumerConfig, controller: ControllerClient | None = None) -> None:
        self.config = config
        self.profile = Profiler(config.profile_file)
        self._received: deque[Notification] = deque(maxlen=MAX_KEPT)
        self._lock = threading.Lock()
        self._server: HttpServer | None = None
        self.recovery: Recovery | None = None
        if config.recovery == "recreate":
            controller = controller or ControllerClient(config.controller_url,
                                                        config.controller_token)
            self.recovery = Recovery(controller)

    @property
    def url(self) -> str:
        """The alarm action URL (once started)."""
        if self._server is None:
            raise RuntimeError("consumer not started")
        return self._server.url + self.config.path

    def start(self) -> None:
        self._server = HttpServer(create_app(self), self.config.host, self.config.port,
                              name="consumer").start()
        if self.recovery is not None:
            self.recovery.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self.recovery is not None:
            self.recovery.stop()
            self.recovery.controller.close()

    def receive(self, body: Any, received_at: float) -> Notification:
        """Keep, log and profile one alarm payload; EventError (naming the field) if malformed."""
        alarm_id, alarm_name, instance_id, vim_id = parse_alarm(body)
        notification = Notification(received_at, alarm_id, alarm_name, instance_id, vim_id)
        if vim_id:
            with self._lock:
                self._received.append(notification)
            LOG.info("doctor consumer notified at %.6f alarm %s VIM %s", received_at, alarm_id,
                     vim_id)
            return notification
        with self._lock:
            self._received.append(notification)
        LOG.info("doctor consumer notified at %.6f alarm %s instance %s", received_at, alarm_id,
                 instance_id)
        self.profile.record("T09", at=received_at, alarm_id=alarm_id, instance_id=instance_id)
        if self.recovery is not None:
            self.recovery.submit(instance_id)
        return notification

    def notifications(self, since: float | None = None) -> list[Notification]:
        with self._lock:
            kept = list(self._received)
        return kept if since is None else [n for n in kept if n.received_at > since]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


def create_app(consumer: SampleConsumer) -> Flask:
    """The Consumer's HTTP API (see the module's docstring)."""
    app = json_app("consumer", consumer.config.token, consumer.config.auth_strategy)

    @app.post(consumer.config.path, endpoint="failure")
    def failure() -> Response:
        received_at = clock.now()  # first thing: this is the notification time
        try:
            notification = consumer.receive(json_body(), received_at)
        except EventError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        return jsonify(notification.to_dict())

    @app.get("/failures")
    def list_failures() -> Response:
        since_text = request.args.get("since")
        since = None
        if since_text is not None:
            try:
                since = float(since_text)
            except ValueError:
                raise ApiError(400, f"since: {since_text!r} is not epoch seconds",
                               "since") from None
        return jsonify([n.to_dict() for n in consumer.notifications(since)])

    @app.delete("/failures")
    def clear_failures() -> tuple[str, int]:
        consumer.clear()
        return "", 204

    return app
