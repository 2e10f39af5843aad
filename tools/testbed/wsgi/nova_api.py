"""nova-api under gunicorn.

Nova's WSGI application parses ``sys.argv`` with oslo.config, which rejects gunicorn's own
options: clear it before the application is built. The configuration comes from
``OS_NOVA_CONFIG_DIR`` and ``OS_NOVA_CONFIG_FILES`` (the first file is the paste config).
"""

import sys

sys.argv = sys.argv[:1]

from nova.wsgi.osapi_compute import application  # noqa: E402

__all__ = ["application"]
