"""aodh-api under gunicorn, with its configuration file from ``TESTBED_AODH_CONF``."""

import os

from aodh.api import app

application = app.build_wsgi_app(argv=["--config-file", os.environ["TESTBED_AODH_CONF"]])
