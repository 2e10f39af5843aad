"""A throw-away Keystone for the tests of ``auth_strategy = keystone``.

Real Keystone (30.x) from its own venv (``tools/testbed/openstack.sh install`` makes
``/opt/doctor-testbed/venvs/keystone``; ``DOCTOR_KEYSTONE_VENV`` names another), set up in
a directory of the test's own: a SQLite database, Fernet token and credential keys
(``keystone-manage db_sync, fernet_setup, credential_setup, bootstrap``), then served by that
venv's gunicorn (``keystone.wsgi.api:application`` through
``tools/testbed/wsgi/keystone_api.py``, which clears ``sys.argv``; Keystone reads
``keystone.conf`` from ``OS_KEYSTONE_CONFIG_DIR``) on a free loopback port, and stopped by
PID. Never the system's Keystone. The admin's password goes to ``keystone-manage bootstrap`` in the
environment (``OS_BOOTSTRAP_PASSWORD``), never on a command line.

``KeystoneServer.admin()`` is a small client of Keystone's REST API (projects, users, role
assignments, tokens and their revocation); every call has a timeout.
"""

from __future__ import annotations

import getpass
import grp
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import requests

from doctor.signals import terminate_all
from testkit.eventsink import free_port

DEFAULT_VENV = "/opt/doctor-testbed/venvs/keystone"
# keystone_api.py: the application, with sys.argv cleared (gunicorn's options are not its)
WSGI_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                        "testbed", "wsgi")
VENV_ENV = "DOCTOR_KEYSTONE_VENV"
READY_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 10.0
ADMIN_USER = ADMIN_PROJECT = "admin"
DOMAIN = "default"


class KeystoneNotInstalled(RuntimeError):
    """No Keystone venv (``tools/testbed/openstack.sh install``, as root, makes it)."""


def keystone_venv() -> str | None:
    """The venv with keystone-manage and gunicorn, or None."""
    venv = os.environ.get(VENV_ENV, "").strip() or DEFAULT_VENV
    needed = [os.path.join(venv, "bin", name) for name in ("keystone-manage", "gunicorn")]
    return venv if all(os.access(path, os.X_OK) for path in needed) else None


@dataclass(frozen=True)
class Credentials:
    """A user's password credentials, and the project a token of theirs is scoped to."""

    user_id: str
    username: str
    password: str
    project_id: str
    project_name: str


class KeystoneServer:
    """One Keystone in ``workdir``; ``url`` is its v3 API (``http://127.0.0.1:N/v3``).

    ``token_expiration_s``: the lifetime of its tokens (Keystone's ``[token] expiration``).
    """

    def __init__(self, workdir: str, port: int = 0, token_expiration_s: int = 3600) -> None:
        venv = keystone_venv()
        if venv is None:
            raise KeystoneNotInstalled(
                f"no Keystone venv at {os.environ.get(VENV_ENV) or DEFAULT_VENV} (with "
                f"keystone-manage and gunicorn); as root: tools/testbed/openstack.sh install, "
                f"or set {VENV_ENV}")
        self.venv = venv
        self.workdir = os.path.abspath(workdir)
        self.port = port or free_port()
        self.token_expiration_s = token_expiration_s
        self.admin_password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(self.workdir, "keystone.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, "keystone.conf")

    def _write_config(self) -> None:
        keys = os.path.join(self.workdir, "fernet-keys")
        text = (
            "[DEFAULT]\n"
            "debug = false\n"
            "[database]\n"
            f"connection = sqlite:///{os.path.join(self.workdir, 'keystone.db')}\n"
            "[token]\n"
            "provider = fernet\n"
            f"expiration = {int(self.token_expiration_s)}\n"
            "[fernet_tokens]\n"
            f"key_repository = {keys}\n"
            "[fernet_receipts]\n"
            f"key_repository = {keys}\n"
            "[credential]\n"
            f"key_repository = {os.path.join(self.workdir, 'credential-keys')}\n"
            "[identity]\n"
            "password_hash_rounds = 4\n"
            "[cache]\n"
            "enabled = false\n"
        )
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)

    def _manage(self, *args: str, env: dict[str, str] | None = None) -> None:
        argv = [os.path.join(self.venv, "bin", "keystone-manage"), "--config-file",
                self.config_path, *args]
        with open(self.log_path, "a") as log:
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                    env={**os.environ, **(env or {})}, timeout=SETUP_TIMEOUT_S,
                                    check=False)
        if result.returncode != 0:
            raise RuntimeError(f"keystone-manage {args[0]} failed with status "
                               f"{result.returncode} (see {self.log_path})")

    def setup(self) -> None:
        """The database, the keys and the admin (with project admin, role admin)."""
        os.makedirs(self.workdir, exist_ok=True)
        self._write_config()
        owner = ["--keystone-user", getpass.getuser(),
                 "--keystone-group", grp.getgrgid(os.getegid()).gr_name]
        self._manage("db_sync")
        self._manage("fernet_setup", *owner)
        self._manage("credential_setup", *owner)
        self._manage("bootstrap", "--bootstrap-username", ADMIN_USER,
                     "--bootstrap-project-name", ADMIN_PROJECT,
                     "--bootstrap-role-name", "admin",
                     "--bootstrap-service-name", "keystone",
                     "--bootstrap-region-id", "RegionOne",
                     "--bootstrap-admin-url", self.url, "--bootstrap-public-url", self.url,
                     "--bootstrap-internal-url", self.url,
                     env={"OS_BOOTSTRAP_PASSWORD": self.admin_password})

    def start(self) -> KeystoneServer:
        if not os.path.exists(os.path.join(self.workdir, "keystone.db")):
            self.setup()
        env = {**os.environ, "OS_KEYSTONE_CONFIG_DIR": self.workdir}
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [os.path.join(self.venv, "bin", "gunicorn"), "--no-control-socket", "--bind",
                 f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "8",
                 "--timeout", "60", "--graceful-timeout", "3", "--pythonpath", WSGI_DIR,
                 "keystone_api:application"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"keystone (gunicorn) exited at start (see {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"keystone not ready within {READY_TIMEOUT_S:g} s "
                                   f"(see {self.log_path})")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        try:
            return requests.get(self.url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate_all([process])

    def admin(self) -> KeystoneAdmin:
        """A client with a token of the admin (project admin)."""
        return KeystoneAdmin(self.url, Credentials("", ADMIN_USER, self.admin_password, "",
                                                   ADMIN_PROJECT))

    def __enter__(self) -> KeystoneServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _check(response: requests.Response, what: str) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"keystone {what}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


def issue_token(url: str, user: Credentials) -> str:
    """A project-scoped token of ``user`` (password auth)."""
    project: dict[str, Any] = ({"id": user.project_id} if user.project_id else
                               {"name": user.project_name, "domain": {"id": DOMAIN}})
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user.username, "domain": {"id": DOMAIN}, "password": user.password}}},
        "scope": {"project": project}}}
    response = requests.post(f"{url}/auth/tokens", json=body, timeout=HTTP_TIMEOUT_S)
    _check(response, f"token of {user.username}")
    return response.headers["X-Subject-Token"]


