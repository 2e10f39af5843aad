"""The embedded Notifier's REST API: Aodh's ``/v2/alarms`` subset for event alarms, and
``POST /v1/events``, the intake for events in Ceilometer's format.

What python-aodhclient (3.x) sends, and so what is served:

- ``alarm.create``: ``POST /v2/alarms`` (201)
- ``alarm.list(filters, limit, marker, sorts)``: ``GET /v2/alarms`` with
  ``q.field=&q.op=&q.value=`` per filter, ``limit``, ``marker``, ``sort=field:dir``
- ``alarm.get``: ``GET /v2/alarms/{id}``
- ``alarm.update``: ``GET``, then ``PUT /v2/alarms/{id}`` with the whole alarm
- ``alarm.delete``: ``DELETE /v2/alarms/{id}`` (204)
- ``alarm.get_state`` / ``set_state``: ``GET`` / ``PUT /v2/alarms/{id}/state`` (a JSON string)
- ``alarm_history.get``: ``GET /v2/alarms/{id}/history``
- ``alarm.query`` (the CLI's ``--name`` and its lookups of a name):
  ``POST /v2/query/alarms`` with Aodh's complex query filter

Who is asking is ``notifier.caller``'s: with ``auth_strategy = token`` (the
default) whoever the request's ``X-Auth-Token`` is (the service's token, or a
caller of the ``api_tokens_file``), and ``POST /v1/events`` takes the service's
token only; with ``noauth``, Aodh's noauth mode: whoever ``X-User-Id``,
``X-Project-Id`` and ``X-Roles`` say (aodhclient's ``aodh-noauth`` plugin sends
them). An alarm belongs to the caller's project; only a caller with the
``admin`` role may name another project, or see other projects' alarms.
Errors are JSON with ``error`` and ``field``, plus Aodh's
``error_message.faultstring``, which is what aodhclient shows.

This module holds the routes; what they rely on is elsewhere: the caller in
``notifier.caller``, the errors' shape in ``notifier.errors``, an alarm body's
checks in ``notifier.validation``, filters, sorts and pages in ``notifier.query``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from doctor.api import ApiError, json_app, json_body
from doctor.config import KEYSTONE, NOAUTH, TOKEN
from doctor.events import EventError, parse_ceilometer_events
from doctor.keystone import KeystoneSettings
from doctor.policy import KeystoneGuard, current_identity
from notifier import policies, query
from notifier.base import PublishError
from notifier.caller import Caller, CallerAuth, current_caller
from notifier.embedded import AlarmConflict, AlarmNotFound, AlarmQuotaExceeded, EmbeddedNotifier
from notifier.errors import aodh_error, fail
from notifier.evaluator import STATES
from notifier.validation import validate_alarm


def create_app(service: EmbeddedNotifier, token: str = "", auth_strategy: str = TOKEN,
               callers: Iterable[tuple[str, Caller]] = (),
               keystone: KeystoneSettings | None = None) -> Flask:
    """The Notifier's Flask app.

    ``auth_strategy = token``: every request needs a known X-Auth-Token: ``token`` (the
    service: the only one for ``POST /v1/events``; on ``/v2`` the admin of project
    ``service``) or one of ``callers`` ((token, caller), from the ``api_tokens_file``).
    ``noauth``: as Aodh in noauth mode, the caller is read from the X-User-Id,
    X-Project-Id and X-Roles headers, and anyone may post events.
    ``keystone`` (``auth_strategy = keystone``'s settings): the caller is the Keystone
    token's user and project, and ``notifier.policies`` decides.
    """
    if auth_strategy == KEYSTONE:
        if keystone is None:
            raise ValueError("auth_strategy keystone needs its Keystone settings")
        guard = KeystoneGuard(keystone, policies.RULES, policies.ENDPOINTS)
        app = json_app("notifier", token, auth_strategy, keystone=guard)

        @app.before_request
        def _caller() -> None:  # after the guard: the token's identity, its policy's admin
            who = current_identity()
            g.doctor_caller = Caller(who.user_id, who.project_id, who.roles, admin=(
                guard.policy.allows(policies.ALARMS_ALL_PROJECTS, who)))
    else:
        auth = CallerAuth(auth_strategy, token, callers)
        app = json_app("notifier", token, auth_strategy, authenticate=auth)
        if auth_strategy == NOAUTH:
            app.before_request(auth)  # it marks the request: the headers name the caller

    # Aodh's error shape too: aodhclient shows error_message.faultstring to its user.
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        return aodh_error(error.status, error.message, error.field)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        return aodh_error(error.code or 500, error.description or error.name)

    def visible(alarm_id: str, caller: Caller) -> dict[str, Any]:
        alarm = service.get_alarm(alarm_id)
        if alarm is None or not caller.may_see(alarm):
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id")
        return alarm

    @app.get("/")
    def root() -> Response:
        return jsonify({"versions": {"values": [{"id": "v2", "status": "stable"}]},
                       "notifier": service.status()})

    @app.post("/v1/events")
    def post_events() -> tuple[Response, int]:
        body = json_body()
        items = [body] if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise fail("body", "must be a JSON list of events in Ceilometer's format")
        try:
            events = parse_ceilometer_events(items, service.config.max_events_per_request)
        except EventError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        try:
            service.submit(events)
        except PublishError as exc:
            raise ApiError(503, str(exc)) from None
        return jsonify({"accepted": len(events)}), 202

    @app.post("/v2/alarms")
    def create_alarm() -> tuple[Response, int]:
        caller = current_caller()
        data = validate_alarm(json_body(), caller, limits=service.alarm_limits)
        try:
            service.create_alarm(data, caller.user_id, caller.project_id)
        except AlarmConflict as exc:
            raise ApiError(409, str(exc), "name") from None
        except AlarmQuotaExceeded as exc:
            raise ApiError(403, str(exc), "project_id") from None
        return jsonify(data), 201

    @app.get("/v2/alarms")
    def list_alarms() -> Response:
        caller = current_caller()
        checks, all_projects = query.simple_filters(request.args, caller)
        sorts = query.sort_keys(request.args.getlist("sort"), "sort")
        limit = query.parse_limit(request.args.get("limit"), "limit")
        found = [a for a in service.list_alarms()
                 if (all_projects or a.get("project_id") == caller.project_id)
                 and caller.may_see(a) and all(check(a) for check in checks)]
        return jsonify(query.page(query.sort_alarms(found, sorts), "alarm_id",
                                  request.args.get("marker"), limit))

    @app.post("/v2/query/alarms")
    def query_alarms() -> Response:
        caller = current_caller()
        check, sorts, limit = query.complex_query(json_body())
        found = [a for a in service.list_alarms() if caller.may_see(a) and check(a)]
        return jsonify(query.page(query.sort_alarms(found, sorts), "alarm_id", None, limit))

    @app.get("/v2/alarms/<alarm_id>")
    def show_alarm(alarm_id: str) -> Response:
        return jsonify(visible(alarm_id, current_caller()))

    @app.put("/v2/alarms/<alarm_id>")
    def update_alarm(alarm_id: str) -> Response:
        caller = current_caller()
        visible(alarm_id, caller)
        body = json_body()

        def change(current: dict[str, Any]) -> dict[str, Any]:
            return validate_alarm(body, caller, current, limits=service.alarm_limits)

        try:
            data = service.update_alarm(alarm_id, change, caller.user_id, caller.project_id)
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id") from None
        except AlarmConflict as exc:
            raise ApiError(409, str(exc), "name") from None
        except AlarmQuotaExceeded as exc:
            raise ApiError(403, str(exc), "project_id") from None
        return jsonify(data)

    @app.delete("/v2/alarms/<alarm_id>")
    def delete_alarm(alarm_id: str) -> tuple[str, int]:
        caller = current_caller()
        visible(alarm_id, caller)
        try:
            service.delete_alarm(alarm_id, caller.user_id, caller.project_id)
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id") from None
        return "", 204

    @app.get("/v2/alarms/<alarm_id>/state")
    def get_state(alarm_id: str) -> Response:
        return jsonify(visible(alarm_id, current_caller())["state"])

    @app.put("/v2/alarms/<alarm_id>/state")
    def put_state(alarm_id: str) -> Response:
        caller = current_caller()
        visible(alarm_id, caller)
        state = json_body()
        if state not in STATES:
            raise fail("state", f"{state!r} is not one of {', '.join(STATES)} (send a JSON "
                                f'string, e.g. "ok")')
        try:
            return jsonify(service.set_state(alarm_id, state, caller.user_id,
                                             caller.project_id))
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id") from None

    @app.get("/v2/alarms/<alarm_id>/history")
    def history(alarm_id: str) -> Response:
        caller = current_caller()
        alarm = service.get_alarm(alarm_id)
        if alarm is not None and not caller.may_see(alarm):
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id")
        # A deleted alarm's history stays readable, but only for its own project.
        entries = service.history(alarm_id, None if caller.is_admin else caller.project_id)
        entries = query.sort_history(entries, request.args.getlist("sort"))
        return jsonify(query.page(entries, "event_id", request.args.get("marker"),
                                  query.parse_limit(request.args.get("limit"), "limit")))

    return app

