"""What every part's REST API shares: JSON errors, token checks, a body parser."""

from __future__ import annotations

import hmac
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


def json_app(name: str, token: str = "") -> Flask:
    """A Flask app that answers errors in JSON and, with ``token``, requires it.

    Requests must then carry ``X-Auth-Token: <token>``; the token is compared
    in constant time and never logged.
    """
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

    if token:
        expected = token.encode()

        @app.before_request
        def _check_token() -> tuple[Response, int] | None:
            given = request.headers.get(TOKEN_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                return jsonify({"error": f"missing or wrong {TOKEN_HEADER}"}), 401
            return None

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
