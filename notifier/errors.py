"""The Notifier API's errors: an ApiError that names the field, and Aodh's JSON shape for it.

Errors are JSON with ``error`` and ``field``, plus Aodh's
``error_message.faultstring``, which is what aodhclient shows its user.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from doctor.api import ApiError


def fail(field: str, problem: str, status: int = 400) -> ApiError:
    """The error to raise for ``field``: its message is ``"<field>: <problem>"``."""
    return ApiError(status, f"{field}: {problem}", field)


def aodh_error(status: int, message: str, field: str | None = None) -> tuple[Response, int]:
    """The response for an error, in doctor's shape and Aodh's."""
    body: dict[str, Any] = {"error": message}
    if field is not None:  # "" too: a body's key may be empty
        body["field"] = field
    body["error_message"] = {"faultcode": "Client" if status < 500 else "Server",
                             "faultstring": message, "debuginfo": None}
    return jsonify(body), status
