"""Consumer: the VNFM side, notified by the Notifier's alarm action when its VMs fail.

``base.py`` says what a Consumer promises, ``sample.py`` is Doctor's sample
consumer (``POST /failure``, with an optional recovery action through the
Controller), ``cli.py`` the ``doctor-consumer`` daemon.
"""
