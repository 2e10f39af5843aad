"""What every part's REST API shares: JSON errors, token checks, a body parser."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

TOKEN_HEADER = "X-Auth-Token"


class ApiError(Exception):
    """An error the client caused or must know of; becomes a JSON response."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def token_matches(given: str, expected: str) -> bool:
    """Whether ``given`` is ``expected``, compared in constant time; never for an empty
    ``expected``."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def unauthorized(what: str = TOKEN_HEADER) -> tuple[Response, int]:
    """The 401 of a request without the right credentials (never saying which were sent)."""
    return jsonify({"error": f"missing or wrong {what}", "field": what}), 401


def json_app(name: str, token: str = "", auth_strategy: str = "token",
             authenticate: Callable[[], tuple[Response, int] | None] | None = None) -> Flask:
    """A Flask app that answers errors in JSON and checks who is asking.

    ``auth_strategy = "token"`` (the default): every request must carry
    ``X-Auth-Token: <token>`` (compared in constant time, never logged), else 401;
    an empty ``token`` is a ValueError, as nothing may answer anyone by mistake.
    ``authenticate``, when given, replaces that check (a part whose routes take
    other credentials: it returns a 401 response, or None to let the request in).
    ``"noauth"``: anyone is answered.
    """
    if auth_strategy not in ("token", "noauth"):
        raise ValueError(f"auth_strategy: {auth_strategy!r} is not token or noauth")
    if auth_strategy == "token" and not token:
        raise ValueError(f"{name}: auth_strategy token needs a token")
    app = Flask(name)
    app.config.update(DEBUG=False, PROPAGATE_EXCEPTIONS=False, JSON_SORT_KEYS=False)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        body: dict[str, Any] = {"error": error.message}
        if error.field:
            body["field"] = error.field
        return jsonify(body), error.status

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": error.description}), error.code or 500

    @app.errorhandler(Exception)
    def _crash(error: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error serving %s %s", request.method, request.path)
        return jsonify({"error": f"internal error: {type(error).__name__}"}), 500

    if auth_strategy == "token":

        def _check_token() -> tuple[Response, int] | None:
            if token_matches(request.headers.get(TOKEN_HEADER, ""), token):
                return None
            return unauthorized()

        app.before_request(authenticate or _check_token)

    return app


def json_body() -> Any:
    """The request's JSON body, or a 400 that says why it is not one."""
    data = request.get_data(cache=True)
    if not data:
        raise ApiError(400, "request body is empty; expected JSON", "body")
    try:
        import json

        return json.loads(data)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "body") from None
