"""Signed alarm actions: the embedded Notifier signs each body, the Consumer checks it.

``X-Doctor-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes under a
secret the two share (``[notifier] action_secret`` = ``[consumer] alarm_secret``). Real
Aodh cannot add a header; its actions carry ``?token=<consumer token>`` instead.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Doctor-Signature"
_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header's value for ``body``."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` is ``body``'s signature under ``secret`` (constant time; never
    for an empty secret)."""
    if not secret or not header.startswith(_PREFIX):
        return False
    return hmac.compare_digest(header.strip().encode(), sign(secret, body).encode())
