"""Start the pipeline's parts as their own processes, the way an operator runs them.

Used by ``doctor run``, ``doctor bench notify`` and the end-to-end tests: each
part is its console script's module (``python -m inspector.cli`` ...) with its
own port, one state directory, and one profile file, so what is measured is
what runs in production, real HTTP between the parts.

Every part runs with ``auth_strategy = token``, as in production. Its secrets go in
its environment (``DOCTOR_<SECTION>_<OPTION>``), never on its command line: one
token for the parts, the notifier's ``action_secret`` as the consumer's
``alarm_secret``, and a VNFM project's token in the notifier's ``api_tokens_file``
(mode 0600), with which the VNFM's aodhclient creates its alarms.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from doctor.config import url_flag_or_env
from doctor.http import HttpClient, HttpError
from testkit.eventsink import free_port

LOG = logging.getLogger(__name__)
READY_TIMEOUT_S = 30.0
# A GET that answers 200 once a part is up.
READY_PATHS = {"notifier": "/v2/alarms", "controller": "/v1/hosts", "inspector": "/hosts",
               "consumer": "/failures"}


@dataclass
class Part:
    """One running daemon."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: str
    argv: list[str]
    env: dict[str, str]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            LOG.warning("%s did not stop within %.0f s; killing it", self.name, timeout_s)
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""


def nova_settings(env: dict[str, str]) -> dict[str, str]:
    """How the inspector reaches Nova, as ``[inspector]`` options: the operator's cloud of
    clouds.yaml (the bed with Keystone: its admin), or the bed without Keystone."""
    if env.get("DOCTOR_OS_CLOUD"):
        return {"nova_cloud": env["DOCTOR_OS_CLOUD"]}
    return {"nova_noauth_url": env["DOCTOR_NOVA_URL"], "os_project_id": env["DOCTOR_PROJECT_ID"],
            "os_user_id": env["DOCTOR_USER_ID"]}


def nova_flags(env: dict[str, str]) -> list[str]:
    """``nova_settings`` as the inspector's command-line flags."""
    return [word for name, value in nova_settings(env).items()
            for word in (f"--{name.replace('_', '-')}", value)]


