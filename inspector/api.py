"""The Inspector's REST API.

- ``PUT /events`` (also ``POST``; a list or one object): Doctor events from
  monitors. 400 naming the field if any is malformed (then none is taken): names
  longer than 255 characters, a time more than ``event_max_future_s`` ahead or
  ``event_max_age_s`` behind, more than ``max_events_per_request`` events;
  else 202 at once, with which ids were new and which were duplicates.
- ``GET /hosts``, ``GET /hosts/<name>``: each host's state as the Inspector
  knows it, with the last event.
- ``POST /v1/events``: the controller's VM notifications (Ceilometer's
  format), which keep the host->VM map fresh.
- ``GET /v1/services``: the service list (every registered Doctor process:
  Name, Process Id, Hostname, Created At), read from the coordination
  backend; 503 naming the backend when it cannot be reached.
Every request needs the configured token in ``X-Auth-Token`` (unless ``auth_strategy =
noauth``); with ``auth_strategy = keystone`` a Keystone token that ``inspector.policies``
allows (admin).
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

from doctor import coordination
from doctor.api import ApiError, json_app, json_body
from doctor.events import EventError, parse_ceilometer_events, parse_host_events
from doctor.keystone import KeystoneSettings
from doctor.policy import KeystoneGuard
from inspector import policies
from inspector.service import InspectorService


def create_app(service: InspectorService, token: str, coordination_url: str | None = None,
               heartbeat_timeout_s: float = coordination.DEFAULT_HEARTBEAT_TIMEOUT_S,
               auth_strategy: str = "token", keystone: KeystoneSettings | None = None
               ) -> Flask:
    """The app; with ``auth_strategy = keystone``, ``keystone`` holds the settings, and
    ``inspector.policies``' rules say who may do what (every route: admin)."""
    guard = (KeystoneGuard(keystone, policies.RULES, policies.ENDPOINTS)
             if auth_strategy == "keystone" and keystone is not None else None)
    app = json_app("doctor-inspector", token, auth_strategy, keystone=guard)
    config = service.config
    coordination.load_tooz()  # not first in a server thread (see load_tooz)

    @app.route("/events", methods=["PUT", "POST"])
    def take_events() -> tuple[Response, int]:
        try:
            events = parse_host_events(json_body(), max_future_s=config.event_max_future_s,
                                       max_age_s=config.event_max_age_s,
                                       max_events=config.max_events_per_request)
        except EventError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        new, duplicates = service.submit(events)
        return jsonify({"accepted": [e.monitor_event_id for e in new],
                        "duplicates": [e.monitor_event_id for e in duplicates]}), 202

    @app.get("/status")
    def show_status() -> Response:
        return jsonify(service.status())

    @app.get("/hosts")
    def list_hosts() -> Response:
        return jsonify({"hosts": service.hosts()})

    @app.get("/hosts/<name>")
    def show_host(name: str) -> Response:
        host = service.host(name)
        if host is None:
            raise ApiError(404, f"no host {name!r} known to the inspector")
        return jsonify(host)

    @app.post("/v1/events")
    def take_notifications() -> tuple[Response, int]:
        body = json_body()
        if not isinstance(body, list):
            raise ApiError(400, "must be a JSON list of events", "body")
        try:
            events = parse_ceilometer_events(body, config.max_events_per_request)
        except EventError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        service.on_notifications(events)
        return jsonify({"accepted": len(events)}), 202

    @app.get("/v1/services")
    def list_services() -> Response:
        try:
            return jsonify(coordination.list_services(coordination_url, heartbeat_timeout_s))
        except coordination.CoordinationError as exc:
            raise ApiError(503, str(exc)) from None

    return app
