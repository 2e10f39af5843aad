"""Keystone under gunicorn (the bed's, and testkit.keystone_server's throw-away ones).

Keystone's WSGI application parses ``sys.argv`` with oslo.config, which rejects gunicorn's own
options: clear it before the application is built. The configuration comes from
``OS_KEYSTONE_CONFIG_DIR`` (its ``keystone.conf``).
"""

import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402

__all__ = ["application"]
