"""The sample Consumer's API on aiohttp (``http_server`` aiohttp, or auto without Keystone).

The same routes, checks and answers as ``consumer.sample.create_app`` (Flask), which they
share: ``consumer.sample.Intake`` decides, this module only reads the request and writes
the answer. In the order Flask's app takes them: the time the request came (checkpoint T09's
and the notification's ``received_at``, the first thing), then the body of a request to
the alarm path (bounded: ``doctor.aio.read_body``), then who is asking (``auth_strategy =
token``), then the route (404, 405), then the route's own checks. Errors are
Flask's JSON: ``{"error": ..., "field": ...}``, never a 500 for what a client sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from werkzeug.exceptions import MethodNotAllowed, NotFound

from consumer.sample import REQUEST_ID_HEADER, Intake, SampleConsumer
from doctor import clock
from doctor.aio import Handler, read_body
from doctor.api import TOKEN_HEADER, ApiError, error_document
from doctor.config import KEYSTONE
from doctor.logs import escape
from doctor.signing import SIGNATURE_HEADER
from doctor.wsgi import REQUEST_TIMEOUT_S

LOG = logging.getLogger(__name__)


def json_response(document: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """``document`` as Flask's ``jsonify`` writes it: compact, keys sorted, a newline."""
    text = json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n"
    return web.Response(status=status, body=text.encode(), headers=headers,
                        content_type="application/json")


def create_aio_app(consumer: SampleConsumer,
                   body_timeout_s: float = REQUEST_TIMEOUT_S) -> Handler:
    """The handler of every request to the consumer (``doctor.aio.AioServer`` serves it);
    an alarm's body must be complete ``body_timeout_s`` after its head (else 408)."""
    config = consumer.config
    if config.auth_strategy == KEYSTONE:
        raise ValueError("consumer: auth_strategy keystone is served by Flask on waitress "
                         "(keystonemiddleware)")
    intake = Intake(consumer)
    checks_token = config.auth_strategy == "token"
    methods = {config.path: ("OPTIONS", "POST"),
               "/failures": ("DELETE", "GET", "HEAD", "OPTIONS")}
    allow = {path: ", ".join(names) for path, names in methods.items()}

    async def answer(request: web.BaseRequest, received_at: float) -> web.StreamResponse:
        path, method = request.path, request.method
        body = b""
        if path == config.path:  # its body is what a signature signs
            body = await read_body(request, config.max_body_bytes, body_timeout_s)
        if checks_token:
            headers = request.headers
            intake.authenticate(path, lambda: body, headers.get(SIGNATURE_HEADER, ""),
                                request.query.get("token", ""), headers.get(TOKEN_HEADER, ""))
        allowed = methods.get(path)
        if allowed is None:
            raise ApiError(404, NotFound.description or "not found")
        if method not in allowed:  # as Flask's app answers it (its JSON has no Allow)
            raise ApiError(405, MethodNotAllowed.description or "method not allowed")
        if method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow[path]},
                                content_type="text/html")
        if path == config.path:
            return json_response(intake.failure(received_at, body,
                                                request.headers.get(REQUEST_ID_HEADER, "")))
        if method == "DELETE":
            intake.clear_failures()
            return web.Response(status=204)
        # Up to 10,000 notifications to write out: not in the loop that takes the alarms.
        since = request.query.get("since")
        listed = await asyncio.get_running_loop().run_in_executor(
            None, intake.list_failures, since)
        return json_response(listed)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        received_at = clock.now()  # first thing: this is the notification time
        try:
            return await answer(request, received_at)
        except ApiError as error:
            response = json_response(error_document(error), error.status)
            if error.status == 408:  # the rest of the body may still come: not kept alive
                response.force_close()
            return response
        except Exception as exc:  # noqa: BLE001  (answered 500 and logged, as Flask's app)
            LOG.exception("unhandled error serving %s %s", escape(request.method, 20),
                          escape(request.path))
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

    return handle
