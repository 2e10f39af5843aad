"""The VIM server's REST API (every request needs ``X-Auth-Token``).

- ``POST /v1/vims`` ``{"name", "auth_url", "username", "password", "project_name",
  "project_domain_name", "user_domain_name", "cert_verify"}``: register; 201 with the VIM
  (PENDING), 400 naming the field, 409 when the name is taken.
- ``GET /v1/vims[?name=N]``, ``GET /v1/vims/<id>``: the VIMs (never a password); 404.
- ``PATCH`` or ``PUT /v1/vims/<id>`` with the fields that change (both are partial updates):
  a new auth_url gives the VIM a new monitor (the old one stops) and PENDING.
- ``DELETE /v1/vims/<id>``: 204; its monitor stops.
- ``POST /v1/vims/<id>/status`` ``{"monitor_id", "status"}``: a monitor's verdict, the seed's
  conductor call ``update_vim``; 409 ``bad_action`` when the monitor is not the VIM's current
  one (it must stop). The server's own monitors use the same function in-process.
- ``GET /v1/monitoring``: the manager's counters (monitors, probe addresses, probes,
  refused reports, replaced monitors).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from doctor.api import ApiError, json_app, json_body
from doctor.keystone import KeystoneSettings
from doctor.policy import KeystoneGuard
from vim import policies
from vim.spec import CONFIG_KEYS, VimSpecError, resolve_ipv4, validate
from vim.store import VERDICTS, DuplicateName, VimStore

BODY_KEYS = ("name", *CONFIG_KEYS)


def _spec(body: Any, partial: bool) -> dict[str, Any]:
    try:
        values = validate(body, partial=partial, allowed=BODY_KEYS)
    except VimSpecError as exc:
        raise ApiError(400, str(exc), exc.field) from None
    if not partial and "name" not in values:
        raise ApiError(400, "name: required", "name")
    return values


def _address(auth_url: str) -> str:
    try:
        return resolve_ipv4(auth_url)
    except VimSpecError as exc:
        raise ApiError(400, str(exc), exc.field) from None


def create_app(store: VimStore, token: str, manager: Any = None,
               auth_strategy: str = "token", keystone: KeystoneSettings | None = None
               ) -> Flask:
    """The app; ``manager`` (a MonitorManager) is poked after every change. Every request
    needs ``token`` in X-Auth-Token, unless ``auth_strategy`` is noauth; with keystone
    (``keystone``: its settings) a Keystone token that ``vim.policies`` allows (admin)."""
    guard = (KeystoneGuard(keystone, policies.RULES, policies.ENDPOINTS)
             if auth_strategy == "keystone" and keystone is not None else None)
    app = json_app("doctor-vim", token, auth_strategy, keystone=guard)

    def poke() -> None:
        if manager is not None:
            manager.poke()

    def found(vim_id: str) -> Any:
        record = store.get(vim_id)
        if record is None:
            raise ApiError(404, f"no VIM with id {vim_id!r}")
        return record

    @app.post("/v1/vims")
    def register() -> tuple[Response, int]:
        values = _spec(json_body(), partial=False)
        name = values.pop("name")
        address = _address(values["auth_url"])
        try:
            record = store.create(name, values, address)
        except DuplicateName as exc:
            raise ApiError(409, str(exc), "name") from None
        poke()
        return jsonify(record.to_api()), 201

    @app.get("/v1/vims")
    def list_vims() -> Response:
        name = request.args.get("name")
        return jsonify([r.to_api() for r in store.find(name)])

    @app.get("/v1/vims/<vim_id>")
    def show(vim_id: str) -> Response:
        return jsonify(found(vim_id).to_api())

    @app.route("/v1/vims/<vim_id>", methods=["PATCH", "PUT"])
    def change(vim_id: str) -> Response:
        values = _spec(json_body(), partial=True)
        if not values:
            raise ApiError(400, f"body: nothing to change; give some of {', '.join(BODY_KEYS)}",
                           "body")
        address = _address(values["auth_url"]) if "auth_url" in values else None
        try:
            record = store.update(vim_id, values, address)
        except DuplicateName as exc:
            raise ApiError(409, str(exc), "name") from None
        if record is None:
            raise ApiError(404, f"no VIM with id {vim_id!r}")
        poke()
        return jsonify(record.to_api())

    @app.delete("/v1/vims/<vim_id>")
    def remove(vim_id: str) -> tuple[str, int]:
        if not store.delete(vim_id):
            raise ApiError(404, f"no VIM with id {vim_id!r}")
        poke()
        return "", 204

    @app.post("/v1/vims/<vim_id>/status")
    def report(vim_id: str) -> Response:
        body = json_body()
        if not isinstance(body, dict):
            raise ApiError(400, "body: must be {\"monitor_id\", \"status\"}", "body")
        monitor_id, status = body.get("monitor_id"), body.get("status")
        if not isinstance(monitor_id, str) or not monitor_id or len(monitor_id) > 255:
            raise ApiError(400, "monitor_id: required, a string of 1 to 255 characters",
                           "monitor_id")
        if status not in VERDICTS:
            raise ApiError(400, f"status: must be one of {', '.join(VERDICTS)}", "status")
        result = store.update_status(vim_id, monitor_id, status)
        if result.refused:
            raise ApiError(409, result.reason, "monitor_id")
        return jsonify({"vim_id": vim_id, "status": status, "changed": result.changed,
                        "previous_status": result.previous_status})

    @app.get("/v1/monitoring")
    def monitoring() -> Response:
        return jsonify(manager.snapshot() if manager is not None else {})

    return app
