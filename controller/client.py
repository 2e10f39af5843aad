"""A Controller over the embedded Controller's REST API (``controller/api.py``)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from controller.base import Controller, ControllerError, Host, NotFound, Server
from doctor.http import HttpClient, HttpError, HttpResponse, TokenSource


class ControllerClient(Controller):
    """Talks to ``doctor-controller serve`` at ``url``; every call has a timeout.

    Safe to share between threads: each thread keeps its own connection open, so
    many parallel calls (the Inspector's bound) reuse connections. ``token``: the
    X-Auth-Token, static or a token source (``doctor.http``); no token to send is a
    ControllerError, as an unreachable Controller is.
    """

    def __init__(self, url: str, token: str | TokenSource = "", timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.session = HttpClient(timeout_s, token)

    # -- the Controller interface -------------------------------------------------------------

    def list_servers(self, host: str | None = None) -> list[Server]:
        params = {"host": host} if host is not None else None
        body = self._call("GET", "/v1/servers", params=params)
        return [Server.from_dict(item) for item in body["servers"]]

    def force_down(self, host: str, down: bool = True) -> None:
        self._call("PUT", f"/v1/hosts/{_quote(host)}", json={"forced_down": bool(down)})

    def reset_state(self, server_id: str, state: str = "error") -> None:
        self._call("POST", f"/v1/servers/{_quote(server_id)}/action",
                   json={"reset-state": {"state": state}})

    batch_reset = True

    def reset_states(self, server_ids: list[str], state: str = "error") -> list[str]:
        """``POST /v1/servers/reset-state``: one request for them all; the ids not found."""
        answer = self._call("POST", "/v1/servers/reset-state",
                            json={"servers": list(server_ids), "state": state})
        return list((answer or {}).get("not_found", []))

    def host_status(self, server_id: str) -> str:
        return self._call("GET", f"/v1/servers/{_quote(server_id)}")["server"]["host_status"]

    def close(self) -> None:
        self.session.close()

    # -- the rest of the embedded Controller's API --------------------------------------------

    def create_server(self, name: str, project_id: str, host: str) -> Server:
        body = self._call("POST", "/v1/servers",
                          json={"name": name, "project_id": project_id, "host": host})
        return Server.from_dict(body["server"])

    def get_server(self, server_id: str) -> Server:
        return Server.from_dict(self._call("GET", f"/v1/servers/{_quote(server_id)}")["server"])

    def delete_server(self, server_id: str) -> None:
        self._call("DELETE", f"/v1/servers/{_quote(server_id)}")

    def migrate_server(self, server_id: str, host: str) -> None:
        self._call("POST", f"/v1/servers/{_quote(server_id)}/action",
                   json={"migrate": {"host": host}})

    def list_hosts(self) -> list[Host]:
        return [Host.from_dict(item) for item in self._call("GET", "/v1/hosts")["hosts"]]

    # -- inside -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The response's JSON (None when empty); ControllerError with the status otherwise."""
        url = self.url + path
        try:
            response = self.session.request(method, url, **kwargs)
        except HttpError as exc:
            raise ControllerError(f"controller unreachable: {exc}") from None
        if response.status >= 400:
            message = _error_message(response)
            error = NotFound if response.status == 404 else ControllerError
            raise error(f"{method} {url}: HTTP {response.status}: {message}",
                        response.status)
        if not response.body:
            return None
        try:
            return response.json()
        except ValueError:
            raise ControllerError(f"{method} {url}: HTTP {response.status} but the body "
                                  f"is not JSON: {response.text[:200]!r}",
                                  response.status) from None


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _error_message(response: HttpResponse) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or "no message"
