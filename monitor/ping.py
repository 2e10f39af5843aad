"""The raw-ICMP monitor: the probe loop, the detectors, and event delivery."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from doctor.events import HOST_DOWN, HOST_UP, HostEvent
from doctor.openstack import outgoing_token
from doctor.profiler import Profiler
from monitor.base import Monitor
from monitor.config import MonitorConfig
from monitor.detector import HostState
from monitor.prober import ProbeScheduler, ProbeTarget
from monitor.sender import Delivery, InspectorSender

LOG = logging.getLogger(__name__)


class PingMonitor(Monitor):
    """Pings every target from one thread and one raw socket; reports downs and ups.

    A ``keystone_cloud`` whose credentials cannot be loaded is a ConfigError naming it."""

    def __init__(self, config: MonitorConfig,
                 on_event: Callable[[HostEvent], None] | None = None,
                 on_delivered: Callable[[Delivery], None] | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self.profiler = Profiler(config.profile_file)
        self.sender = InspectorSender(
            config.inspector_url,
            outgoing_token("monitor", config.keystone_cloud, config.inspector_token),
            timeout_s=config.event_timeout_ms / 1000.0,
            retry_initial_s=config.retry_initial_ms / 1000.0,
            retry_max_s=config.retry_max_ms / 1000.0,
            on_delivered=on_delivered)
        self.scheduler = ProbeScheduler(config, self._on_transition)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_or_die, name="probe-loop", daemon=True)
        self.failed: BaseException | None = None

    def start(self) -> None:
        self.sender.start()
        self._thread.start()

    def run(self, duration_s: float | None = None) -> None:
        """The probe loop, in the calling thread (``start`` runs it in its own)."""
        LOG.info("monitor %s probing %d hosts with ICMP identifier %d: interval %d ms, "
                 "timeout %d ms, down after %d misses (re-probed every %d ms), up after %d "
                 "replies", self.config.name, len(self.config.targets), self.scheduler.ident,
                 self.config.interval_ms, self.config.timeout_ms,
                 self.config.misses_before_down, self.config.suspect_interval_ms,
                 self.config.replies_before_up)
        self.scheduler.run(self._stop, duration_s)

    def _run_or_die(self) -> None:
        """The probe loop of ``start``: if it dies the process must not live on without it
        (it would go on heartbeating, holding its share of the targets unprobed)."""
        try:
            self.run()
        except BaseException as exc:
            self.failed = exc
            LOG.critical("the probe loop died; stopping the monitor", exc_info=True)
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.sender.stop()
        self.scheduler.sock.close()

    def host_states(self) -> dict[str, str]:
        return {t.hostname: t.state.value for t in self.scheduler.targets}

    def _on_transition(self, probe: ProbeTarget, old: HostState, new: HostState,
                       at: float) -> None:
        if new is HostState.SUSPECT:
            LOG.info("%s (%s) is suspect: probe unanswered", probe.hostname, probe.address)
            return
        if new is HostState.UP and old is not HostState.DOWN:
            if old is HostState.SUSPECT:
                LOG.info("%s answers again; suspicion dropped", probe.hostname)
            return
        kind = HOST_DOWN if new is HostState.DOWN else HOST_UP
        event = HostEvent.new(kind, probe.hostname, self.config.name, at)
        if kind == HOST_DOWN:
            # Doctor's checkpoint T01 and the seed's log line, for run.sh's profile.
            LOG.warning("doctor monitor detected at %.6f: %s (%s) is down",
                        at, probe.hostname, probe.address)
            self.profiler.record("T01", at, hostname=probe.hostname,
                                 monitor_event_id=event.monitor_event_id)
        else:
            LOG.warning("%s (%s) is up again", probe.hostname, probe.address)
        self.sender.submit(event)
        if self.on_event is not None:
            self.on_event(event)
