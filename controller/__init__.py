"""Controller: the inventory of hosts and VMs the Inspector acts on (embedded, or Nova).

``base.py`` says what a Controller promises (Nova's calls that Doctor uses),
``embedded.py`` is the embedded one (a tiny Nova in SQLite), ``api.py`` its
REST API, ``client.py`` the same promises over that API, and ``cli.py`` the
``doctor-controller`` command (the daemon and its client commands).
"""
