"""The service list: every long-running process joins one tooz group and heartbeats.

Backends are tooz URLs:
- ``file://DIR`` (the default, ``$DOCTOR_STATE_DIR/coordination``): no server, one machine.
  tooz's file driver never deletes the entry of a process that died (its docstring says so);
  tooz 9 only hides an entry whose file was not touched for ``?timeout=`` whole seconds.
  So ``list_services`` also checks each member's process on this machine (pid and its start
  time in /proc, same boot, same pid namespace) and removes the entries of dead ones at once.
- ``redis://[:PASSWORD@]HOST:PORT``: several machines. A member's heartbeat key expires after
  ``membership_timeout`` seconds, and the next listing drops it.
- ``zookeeper://``, ``etcd3+http://`` ...: whatever tooz offers, by URL.

``heartbeat_timeout_s`` (3 s by default) is how long a dead process stays listed at most; it
becomes the driver's option (Redis ``membership_timeout``, file ``timeout``, ZooKeeper and etcd
``timeout``) unless the URL sets it. Members heartbeat every third of it.

A ``ServiceRegistration`` never blocks or fails its process: it joins and heartbeats from its
own thread, and while the backend is unreachable it logs a warning and retries with backoff,
re-joining when the backend is back (a restarted Redis has forgotten the group).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import socket
import threading
import urllib.parse
import uuid
import warnings
from datetime import datetime, timezone
from typing import Any

from doctor import clock
from doctor.redact import redact_url, scrub
from doctor.retry import Backoff, RetryError, retry

LOG = logging.getLogger(__name__)

GROUP = b"doctor-services"
DEFAULT_HEARTBEAT_TIMEOUT_S = 3.0
COLUMNS = ("Name", "Process Id", "Hostname", "Created At")
# Bound on one connection attempt (TCP connect) and on one call to the backend, s.
CONNECT_TIMEOUT_S = 2.0
# Default ports, to check that a server backend answers before tooz's own (long) retries.
_PORTS = {"redis": 6379, "rediss": 6379, "zookeeper": 2181, "kazoo": 2181,
          "etcd3+http": 2379, "etcd3+https": 2379, "memcached": 11211, "mysql": 3306,
          "postgresql": 5432}
# The driver option that says how long a silent member stays a member, per URL scheme.
_TIMEOUT_OPTION = {"redis": "membership_timeout", "rediss": "membership_timeout",
                   "etcd3+http": "membership_timeout", "etcd3+https": "membership_timeout",
                   "file": "timeout", "zookeeper": "timeout", "kazoo": "timeout",
                   "memcached": "membership_timeout"}
# Drivers whose timeout option is read as whole seconds.
_INT_TIMEOUT = {"file", "zookeeper", "kazoo"}


class CoordinationError(RuntimeError):
    """The coordination backend could not be used; the message names it (no password)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)
        self.reason = scrub(reason, url)
        super().__init__(f"coordination backend {self.url} unreachable: {self.reason}")


def load_tooz() -> Any:
    """``tooz.coordination``, imported once, from the main thread before any other.

    futurist (under tooz) imports eventlet when it is installed (oslo.messaging brings it).
    Imported first from a thread other than the main one, eventlet leaves that thread
    unjoinable (measured: ``join()`` never returns), and it prints a deprecation notice.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        from tooz import coordination as tooz_coordination
    return tooz_coordination


def default_url() -> str:
    """The embedded default: tooz's file driver under the state directory."""
    from doctor.store import state_dir  # here: doctor.store loads SQLAlchemy

    return f"file://{os.path.join(state_dir(), 'coordination')}"


def local_hostname() -> str:
    """``$HOST_HOSTNAME`` (a container's host, as the seed asks), else this machine's name."""
    return os.environ.get("HOST_HOSTNAME", "").strip() or socket.gethostname()