class KeystoneAdmin:
    """Keystone's v3 REST API as its admin: projects, users, roles, tokens, trusts."""

    def __init__(self, url: str, admin: Credentials) -> None:
        self.url = url
        self.token = issue_token(url, admin)

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        headers = {"X-Auth-Token": self.token, **kwargs.pop("headers", {})}
        response = requests.request(method, f"{self.url}{path}", headers=headers,
                                    timeout=HTTP_TIMEOUT_S, **kwargs)
        return _check(response, what)

    def role_id(self, name: str) -> str:
        roles = self._call("GET", "/roles", f"role {name}", params={"name": name})["roles"]
        if not roles:
            return self._call("POST", "/roles", f"role {name}",
                              json={"role": {"name": name}})["role"]["id"]
        return roles[0]["id"]

    def create_project(self, name: str) -> str:
        return self._call("POST", "/projects", f"project {name}", json={"project": {
            "name": name, "domain_id": DOMAIN, "enabled": True}})["project"]["id"]

    def create_user(self, name: str, project_id: str, project_name: str,
                    roles: tuple[str, ...] = ("member",)) -> Credentials:
        """A user with ``roles`` on ``project_id``; its password is random."""
        password = secrets.token_urlsafe(18)
        user_id = self._call("POST", "/users", f"user {name}", json={"user": {
            "name": name, "domain_id": DOMAIN, "password": password, "enabled": True,
            "default_project_id": project_id}})["user"]["id"]
        for role in roles:
            self.assign(user_id, project_id, role)
        return Credentials(user_id, name, password, project_id, project_name)

    def assign(self, user_id: str, project_id: str, role: str) -> None:
        self._call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}",
                   f"role {role}")

    def token_for(self, user: Credentials) -> str:
        return issue_token(self.url, user)

    def revoke(self, token: str) -> None:
        """Revoke ``token`` (``DELETE /v3/auth/tokens``)."""
        self._call("DELETE", "/auth/tokens", "revoke", headers={"X-Subject-Token": token})

    def trust_token(self, trustor: Credentials, trustor_token: str, trustee: Credentials,
                    roles: tuple[str, ...] = ("member",)) -> str:
        """A trust-scoped token: ``trustor`` delegates ``roles`` on its project to
        ``trustee``, as Aodh's ``trust+http`` alarms do, and the trustee's token of it."""
        response = requests.post(f"{self.url}/OS-TRUST/trusts", timeout=HTTP_TIMEOUT_S,
                                 headers={"X-Auth-Token": trustor_token}, json={"trust": {
                                     "trustor_user_id": trustor.user_id,
                                     "trustee_user_id": trustee.user_id,
                                     "project_id": trustor.project_id,
                                     "impersonation": False,
                                     "roles": [{"name": r} for r in roles]}})
        trust_id = _check(response, "trust")["trust"]["id"]
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": trustee.username, "domain": {"id": DOMAIN},
            "password": trustee.password}}},
            "scope": {"OS-TRUST:trust": {"id": trust_id}}}}
        response = requests.post(f"{self.url}/auth/tokens", json=body, timeout=HTTP_TIMEOUT_S)
        _check(response, "trust-scoped token")
        return response.headers["X-Subject-Token"]
