"""neutron's API server under gunicorn.

Like Nova's, Neutron's WSGI application parses ``sys.argv`` with oslo.config: clear it first.
The configuration comes from ``OS_NEUTRON_CONFIG_DIR`` and ``OS_NEUTRON_CONFIG_FILES``.
"""

import sys

sys.argv = sys.argv[:1]

from neutron.wsgi.api import application  # noqa: E402

__all__ = ["application"]
