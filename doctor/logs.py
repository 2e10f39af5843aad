"""Logging set-up shared by every console script, and the one rule for client text in logs."""

from __future__ import annotations

import logging
import re
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ESCAPE_LIMIT = 200  # characters of a client's text shown in one log line

# What must never reach a log line raw: C0 and C1 control characters (newlines, carriage
# returns, ANSI escapes), DEL, Unicode's line and paragraph separators, zero-width and
# bidirectional formatting characters (text that reads differently than it is), the BOM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: Any, limit: int = ESCAPE_LIMIT) -> str:
    """``value`` (text a client sent) as it may appear in a log line.

    Control and formatting characters are shown escaped (``\\n``, ``\\r``, ``\\x1b``,
    ``\\u2028``), so a client cannot start a line of its own or colour the terminal; text
    longer than ``limit`` characters is cut there, with a marker that gives its length
    (``...[cut, N chars]``). Anything but a string is shown by its ``repr``, escaped the same way.
    """
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit]
    if _UNSAFE.search(shown):
        shown = _UNSAFE.sub(lambda m: _escaped(m.group()), shown)
    if len(shown) > limit or len(text) > limit:
        return f"{shown[:limit]}...[cut, {len(text)} chars]"
    return shown


def setup(level: str = "INFO") -> None:
    """Timestamped lines on stderr; ``level`` is one of LEVELS."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
