"""VIM monitoring: registered VIMs in the database, one monitor per VIM, status events.

``spec.py`` (what a VIM's config file and API body may hold), ``crypto.py`` (passwords under
Fernet), ``store.py`` (the table, and ``update_status``: the one way a status changes),
``manager.py`` (the monitor manager: one thread, the Monitor's ICMP prober for all VIMs),
``api.py`` (``/v1/vims``), ``config.py``, ``cli.py`` (``doctor-vim``).
"""
