"""Monitor: watches compute hosts and sends Doctor events to the Inspector.

``base.Monitor`` is what the pipeline relies on; ``ping.PingMonitor`` is the
raw-ICMP implementation (``prober`` is its loop, ``detector`` its per-host
state machine, ``sender`` its delivery to the Inspector).
"""
