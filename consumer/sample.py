"""Doctor's sample Consumer: receives Aodh's alarm actions, optionally recovers the failed VMs.

    POST <path> (default /failure)   Aodh's alarm payload -> 200 at once, logged and kept
    GET  /failures[?since=<epoch>]   what was received (a JSON list, oldest first)
    DELETE /failures                 forget it

Each alarm is logged as ``doctor consumer notified at <epoch seconds>``, as
Doctor's sample consumer does, and recorded as checkpoint T09 in the profile.
With ``recovery = recreate`` (Doctor's step 10), a worker thread recreates
each failed VM on a healthy host through the Controller, never the handler,
and only once the Controller confirms the failure: the VM in error, its host
down. An alarm says what happened; the Controller is what is believed.

With ``auth_strategy = token`` (the default) an alarm is taken only when it is
signed (``X-Doctor-Signature``, the embedded Notifier's HMAC under
``alarm_secret``), or its URL carries ``?token=<token>`` (real Aodh cannot sign),
or it carries ``X-Auth-Token: <token>``; anything else is a 401 and is neither
recorded nor acted on. ``/failures`` needs ``X-Auth-Token``. With ``auth_strategy =
keystone`` every request needs a Keystone token that ``consumer.policies`` allows: one
scoped to ``keystone_alarm_project_id`` (Aodh's ``trust+http`` actions) or an admin's;
an alarm is also taken without one when it is signed under ``alarm_secret`` (the embedded
Notifier never sends a token to an action URL, which a tenant chooses). For that the
middleware defers its decision to the app (``delay_auth_decision``): a POST to ``path`` is
taken with a token the policy allows, else with a valid signature, else it is a 401 (with
``WWW-Authenticate``), or the policy's 403 for a valid token it does not allow.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, jsonify, request

from consumer import policies
from consumer.base import Consumer, Notification
from consumer.config import ConsumerConfig
from controller.base import HOST_DOWN, ControllerError, Host, NotFound, Server
from controller.client import ControllerClient
from doctor import clock
from doctor.api import (
    TOKEN_HEADER,
    ApiError,
    json_app,
    json_of,
    limit_body,
    token_matches,
)
from doctor.config import KEYSTONE
from doctor.events import (
    MAX_TEXT,
    VIM_STATUS_UPDATE,
    EventError,
    parse_ceilometer_event,
    traits,
)
from doctor.keystone import settings_of
from doctor.logs import escape
from doctor.openstack import outgoing_token
from doctor.policy import KeystoneGuard
from doctor.profiler import Profiler
from doctor.signing import SIGNATURE_HEADER, verify
from doctor.wsgi import HttpServer

if TYPE_CHECKING:
    from doctor.aio import AioServer

LOG = logging.getLogger(__name__)
MAX_KEPT = 10_000  # notifications kept for GET /failures; the oldest go first
REQUEST_ID_HEADER = "X-OpenStack-Request-Id"  # the same on every attempt of one alarm action
MAX_REQUEST_IDS = 10_000  # request ids remembered to drop a re-sent alarm; the oldest go first
MAX_REQUEST_ID = 255  # a longer request id is not remembered
CONFIRM_INTERVAL_S = 0.5  # how often an unconfirmed failure is asked about again


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
    for field, value in (("alarm_id", alarm_id), ("alarm_name", alarm_name)):
        if len(value) > MAX_TEXT:
            raise EventError(field, f"longer than {MAX_TEXT} characters")
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


class RecoveryController(Protocol):
    """What recovery needs of the Controller (``ControllerClient``, or the embedded
    ``Inventory`` in the same process)."""

    def get_server(self, server_id: str) -> Server: ...
    def host_status(self, server_id: str) -> str: ...
    def list_hosts(self) -> list[Host]: ...
    def create_server(self, name: str, project_id: str, host: str) -> Server: ...
    def delete_server(self, server_id: str) -> None: ...
    def close(self) -> None: ...


class Recovery:
    """Recreates failed VMs on a healthy host, one after another, in its own thread.

    Only what the Controller confirms is recovered: the server is in error and its host is
    down (``host_status`` DOWN, or the host forced down). An alarm that arrives before the
    Inspector's calls have landed (the shortcut notifies first) is asked about again every
    half second for ``confirm_s``, without holding up the others; unconfirmed by then, it is
    logged and skipped. A new server with the same name and project then goes to the first
    host (by name) that is not forced down and is not the failed one; then the failed
    server is deleted. Each instance is recovered once, however often its alarm repeats; if
    no replacement could be made (or it was not confirmed), a later alarm tries again.
    """

    def __init__(self, controller: RecoveryController, confirm_s: float = 30.0) -> None:
        self.controller = controller
        self.confirm_s = confirm_s
        self.recovered: dict[str, str] = {}  # failed instance id -> its replacement's id
        self.skipped: list[str] = []  # instances whose failure the Controller did not confirm
        self._claimed: set[str] = set()
        self._lock = threading.Condition()
        # (due, seq, instance id, give up at): what to ask the Controller about, and when.
        self._due: list[tuple[float, int, str, float]] = []
        self._seq = itertools.count()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer-recovery", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, instance_id: str) -> None:
        with self._lock:
            if instance_id in self._claimed:
                LOG.info("instance %s: recovery already done or under way", escape(instance_id))
                return
            self._claimed.add(instance_id)
            now = clock.monotonic()
            heapq.heappush(self._due, (now, next(self._seq), instance_id, now + self.confirm_s))
            self._lock.notify_all()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the recovery under way (each Controller call has a timeout), drop the rest."""
        with self._lock:
            self._stopping.set()
            self._lock.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)

    def _next(self) -> tuple[str, float] | None:
        """The next instance that is due (waiting for it), or None once stopping."""
        with self._lock:
            while not self._stopping.is_set():
                now = clock.monotonic()
                if self._due and self._due[0][0] <= now:
                    _due, _seq, instance_id, give_up_at = heapq.heappop(self._due)
                    return instance_id, give_up_at
                self._lock.wait(self._due[0][0] - now if self._due else None)
            for _due, _seq, instance_id, _give_up in self._due:
                LOG.warning("instance %s: not recovered, the consumer is stopping",
                            escape(instance_id))
            self._due.clear()
            return None

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            instance_id, give_up_at = item
            try:
                self._recover(instance_id, give_up_at)
            except Exception:  # noqa: BLE001  (one failed recovery must not end the worker)
                LOG.exception("instance %s: recovery failed", escape(instance_id))
                self._release(instance_id)

    def _release(self, instance_id: str) -> None:
        with self._lock:
            self._claimed.discard(instance_id)

    def _again(self, instance_id: str, give_up_at: float) -> None:
        with self._lock:
            heapq.heappush(self._due, (clock.monotonic() + CONFIRM_INTERVAL_S, next(self._seq),
                                       instance_id, give_up_at))
            self._lock.notify_all()

    def _confirmed(self, failed: Server, hosts: list[Host]) -> str:
        """Why the Controller does not confirm the failure of ``failed`` ('' if it does)."""
        if failed.state != "error":
            return f"the controller has it {failed.state}, not error"
        forced_down = any(h.name == failed.host and h.forced_down for h in hosts)
        status = self.controller.host_status(failed.id)
        if status != HOST_DOWN and not forced_down:
            return f"its host {failed.host} is not down (host_status {status})"
        return ""

    def _recover(self, instance_id: str, give_up_at: float) -> None:
        try:
            failed = self.controller.get_server(instance_id)
        except NotFound:
            LOG.warning("instance %s: no longer exists; nothing to recover",
                        escape(instance_id))
            return
        try:
            hosts = self.controller.list_hosts()
            doubt = self._confirmed(failed, hosts)
            if doubt:
                if clock.monotonic() < give_up_at:
                    self._again(instance_id, give_up_at)
                    return
                LOG.warning("instance %s: alarm not confirmed by the controller within %g s "
                            "(%s); not recovered", instance_id, self.confirm_s, doubt)
                self.skipped.append(instance_id)
                self._release(instance_id)
                return
            healthy = [h.name for h in hosts if not h.forced_down and h.name != failed.host]
            if not healthy:
                LOG.error("instance %s: no healthy host to recreate it on (failed host %s); "
                          "a later alarm will try again", escape(instance_id),
                          escape(failed.host))
                self._release(instance_id)
                return
            replacement = self.controller.create_server(failed.name, failed.project_id,
                                                        healthy[0])
        except ControllerError as exc:
            LOG.error("instance %s: not recreated: %s; a later alarm will try again",
                      escape(instance_id), escape(exc, 500))
            self._release(instance_id)
            return
        self.recovered[instance_id] = replacement.id
        try:
            self.controller.delete_server(failed.id)
        except ControllerError as exc:
            # The replacement runs; deleting the failed one is left to the operator.
            LOG.error("instance %s: recreated as %s on %s, but not deleted: %s",
                      escape(instance_id), escape(replacement.id), escape(replacement.host),
                      escape(exc, 500))
            return
        LOG.info("instance %s (%s) recovered: recreated as %s on %s, the failed one deleted",
                 escape(instance_id), escape(failed.name), escape(replacement.id),
                 escape(replacement.host))


