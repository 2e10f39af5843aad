"""What every part's REST API shares: JSON errors, token checks, a bounded body parser."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from doctor.config import DEFAULT_MAX_BODY_BYTES
from doctor.logs import escape

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


class Guard(Protocol):
    """What ``auth_strategy = keystone`` puts on an app (``doctor.policy.KeystoneGuard``)."""

    def install(self, app: Flask) -> None: ...


def json_app(name: str, token: str = "", auth_strategy: str = "token",
             authenticate: Callable[[], tuple[Response, int] | None] | None = None,
             keystone: Guard | None = None) -> Flask:
    """A Flask app that answers errors in JSON and checks who is asking.

    ``auth_strategy = "token"`` (the default): every request must carry
    ``X-Auth-Token: <token>`` (compared in constant time, never logged), else 401;
    an empty ``token`` is a ValueError, as nothing may answer anyone by mistake.
    ``authenticate``, when given, replaces that check (a part whose routes take
    other credentials: it returns a 401 response, or None to let the request in).
    ``"noauth"``: anyone is answered.
    ``"keystone"``: ``keystone`` (a ``doctor.policy.KeystoneGuard``, required) puts
    keystonemiddleware around the app and checks each route's policy rule; ``token`` and
    ``authenticate`` are not used.
    """
    if auth_strategy not in ("token", "noauth", "keystone"):
        raise ValueError(f"auth_strategy: {auth_strategy!r} is not token, noauth or keystone")
    if auth_strategy == "token" and not token:
        raise ValueError(f"{name}: auth_strategy token needs a token")
    if auth_strategy == "keystone" and keystone is None:
        raise ValueError(f"{name}: auth_strategy keystone needs its Keystone settings")
    app = Flask(name)
    app.config.update(DEBUG=False, PROPAGATE_EXCEPTIONS=False, JSON_SORT_KEYS=False)
    limit_body(app, DEFAULT_MAX_BODY_BYTES)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        return jsonify(error_document(error)), error.status

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": error.description}), error.code or 500

    # Past MAX_CONTENT_LENGTH: answered as an ApiError naming the body, in the app's own
    # error shape (a role may answer ApiErrors its own way, as the notifier does Aodh's).
    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_error: RequestEntityTooLarge) -> Any:
        return app.handle_user_exception(_body_too_large())

    @app.errorhandler(Exception)
    def _crash(error: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error serving %s %s", escape(request.method, 20),
                             escape(request.path))
        return jsonify({"error": f"internal error: {type(error).__name__}"}), 500

    if auth_strategy == "token":

        def _check_token() -> tuple[Response, int] | None:
            if token_matches(request.headers.get(TOKEN_HEADER, ""), token):
                return None
            return unauthorized()

        app.before_request(authenticate or _check_token)
    elif auth_strategy == "keystone" and keystone is not None:
        keystone.install(app)

    return app


def error_document(error: ApiError) -> dict[str, Any]:
    """The JSON body of an ApiError's answer: ``error``, and ``field`` and ``rule`` when it
    names them."""
    body: dict[str, Any] = {"error": error.message}
    if error.field is not None:  # "" too: a body's key may be empty
        body["field"] = error.field
    if getattr(error, "rule", None):  # a policy's 403 names its rule
        body["rule"] = error.rule  # type: ignore[attr-defined]
    return body


def limit_body(app: Flask, max_bytes: int) -> None:
    """Answer requests whose body is larger than ``max_bytes`` with 413 naming ``body``."""
    app.config["MAX_CONTENT_LENGTH"] = max_bytes


def body_too_large(limit: int | None) -> ApiError:
    """The 413 of a body past ``limit`` bytes, naming ``body``."""
    return ApiError(413, f"body: larger than the limit of {limit} bytes", "body")


def _body_too_large() -> ApiError:
    return body_too_large(request.max_content_length)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def json_body() -> Any:
    """The request's JSON body, or an error that says why it is not one: 413 past the body
    limit, 400 for anything that is not standard JSON (NaN and Infinity are not) or that
    is nested too deeply to read. Every error names ``body``."""
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _body_too_large() from None
    return json_of(data)


def json_of(data: bytes) -> Any:
    """``json_body``'s checks of a body already read (within its limit)."""
    if not data:
        raise ApiError(400, "request body is empty; expected JSON", "body")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "body") from None
    except RecursionError:
        raise ApiError(400, "body: nested too deeply", "body") from None