@dataclass
class Pipeline:
    """Controller, Notifier, Inspector and Consumer as processes on loopback."""

    workdir: str
    shortcut: bool = True
    # The test bed's variables (tools/testbed/openstack.sh env): Nova and Aodh replace the
    # embedded controller and notifier; None: the embedded default.
    openstack: dict[str, str] | None = None
    # With ``openstack``: the notifier is real Aodh ("aodh"), or the embedded one beside Nova
    # ("embedded": a cloud without Telemetry; the VNFM's project is the servers').
    notifier: str = "aodh"
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    # The notifier signs its alarm actions with it; the consumer checks them with it.
    action_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    # The VNFM's project on the embedded notifier, and its token (api_tokens_file).
    vnfm_project: str = field(default_factory=lambda: uuid.uuid4().hex)
    vnfm_token: str = field(default_factory=lambda: secrets.token_hex(16))
    # Where every part registers for the service list; None: tooz's file driver in the
    # workdir's state directory, shared by all the parts.
    coordination_url: str | None = None
    parts: dict[str, Part] = field(default_factory=dict)

    @property
    def profile_file(self) -> str:
        return os.path.join(self.workdir, "profile.jsonl")

    @property
    def state_dir(self) -> str:
        return os.path.join(self.workdir, "state")

    @property
    def service_list_url(self) -> str:
        """The coordination URL every part registers at."""
        return self.coordination_url or f"file://{os.path.join(self.state_dir, 'coordination')}"

    @property
    def api_tokens_file(self) -> str:
        """The notifier's api_tokens_file: the VNFM's project token."""
        return os.path.join(self.workdir, "api-tokens.conf")

    @property
    def aodh(self) -> bool:
        """Whether the notifier is real Aodh (on OpenStack, unless ``notifier`` is embedded)."""
        return self.openstack is not None and self.notifier == "aodh"

    def url(self, name: str) -> str:
        if self.aodh and name == "notifier":
            return (self.openstack or {})["DOCTOR_AODH_URL"]
        return self.parts[name].url

    def action_url(self) -> str:
        """The alarm action URL of the consumer. The embedded notifier signs its POSTs; real
        Aodh cannot, so its URL carries the consumer's token (logs show it as ***)."""
        url = self.url("consumer") + "/failure"
        return url + f"?token={self.token}" if self.aodh else url

    def secrets_env(self, section: str) -> dict[str, str]:
        """The secrets of the part of ``section``, as its environment variables."""
        token, env = self.token, self.openstack or {}
        values = {
            "notifier": {"token": token, "action_secret": self.action_secret,
                         # beside Nova, conservative path: Nova's notifications, no Ceilometer
                         "nova_transport_url": env.get("DOCTOR_TRANSPORT_URL", "")
                         if not self.shortcut else ""},
            "controller": {"token": token, "notify_token": token},
            "inspector": {"token": token, "controller_token": token, "notifier_token": token,
                          "nova_transport_url": env.get("DOCTOR_TRANSPORT_URL", ""),
                          "aodh_transport_url": env.get("DOCTOR_TRANSPORT_URL", "")},
            "consumer": {"token": token, "alarm_secret": self.action_secret,
                         "controller_token": token},
            "monitor": {"inspector_token": token},
        }.get(section, {})
        return {f"DOCTOR_{section.upper()}_{name.upper()}": value
                for name, value in values.items() if value}

    def start(self) -> Pipeline:
        os.makedirs(self.workdir, exist_ok=True)
        if self.openstack is not None:
            return self._start_on_openstack()
        ports = {name: free_port() for name in ("controller", "notifier", "inspector",
                                                "consumer")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        common = ["--log-level", "INFO", "--profile-file", self.profile_file]
        # The controller's notifications keep the inspector's host map fresh; on the
        # conservative path they also carry the VM errors to the notifier.
        notify = [urls["inspector"]] + ([] if self.shortcut else [urls["notifier"]])
        self._start_notifier(ports["notifier"], common)
        self._start("controller", urls["controller"], "controller.cli",
                    ["serve", "--log-level", "INFO", "--port", str(ports["controller"]),
                     "--notify-urls", ",".join(notify)])
        self._start("inspector", urls["inspector"], "inspector.cli",
                    [*common, "--port", str(ports["inspector"]),
                     "--controller-url", urls["controller"], "--notifier-url", urls["notifier"],
                     "--shortcut", str(self.shortcut).lower()])
        self._start("consumer", urls["consumer"], "consumer.cli",
                    [*common, "--port", str(ports["consumer"])])
        for name, path in READY_PATHS.items():
            self._wait_ready(self.parts[name], path)
        return self

    def _start_notifier(self, port: int, common: list[str]) -> None:
        """The embedded notifier, with the VNFM's project token in its api_tokens_file."""
        from notifier.caller import Caller, write_api_tokens

        write_api_tokens(self.api_tokens_file, [("vnfm", self.vnfm_token, Caller(
            "doctor-vnfm", self.vnfm_project, frozenset({"member"})))])
        self._start("notifier", f"http://127.0.0.1:{port}", "notifier.cli",
                    [*common, "--port", str(port), "--api-tokens-file", self.api_tokens_file])

    def _start_on_openstack(self) -> Pipeline:
        """Nova is the controller; Aodh the notifier, or the embedded one (``notifier``).

        Shortcut: the inspector publishes to the notifier itself (to Aodh's listener on the
        bus). Conservative: it only resets the servers; Nova's notifications reach Aodh
        through Ceilometer, or the embedded notifier listens to them itself.
        """
        if self.notifier not in ("aodh", "embedded"):
            raise ValueError(f"notifier: {self.notifier!r} is not aodh or embedded")
        env = self.openstack or {}
        ports = {name: free_port() for name in ("notifier", "inspector", "consumer")}
        common = ["--log-level", "INFO", "--profile-file", self.profile_file]
        notifier = ["--notifier", "aodh"]
        if not self.aodh:
            if env.get("DOCTOR_OS_CLOUD"):  # the VNFM's alarms: for the servers' project
                self.vnfm_project = env["DOCTOR_PROJECT_ID"]
            self._start_notifier(ports["notifier"], common)
            notifier = ["--notifier", "http", "--notifier-url", self.parts["notifier"].url]
        # The transport URLs (they hold RabbitMQ's password) go in the inspector's environment.
        self._start("inspector", f"http://127.0.0.1:{ports['inspector']}", "inspector.cli",
                    [*common, "--port", str(ports["inspector"]),
                     "--controller", "nova", *nova_flags(env), *notifier,
                     "--shortcut", str(self.shortcut).lower()])
        self._start("consumer", f"http://127.0.0.1:{ports['consumer']}", "consumer.cli",
                    [*common, "--port", str(ports["consumer"])])
        for name in self.parts:
            self._wait_ready(self.parts[name], READY_PATHS[name])
        return self

    def start_monitor(self, argv: list[str]) -> Part:
        """``doctor-monitor`` with ``argv``, pointed at this inspector; stopped with the rest."""
        self._start("monitor", "", "monitor.cli",
                    ["--inspector-url", self.url("inspector"), "--profile-file",
                     self.profile_file, *argv])
        return self.parts["monitor"]

    def start_another(self, like: str, name: str) -> Part:
        """One more process of part ``like`` on a free port, sharing its state directory (the
        same database and coordination backend): a part scaled out. Waited for."""
        part = self.parts[like]
        argv = list(part.argv[3:])  # after: python -m module
        port = free_port()
        argv[argv.index("--port") + 1] = str(port)
        self._start(name, f"http://127.0.0.1:{port}", part.argv[2], argv)
        self._wait_ready(self.parts[name], READY_PATHS[like])
        return self.parts[name]

    def _start(self, name: str, url: str, module: str, argv: list[str]) -> None:
        log_path = os.path.join(self.workdir, f"{name}.log")
        section = module.split(".")[0]
        url_flag, url_env = url_flag_or_env(section, "coordination_url", self.service_list_url)
        env = {**os.environ, "DOCTOR_STATE_DIR": self.state_dir, **self.secrets_env(section),
               **url_env}
        argv = [sys.executable, "-m", module, *argv, *url_flag]
        with open(log_path, "a") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.parts[name] = Part(name, url, process, log_path, argv, env)

    def restart(self, name: str) -> Part:
        """Start a stopped (or killed) part again, same options, same state; wait for it."""
        part = self.parts[name]
        part.stop()
        with open(part.log_path, "a") as log:
            part.process = subprocess.Popen(part.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=part.env)
        self._wait_ready(part, READY_PATHS[name])
        return part

    def headers(self) -> dict[str, str]:
        """What every client of these parts sends: the token (on the embedded notifier's
        /v2, the service: admin of project service)."""
        return {"X-Auth-Token": self.token}

    def client(self, timeout_s: float = 10.0) -> HttpClient:
        """An HTTP client that sends ``headers()``."""
        return HttpClient(timeout_s, headers=self.headers())

    def _wait_ready(self, part: Part, path: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        client = self.client(timeout_s=1.0)
        while time.monotonic() < deadline:
            if not part.alive():
                raise RuntimeError(f"{part.name} exited at start:\n{part.log_tail()}")
            try:
                if client.get(part.url + path).ok:
                    client.close()
                    return
            except HttpError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{part.name} not ready within {READY_TIMEOUT_S:.0f} s:\n"
                           f"{part.log_tail()}")

    def stop(self) -> None:
        for part in reversed(list(self.parts.values())):
            part.stop()