class SampleConsumer(Consumer):
    """Doctor's sample consumer: an HTTP endpoint for alarm actions, and what it received."""

    def __init__(self, config: ConsumerConfig,
                 controller: RecoveryController | None = None) -> None:
        self.config = config
        self.profile = Profiler(config.profile_file)
        self._received: deque[Notification] = deque(maxlen=MAX_KEPT)
        self._lock = threading.Lock()
        self._by_request: OrderedDict[str, Notification] = OrderedDict()  # recent request ids
        self.duplicates = 0  # re-sent alarms dropped
        self._server: HttpServer | AioServer | None = None
        self.recovery: Recovery | None = None
        if config.recovery == "recreate":
            controller = controller or ControllerClient(config.controller_url, outgoing_token(
                "consumer", config.keystone_cloud, config.controller_token))
            self.recovery = Recovery(controller, config.recovery_confirm_s)

    @property
    def url(self) -> str:
        """The alarm action URL (once started)."""
        if self._server is None:
            raise RuntimeError("consumer not started")
        return self._server.url + self.config.path

    def start(self) -> None:
        server: HttpServer | AioServer
        if self.config.server == "aiohttp":
            from consumer.aio import create_aio_app
            from doctor.aio import AioServer

            server = AioServer(create_aio_app(self), self.config.host, self.config.port,
                               name="consumer")
        else:
            server = HttpServer(create_app(self), self.config.host, self.config.port,
                                name="consumer")
        self._server = server.start()
        if self.recovery is not None:
            self.recovery.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self.recovery is not None:
            self.recovery.stop()
            self.recovery.controller.close()

    def receive(self, body: Any, received_at: float, request_id: str = "") -> Notification:
        """Keep, log and profile one alarm payload; EventError (naming the field) if malformed.

        An alarm re-sent with a ``request_id`` seen recently (the Notifier sends an action
        again after a crash, with the same X-OpenStack-Request-Id) is not kept again: the
        first one's notification is returned."""
        alarm_id, alarm_name, instance_id, vim_id = parse_alarm(body)
        notification = Notification(received_at, alarm_id, alarm_name, instance_id, vim_id)
        first = self._first_of(request_id, notification)
        if first is not notification:
            LOG.info("alarm %s: request %s received again; dropped as a duplicate",
                     escape(alarm_id), escape(request_id))
            return first
        if vim_id:
            with self._lock:
                self._received.append(notification)
            LOG.info("doctor consumer notified at %.6f alarm %s VIM %s", received_at,
                     escape(alarm_id), escape(vim_id))
            return notification
        with self._lock:
            self._received.append(notification)
        LOG.info("doctor consumer notified at %.6f alarm %s instance %s", received_at,
                 escape(alarm_id), escape(instance_id))
        self.profile.record("T09", at=received_at, alarm_id=alarm_id, instance_id=instance_id)
        if self.recovery is not None:
            self.recovery.submit(instance_id)
        return notification

    def _first_of(self, request_id: str, notification: Notification) -> Notification:
        """The notification first received with ``request_id`` (``notification`` itself if
        it is the first, or if there is no request id to tell)."""
        if not request_id or len(request_id) > MAX_REQUEST_ID:
            return notification
        with self._lock:
            first = self._by_request.get(request_id)
            if first is not None:
                self.duplicates += 1
                return first
            self._by_request[request_id] = notification
            if len(self._by_request) > MAX_REQUEST_IDS:
                self._by_request.popitem(last=False)
        return notification

    def notifications(self, since: float | None = None) -> list[Notification]:
        with self._lock:
            kept = list(self._received)
        return kept if since is None else [n for n in kept if n.received_at > since]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