# -- who a process is, and whether it still runs ----------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def boot_id() -> str:
    """This kernel's boot id: pids are only comparable within one boot of one machine."""
    return _read("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``); '' where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22); None: no such
    process. A reused pid has another start time."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """One registered process: what the service list shows, plus what proves it alive."""

    name: str
    hostname: str
    pid: int
    created_at: str  # ISO 8601 UTC, whole seconds, as the seed shows it
    boot_id: str = ""
    pid_start: int = 0
    pid_namespace: str = ""

    @classmethod
    def for_this_process(cls, name: str) -> ServiceInfo:
        pid = os.getpid()
        created = datetime.fromtimestamp(int(clock.now()), tz=timezone.utc).isoformat()
        return cls(name=name, hostname=local_hostname(), pid=pid, created_at=created,
                   boot_id=boot_id(), pid_start=process_start_ticks(pid) or 0,
                   pid_namespace=pid_namespace())

    def to_capabilities(self) -> dict[str, Any]:
        """The tooz capabilities (serialized by the driver with msgpack)."""
        return {"name": self.name, "hostname": self.hostname, "pid": self.pid,
                "created_at": self.created_at, "boot_id": self.boot_id,
                "pid_start": self.pid_start, "pid_namespace": self.pid_namespace}

    @classmethod
    def from_capabilities(cls, capabilities: Any) -> ServiceInfo:
        """The inverse of ``to_capabilities``; ValueError for what no Doctor process wrote."""
        if not isinstance(capabilities, dict):
            raise ValueError(f"capabilities are a {type(capabilities).__name__}, not a dict")
        caps = {(k.decode() if isinstance(k, bytes) else k): v for k, v in capabilities.items()}
        caps = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in caps.items()}
        for key, kind in (("name", str), ("hostname", str), ("pid", int), ("created_at", str)):
            if not isinstance(caps.get(key), kind) or isinstance(caps.get(key), bool):
                raise ValueError(f"capability {key!r} missing or not a {kind.__name__}")
        return cls(name=caps["name"], hostname=caps["hostname"], pid=caps["pid"],
                   created_at=caps["created_at"], boot_id=str(caps.get("boot_id") or ""),
                   pid_start=int(caps.get("pid_start") or 0),
                   pid_namespace=str(caps.get("pid_namespace") or ""))

    def row(self) -> dict[str, Any]:
        """The service list's row: the seed's four columns."""
        return {"Name": self.name, "Process Id": self.pid, "Hostname": self.hostname,
                "Created At": self.created_at}

    def alive_here(self) -> bool | None:
        """Whether the process still runs, judged from this machine's /proc; None when it
        cannot be judged here (another machine, boot or pid namespace)."""
        if not self.boot_id or self.boot_id != boot_id():
            return None
        if not self.pid_namespace or self.pid_namespace != pid_namespace():
            return None
        started = process_start_ticks(self.pid)
        return started is not None and (not self.pid_start or started == self.pid_start)


# -- the backend ------------------------------------------------------------------------------


def scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme


def driver_options(url: str, heartbeat_timeout_s: float) -> dict[str, Any]:
    """Options passed to tooz that the URL does not set itself (the URL's own win)."""
    kind = scheme(url)
    given = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    # tooz's default executor is a thread pool whose idle worker takes up to 1 s to stop, on
    # every stop; our calls are bounded by socket timeouts, so they run in the caller's thread.
    options: dict[str, Any] = {"executor": "synchronous"}
    name = _TIMEOUT_OPTION.get(kind)
    if name:
        value: float | int = heartbeat_timeout_s
        if kind in _INT_TIMEOUT:
            value = max(1, math.ceil(heartbeat_timeout_s))
        options[name] = str(value)
    if kind in ("redis", "rediss"):
        # tooz's default socket timeout is 30 s; a call must fail well within a heartbeat.
        options["socket_timeout"] = str(CONNECT_TIMEOUT_S)
        options["socket_connect_timeout"] = str(CONNECT_TIMEOUT_S)
    return {k: v for k, v in options.items() if k not in given}


def check_reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connect to a server backend, bounded; CoordinationError if it fails.

    tooz's Redis driver retries a refused connection 15 times, each with redis-py's own
    retries and backoff (about a minute in all, measured); this answers in milliseconds.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or "fallback" in parts.query or "hosts=" in parts.query:
        return  # several servers (Redis sentinels, ZooKeeper hosts): tooz tries them in turn
    try:
        port = parts.port or _PORTS.get(parts.scheme)
    except ValueError:
        raise CoordinationError(url, "the URL's port is not a number") from None
    if port is None:
        return
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout_s:g} s"
        raise CoordinationError(url, f"cannot connect to {parts.hostname}:{port}: "
                                     f"{reason}") from None


def connect(url: str, member_id: bytes,
            heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S) -> Any:
    """A started tooz coordinator for ``url``; CoordinationError if it cannot be had."""
    tooz_coordination = load_tooz()
    check_reachable(url)
    try:
        coordinator = tooz_coordination.get_coordinator(
            url, member_id, **driver_options(url, heartbeat_timeout_s))
    except Exception as exc:  # stevedore: an unknown scheme; a bad option
        raise CoordinationError(url, f"no usable tooz driver: {_describe(exc)}") from None
    try:
        coordinator.start(start_heart=False)
    except Exception as exc:  # tooz, redis and OS errors alike
        raise CoordinationError(url, _describe(exc)) from None
    _bound_redis_retries(coordinator)
    return coordinator


def _bound_redis_retries(coordinator: Any) -> None:
    # redis-py's default retries with backoff times tooz's 15 tries make a call to a stopped
    # Redis hang about a minute; one try per tooz attempt fails in milliseconds instead.
    client = getattr(coordinator, "_client", None)
    if client is not None and hasattr(client, "set_retry"):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client.set_retry(Retry(NoBackoff(), 0))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text if text else type(exc).__name__


def _stop_quietly(coordinator: Any) -> None:
    try:
        coordinator.stop()
    except Exception:  # the backend may be gone; nothing to release
        LOG.debug("stopping the coordinator failed", exc_info=True)


def list_services(url: str | None = None,
                  heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                  group: bytes = GROUP) -> list[dict[str, Any]]:
    """The registered processes as the seed's rows, sorted by name, host and pid.

    CoordinationError when the backend cannot be reached. On the file backend, members whose
    process is gone from this machine are left out and their entries removed.
    """
    tooz_coordination = load_tooz()
    url = url or default_url()
    if scheme(url) == "file" and not os.path.isdir(urllib.parse.urlsplit(url).path):
        # tooz would create it; a typo in the path should not look like an empty list.
        raise CoordinationError(url, "no such directory: no process has registered there")
    coordinator = connect(url, f"doctor-service-list-{uuid.uuid4().hex}".encode(),
                          heartbeat_timeout_s)
    try:
        try:
            members = coordinator.get_members_with_capabilities(group).get(
                timeout=CONNECT_TIMEOUT_S * 2)
        except tooz_coordination.GroupNotCreated:
            return []
        except Exception as exc:
            raise CoordinationError(url, _describe(exc)) from None
    finally:
        _stop_quietly(coordinator)
    services = []
    for member_id, capabilities in members.items():
        try:
            info = ServiceInfo.from_capabilities(capabilities)
        except ValueError as exc:
            LOG.debug("member %r of %s is not a Doctor service: %s", member_id, group, exc)
            continue
        if scheme(url) == "file" and info.alive_here() is False:
            _remove_dead_member(url, group, member_id, info)
            continue
        services.append(info)
    services.sort(key=lambda s: (s.name, s.hostname, s.pid))
    return [s.row() for s in services]


def _remove_dead_member(url: str, group: bytes, member_id: bytes | str, info: ServiceInfo) -> None:
    """Leave ``group`` on behalf of a dead process (its own id), so its entry is gone."""
    tooz_coordination = load_tooz()
    member = member_id if isinstance(member_id, bytes) else member_id.encode()
    LOG.info("removing %s (pid %d on %s) from the service list: the process is gone",
             info.name, info.pid, info.hostname)
    try:
        coordinator = connect(url, member)
    except CoordinationError as exc:
        LOG.warning("cannot remove a dead member: %s", exc)
        return
    try:
        coordinator.leave_group(group).get(timeout=CONNECT_TIMEOUT_S)
    except tooz_coordination.ToozError as exc:  # MemberNotJoined: another lister was quicker
        LOG.debug("leaving for %r: %s", member_id, exc)
    finally:
        _stop_quietly(coordinator)


# -- a process's registration -----------------------------------------------------------------


class ServiceRegistration:
    """Keeps this process in the service list while it runs.

    ``start()`` returns at once; a thread joins the group, heartbeats every third of
    ``heartbeat_timeout_s`` and checks it is still a member (a backend that restarted, or a
    heartbeat that came too late, has dropped it), re-joining if not. While the backend is
    unreachable it logs a warning once, retries with backoff up to ``retry_max_s``, and says
    when it is registered again. ``stop()`` leaves the group, waiting at most ``stop_timeout_s``.
    """

    def __init__(self, name: str, url: str | None = None,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 group: bytes = GROUP, retry_initial_s: float = 0.2,
                 retry_max_s: float = 5.0) -> None:
        self.url = url or default_url()
        self.info = ServiceInfo.for_this_process(name)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.interval_s = heartbeat_timeout_s / 3.0
        self.group = group
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.member_id = f"{self.info.hostname}:{self.info.pid}:{uuid.uuid4().hex[:12]}".encode()
        self.joined = threading.Event()
        self.beats = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._coordinator: Any = None
        self._failing_since = 0.0  # monotonic time of the first failure in a row; 0: none
        self._registered_once = False

    def start(self) -> ServiceRegistration:
        load_tooz()  # here, in the caller's thread (see load_tooz)
        self._thread = threading.Thread(target=self._run, name="service-registration",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, stop_timeout_s: float = 3.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(stop_timeout_s)
            if self._thread.is_alive():
                LOG.warning("service registration did not leave %s within %g s",
                            redact_url(self.url), stop_timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:  # any failure is retried: never let the thread die
                retry(self._beat, backoff=Backoff(self.retry_initial_s, self.retry_max_s),
                      stop=self._stopping, on_failure=lambda exc, _n, _d: self._failed(exc))
            except RetryError:
                break  # stopping
            self._stopping.wait(self.interval_s)
        self._leave()

    def _beat(self) -> None:
        tooz_coordination = load_tooz()
        if self._coordinator is None:
            self._coordinator = connect(self.url, self.member_id, self.heartbeat_timeout_s)
            self._join()
        else:
            self._coordinator.heartbeat()
            try:
                self._coordinator.get_member_capabilities(self.group, self.member_id).get(
                    timeout=CONNECT_TIMEOUT_S * 2)
            except (tooz_coordination.MemberNotJoined, tooz_coordination.GroupNotCreated):
                LOG.warning("%s was dropped from the service list at %s (backend restarted, "
                            "or heartbeats too late); joining again", self.info.name,
                            redact_url(self.url))
                self.joined.clear()
                self._join()
        self.beats += 1
        if self._failing_since:
            away_s = clock.monotonic() - self._failing_since
            LOG.warning("registered again in the service list at %s, %.1f s after it became "
                        "unreachable", redact_url(self.url), away_s)
            self._failing_since = 0.0

    def _join(self) -> None:
        tooz_coordination = load_tooz()
        try:
            self._coordinator.create_group(self.group).get(timeout=CONNECT_TIMEOUT_S * 2)
        except tooz_coordination.GroupAlreadyExist:
            pass
        try:
            self._coordinator.join_group(self.group, self.info.to_capabilities()).get(
                timeout=CONNECT_TIMEOUT_S * 2)
        except tooz_coordination.MemberAlreadyExist:
            pass
        if not self._registered_once:
            LOG.info("registered as %r in the service list at %s", self.info.name,
                     redact_url(self.url))
            self._registered_once = True
        self.joined.set()

    def _failed(self, exc: BaseException) -> None:
        self.joined.clear()
        error = exc if isinstance(exc, CoordinationError) else CoordinationError(
            self.url, _describe(exc))
        if not self._failing_since:
            LOG.warning("service list: %s; the process goes on, retrying every %g s at most",
                        error, self.retry_max_s)
            self._failing_since = clock.monotonic()
        else:
            LOG.debug("service list: %s", error)
        if self._coordinator is not None:
            _stop_quietly(self._coordinator)
            self._coordinator = None

    def _leave(self) -> None:
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is None:
            return
        try:
            coordinator.leave_group(self.group).get(timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # the backend may be gone: the heartbeat expires anyway
            LOG.debug("leaving the service list: %s", exc)
        _stop_quietly(coordinator)
        self.joined.clear()


# -- the options every long-running part takes ------------------------------------------------


def parse_url(text: str) -> str:
    """A config value that must be a tooz URL (``scheme://...``)."""
    url = text.strip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        # Unparsed, a password cannot be told apart: such a value is not echoed.
        shown = "the value" if "@" in url or "pass" in url.lower() else repr(url)
        raise ValueError(f"{shown} is not a tooz URL (e.g. redis://127.0.0.1:6379 or "
                         "file:///var/lib/doctor/coordination)")
    return url


def url_option() -> Any:
    """The ``coordination_url`` config field (declared here once, used by every role)."""
    from doctor.config import option

    return option(default_factory=default_url, parse=parse_url, url_with_password=True,
                  default_doc="file://$DOCTOR_STATE_DIR/coordination",
                  help="tooz URL of the service list: file://DIR (one machine, no server), "
                       "redis://[:PASSWORD@]HOST:PORT, zookeeper://HOST:PORT, ...; the "
                       "process registers and heartbeats there, retrying in the background "
                       "while it is unreachable")


def heartbeat_option() -> Any:
    """The ``heartbeat_timeout_s`` config field."""
    from doctor.config import option

    return option(DEFAULT_HEARTBEAT_TIMEOUT_S, min=0.3, max=3600,
                  help="a process that stops heartbeating leaves the service list after this "
                       "long at most; heartbeats go every third of it (the file backend "
                       "rounds it up to whole seconds, and drops a dead process of this "
                       "machine at once), s")


def register(name: str, config: Any) -> ServiceRegistration:
    """Start the registration of this process as ``name``, from a role's config."""
    return ServiceRegistration(name, config.coordination_url,
                               config.heartbeat_timeout_s).start()
