"""The embedded Controller's REST API: a Nova-like subset over an ``Inventory``.

    GET    /v1/servers[?host=H]        {"servers": [server, ...]}
    POST   /v1/servers                 {"name", "project_id", "host"} -> 201 {"server": server}
    GET    /v1/servers/<id>            {"server": server + "host_status"}
    DELETE /v1/servers/<id>            204
    POST   /v1/servers/<id>/action     {"reset-state": {"state": "error"}} or
                                       {"migrate": {"host": "compute-2"}} -> 202
    POST   /v1/servers/reset-state     {"servers": [id, ...], "state": "error"} -> 200
                                       {"reset": n, "not_found": [id, ...]} (one transaction)
    GET    /v1/hosts                   {"hosts": [{"name", "forced_down"}, ...]}
    PUT    /v1/hosts/<name>            {"forced_down": true|false} -> {"host": host}

A bad body is a 400 whose ``field`` names the culprit; an unknown id a 404.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from controller import policies
from controller.base import VM_STATES, ControllerError, Host
from controller.embedded import Inventory
from doctor.api import ApiError, json_app, json_body
from doctor.keystone import KeystoneSettings
from doctor.policy import KeystoneGuard, PolicyDenied, current_identity

ACTIONS = ("reset-state", "migrate")
MAX_RESET = 10_000  # servers in one POST /v1/servers/reset-state


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{field}: must be a JSON object", field)
    return value


def _text(obj: dict[str, Any], key: str, field: str | None = None) -> str:
    field = field or key
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{field}: required, a non-empty string", field)
    return value


def _action(body: Any) -> tuple[str, dict[str, Any]]:
    """The one action of an action body, and its arguments."""
    body = _object(body, "body")
    if len(body) != 1 or next(iter(body)) not in ACTIONS:
        raise ApiError(400, f"body: must hold exactly one action, one of {', '.join(ACTIONS)}; "
                            f"got {', '.join(body) or 'none'}", "body")
    name, arguments = next(iter(body.items()))
    return name, _object(arguments, name)


def create_app(inventory: Inventory, token: str = "", auth_strategy: str = "token",
               keystone: KeystoneSettings | None = None) -> Flask:
    """The API over ``inventory``; every request needs ``token`` in ``X-Auth-Token``, unless
    ``auth_strategy`` is noauth. With ``keystone`` (the settings of ``auth_strategy =
    keystone``): a Keystone token, and ``controller.policies``' rules: a server's project
    is the target of its rules, and host changes, resets and migrations are admin's."""
    guard = (KeystoneGuard(keystone, policies.RULES, policies.ENDPOINTS)
             if auth_strategy == "keystone" and keystone is not None else None)
    app = json_app("controller", token, auth_strategy, keystone=guard)

    def check(rule: str, project_id: str) -> None:
        """With keystone: ``rule`` on an object of ``project_id`` (403 naming it)."""
        if guard is not None:
            guard.policy.enforce(rule, current_identity(), {"project_id": project_id})

    def sees_all() -> bool:
        return guard is None or guard.policy.allows(policies.SERVERS_LIST_ALL,
                                                    current_identity())

    @app.errorhandler(ControllerError)
    def _controller_error(error: ControllerError) -> tuple[Response, int]:
        return jsonify({"error": error.message}), error.status or 400

    @app.get("/v1/servers")
    def list_servers() -> Response:
        host = request.args.get("host")
        if host is not None and not host.strip():
            raise ApiError(400, "host: must be a non-empty host name", "host")
        servers = inventory.list_servers(host)
        if not sees_all():
            if host is not None:  # which servers a host runs is the operator's to know
                raise PolicyDenied(policies.SERVERS_LIST_ALL)
            project = current_identity().project_id
            servers = [s for s in servers if s.project_id == project]
        return jsonify({"servers": [s.to_dict() for s in servers]})

    @app.post("/v1/servers")
    def create_server() -> tuple[Response, int]:
        body = _object(json_body(), "body")
        project_id = _text(body, "project_id")
        check(policies.SERVERS_CREATE, project_id)
        server = inventory.create_server(_text(body, "name"), project_id, _text(body, "host"))
        return jsonify({"server": server.to_dict()}), 201

    @app.get("/v1/servers/<server_id>")
    def show_server(server_id: str) -> Response:
        server = inventory.get_server(server_id)
        check(policies.SERVERS_SHOW, server.project_id)
        status = inventory.host_status(server_id)
        return jsonify({"server": {**server.to_dict(), "host_status": status}})

    @app.delete("/v1/servers/<server_id>")
    def delete_server(server_id: str) -> tuple[str, int]:
        if guard is not None:
            check(policies.SERVERS_DELETE, inventory.get_server(server_id).project_id)
        inventory.delete_server(server_id)
        return "", 204

    @app.post("/v1/servers/<server_id>/action")
    def server_action(server_id: str) -> tuple[str, int]:
        name, arguments = _action(json_body())
        if guard is not None:
            check(policies.SERVERS_RESET_STATE if name == "reset-state"
                  else policies.SERVERS_MIGRATE, inventory.get_server(server_id).project_id)
        if name == "reset-state":
            state = arguments.get("state", "error")
            if state not in VM_STATES:
                raise ApiError(400, f"reset-state.state: {state!r} is not a vm_state; expected "
                                    f"one of {', '.join(VM_STATES)}", "reset-state.state")
            inventory.reset_state(server_id, state)
        else:
            inventory.migrate_server(server_id, _text(arguments, "host", "migrate.host"))
        return "", 202

    @app.post("/v1/servers/reset-state")
    def reset_servers() -> Response:
        body = _object(json_body(), "body")
        ids = body.get("servers")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_RESET:
            raise ApiError(400, f"servers: required, a list of 1 to {MAX_RESET} server ids",
                           "servers")
        for i, server_id in enumerate(ids):
            if not isinstance(server_id, str) or not server_id.strip() or len(server_id) > 255:
                raise ApiError(400, f"servers[{i}]: must be a server id", f"servers[{i}]")
        state = body.get("state", "error")
        if state not in VM_STATES:
            raise ApiError(400, f"state: {state!r} is not a vm_state; expected one of "
                                f"{', '.join(VM_STATES)}", "state")
        missing = inventory.reset_states(ids, state)
        return jsonify({"reset": len(set(ids)) - len(missing), "not_found": missing})

    @app.get("/v1/hosts")
    def list_hosts() -> Response:
        return jsonify({"hosts": [h.to_dict() for h in inventory.list_hosts()]})

    @app.put("/v1/hosts/<name>")
    def update_host(name: str) -> Response:
        body = _object(json_body(), "body")
        forced_down = body.get("forced_down")
        if not isinstance(forced_down, bool):
            raise ApiError(400, "forced_down: required, true or false", "forced_down")
        inventory.force_down(name, forced_down)
        return jsonify({"host": Host(name=name, forced_down=forced_down).to_dict()})

    return app
