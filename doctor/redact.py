"""The one rule for a URL in a log line or a message: whatever may hold a secret is ``***``.

- the user info: the user name and the password each become ``***`` (an empty user stays
  empty, so ``redis://:PASSWORD@host`` shows as ``redis://:***@host``): webhook tokens and
  passwords hide there;
- the query: every value becomes ``***``, the names stay (``?db=***&token=***``); an item
  without ``=`` becomes ``***`` as a whole: API keys and signatures hide there;
- the fragment becomes ``***``.

Scheme, host, port and path are kept, so the reader can tell which server is meant. A URL
that does not parse is shown as ``<unparsable URL>``. Clients send URLs (alarm actions), so
the result is escaped as ``doctor.logs.escape`` shows client text, and cut at
``URL_LIMIT`` characters. ``scrub(text, url)`` removes the URL's
password and the values of its secret-named options (pass, secret, token) from free text,
such as a driver's error message that may repeat them.
"""

from __future__ import annotations

import re
import urllib.parse

from doctor.logs import escape

MASK = "***"
URL_LIMIT = 300
UNPARSABLE = "<unparsable URL>"
_SECRET_PARAM = re.compile(r"pass|secret|token", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` safe to log (see the module for the rule)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return UNPARSABLE
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        shown = (MASK if user else "") + (f":{MASK}" if has_password else "")
        netloc = f"{shown}@{hostport}"
    query = "&".join(
        f"{item.partition('=')[0]}={MASK}" if "=" in item else MASK
        for item in parts.query.split("&") if item) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return escape(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment)),
                  URL_LIMIT)


def secrets(url: str) -> list[str]:
    """The URL's password and the values of its secret-named query options."""
    try:
        parts = urllib.parse.urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found += [v for k, v in urllib.parse.parse_qsl(parts.query)
              if _SECRET_PARAM.search(k) and v]
    return found


def scrub(text: str, url: str) -> str:
    """``text`` without the secrets of ``url`` (each replaced by ``***``)."""
    for secret in secrets(url):
        text = text.replace(secret, MASK)
    return text