class Intake:
    """The consumer's routes and their checks, whatever HTTP server serves them: Flask's
    ``create_app`` (waitress, and keystonemiddleware with ``auth_strategy = keystone``) and
    aiohttp's ``consumer.aio.create_aio_app`` call these, so both answer alike. Each takes
    what it needs of the request as plain values and returns the answer's JSON document or
    raises ApiError (the status, and the field it names)."""

    def __init__(self, consumer: SampleConsumer) -> None:
        self.consumer = consumer
        self.config = consumer.config

    def signed(self, body: bytes, signature: str) -> bool:
        return verify(self.config.alarm_secret, body, signature)

    def alarm_is_authentic(self, body: bytes, signature: str, query_token: str,
                           header_token: str) -> bool:
        """Whether an alarm may be taken (token mode; see the module's docstring)."""
        if self.signed(body, signature):
            return True
        return (token_matches(query_token, self.config.token)
                or token_matches(header_token, self.config.token))

    def authenticate(self, path: str, body: Callable[[], bytes], signature: str,
                     query_token: str, header_token: str) -> None:
        """``auth_strategy = token``, before any route: an ApiError 401 unless the request
        may be served. ``body`` reads the request's body (only an alarm's is read); the
        others are its X-Doctor-Signature, ?token= and X-Auth-Token ('' when absent)."""
        if path == self.config.path:
            if self.alarm_is_authentic(body(), signature, query_token, header_token):
                return
            LOG.warning("refused an alarm without a valid %s or token", SIGNATURE_HEADER)
            raise ApiError(401, f"missing or wrong {SIGNATURE_HEADER}", SIGNATURE_HEADER)
        if not token_matches(header_token, self.config.token):
            raise ApiError(401, f"missing or wrong {TOKEN_HEADER}", TOKEN_HEADER)

    def failure(self, received_at: float, body: bytes, request_id: str) -> dict[str, Any]:
        """POST <path>: the alarm, kept (``received_at``: when it came, taken first)."""
        try:
            notification = self.consumer.receive(json_of(body), received_at, request_id)
        except EventError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        return notification.to_dict()

    def list_failures(self, since_text: str | None) -> list[dict[str, Any]]:
        """GET /failures[?since=<epoch>]."""
        since = None
        if since_text is not None:
            try:
                since = float(since_text)
            except ValueError:
                raise ApiError(400, f"since: {since_text!r} is not epoch seconds",
                               "since") from None
        return [n.to_dict() for n in self.consumer.notifications(since)]

    def clear_failures(self) -> None:
        """DELETE /failures."""
        self.consumer.clear()


def create_app(consumer: SampleConsumer) -> Flask:
    """The Consumer's HTTP API as a Flask app (see the module's docstring): what waitress
    serves, and keystonemiddleware wraps with ``auth_strategy = keystone``."""
    config = consumer.config
    intake = Intake(consumer)

    def authenticate() -> None:
        headers = request.headers
        intake.authenticate(request.path, lambda: request.get_data(cache=True),
                            headers.get(SIGNATURE_HEADER, ""), request.args.get("token", ""),
                            headers.get(TOKEN_HEADER, ""))

    def signed() -> bool:
        """keystone: an alarm without a token the policy allows, taken if signed."""
        if intake.signed(request.get_data(cache=True),
                         request.headers.get(SIGNATURE_HEADER, "")):
            return True
        LOG.warning("refused an alarm without a valid %s or a Keystone token the policy "
                    "allows", SIGNATURE_HEADER)
        return False

    guard = None
    settings = settings_of(config)
    if config.auth_strategy == KEYSTONE and settings is not None:
        project = {"project_id": config.keystone_alarm_project_id}
        guard = KeystoneGuard(settings, policies.RULES, policies.ENDPOINTS,
                              {endpoint: (lambda _who: project)
                               for endpoint in policies.ENDPOINTS},
                              {"failure": signed} if config.alarm_secret else None)
    app = json_app("consumer", config.token, config.auth_strategy, authenticate=authenticate,
                   keystone=guard)
    limit_body(app, config.max_body_bytes)

    @app.post(consumer.config.path, endpoint="failure")
    def failure() -> Response:
        received_at = clock.now()  # first thing: this is the notification time
        return jsonify(intake.failure(received_at, request.get_data(cache=True),
                                      request.headers.get(REQUEST_ID_HEADER, "")))

    @app.get("/failures")
    def list_failures() -> Response:
        return jsonify(intake.list_failures(request.args.get("since")))

    @app.delete("/failures")
    def clear_failures() -> tuple[str, int]:
        intake.clear_failures()
        return "", 204

    return app
