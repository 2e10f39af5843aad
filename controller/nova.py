"""The Controller on OpenStack Nova, through python-novaclient.

- mark a host down: ``services.force_down``; from microversion 2.53 services
  are addressed by id, from 2.11 to 2.52 by host and binary;
- the VMs of a host: ``servers.list(search_opts={'host': H, 'all_tenants':
  True})``, all pages;
- reset a VM: ``servers.reset_state(id, state)``;
- ``host_status`` of a server needs 2.16 or later.
The microversion is the newest that both novaclient and the server speak.

With Keystone (a password in clouds.yaml) the session's token is renewed ahead of its
expiry by a keeper thread, and Nova is shown the new token once before the driver uses it:
a token Nova has not seen costs a validation with Keystone in each request that carries it,
and the ten parallel calls of one failed host with a fresh token took ~1 s instead of 60 ms
on the test bed. keystoneauth's own renewal (when a token has less than 120 s left) and its
retry of a request answered 401 stay underneath, should the keeper fall behind.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from controller.base import Controller, ControllerError, NotFound, Server

LOG = logging.getLogger(__name__)
NEEDED = (2, 16)  # host_status; force_down itself needs 2.11
SERVICE_ID_FROM = (2, 53)
# The keeper looks at the token this often, and renews it once it has less than
# keystoneauth's own margin (120 s) plus two looks left, so that keystoneauth never renews
# it on a failure's path.
KEEP_CHECK_S = 20.0
RENEW_MARGIN_S = 120.0 + 2 * KEEP_CHECK_S


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


class NovaController(Controller):
    """Nova as the Inspector's Controller; errors become ControllerError or NotFound."""

    def __init__(self, session: Any, microversion: str = "auto",
                 endpoint_override: str | None = None) -> None:
        from novaclient import exceptions

        self._exceptions = exceptions
        self._session = session
        self._wanted = microversion
        self._endpoint = endpoint_override
        self._nova: Any = None
        self._lock = threading.Lock()
        self.version: tuple[int, int] | None = None
        self._service_ids: dict[str, str] = {}
        self._closed = threading.Event()
        self.renewals = 0  # tokens the keeper renewed and showed Nova
        auth = getattr(session, "auth", None)
        if hasattr(auth, "get_auth_ref") and hasattr(auth, "auth_ref"):  # Keystone identity
            threading.Thread(target=self._keep_token, args=(auth,), name="nova-token-keeper",
                             daemon=True).start()

    def _keep_token(self, auth: Any) -> None:
        while not self._closed.wait(KEEP_CHECK_S):
            current = auth.auth_ref
            if current is None or not current.will_expire_soon(RENEW_MARGIN_S):
                continue
            try:
                self.renew_token(auth)
            except Exception as exc:  # Keystone or Nova away: try again at the next look
                LOG.warning("could not renew the Nova token ahead of its expiry (%s); "
                            "trying again in %.0f s", exc, KEEP_CHECK_S)

    def renew_token(self, auth: Any) -> None:
        """A new token from Keystone, shown to Nova once (which validates and caches it),
        then put in the session for the calls that follow."""
        fresh = auth.get_auth_ref(self._session)
        endpoint = self._endpoint or self._session.get_endpoint(service_type="compute",
                                                                interface="public")
        answer = self._session.get(
            endpoint.rstrip("/") + "/os-services?binary=nova-compute", authenticated=False,
            headers={"X-Auth-Token": fresh.auth_token}, raise_exc=False)
        if answer.status_code >= 400:
            raise ControllerError(f"nova answered {answer.status_code} to the new token")
        auth.auth_ref = fresh
        self.renewals += 1
        LOG.info("renewed the Nova token ahead of its expiry (the new one expires at %s; "
                 "Nova has validated it)", fresh.expires.isoformat())

    @property
    def nova(self) -> Any:
        """The client, on the negotiated microversion: negotiated at first use, so an
        inspector started while Nova is down comes up and says so, then catches up."""
        with self._lock:
            if self._nova is None:
                self._nova = self._negotiate()
            return self._nova

    def _negotiate(self) -> Any:
        import novaclient
        from novaclient import client

        microversion = self._wanted
        if microversion == "auto":
            probe = client.Client("2.1", session=self._session,
                                  endpoint_override=self._endpoint)
            try:
                current = probe.versions.get_current()
            except Exception as exc:
                raise ControllerError(f"nova unreachable: {exc}") from None
            server_max = _version(current.version or "2.1")
            client_max = _version(novaclient.API_MAX_VERSION.get_string())
            major, minor = min(server_max, client_max)
            microversion = f"{major}.{minor}"
        version = _version(microversion)
        if version < NEEDED:
            raise ControllerError(f"nova microversion {microversion} is too old: need "
                                  f"{NEEDED[0]}.{NEEDED[1]} or later (host_status)")
        self.version = version
        LOG.info("nova controller on microversion %s", microversion)
        return client.Client(microversion, session=self._session,
                             endpoint_override=self._endpoint)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._exceptions.NotFound as exc:
            raise NotFound(f"{what}: {exc}") from None
        except Exception as exc:  # novaclient and keystoneauth raise many kinds
            raise ControllerError(f"{what}: {type(exc).__name__}: {exc}") from None

    def list_servers(self, host: str | None = None) -> list[Server]:
        search: dict[str, Any] = {"all_tenants": True}
        if host is not None:
            search["host"] = host
        servers = self._call("list servers", self.nova.servers.list, detailed=True,
                             search_opts=search, limit=-1)
        return [Server(id=s.id, name=s.name, project_id=s.tenant_id,
                       host=getattr(s, "OS-EXT-SRV-ATTR:host", None) or "",
                       state=getattr(s, "OS-EXT-STS:vm_state", None) or "")
                for s in servers]

    def force_down(self, host: str, down: bool = True) -> None:
        services = self.nova.services
        if self.version is not None and self.version >= SERVICE_ID_FROM:
            service_id = self._service_ids.get(host)
            if service_id is None:
                found = self._call(f"find nova-compute on {host}", services.list, host=host,
                                   binary="nova-compute")
                if not found:
                    raise NotFound(f"no nova-compute service on host {host}")
                service_id = self._service_ids[host] = found[0].id
            self._call(f"force {host} down={down}", services.force_down, service_id, down)
        else:
            self._call(f"force {host} down={down}", services.force_down, host,
                       "nova-compute", down)

    def reset_state(self, server_id: str, state: str = "error") -> None:
        self._call(f"reset {server_id} to {state}", self.nova.servers.reset_state, server_id,
                   state)

    def host_status(self, server_id: str) -> str:
        server = self._call(f"show {server_id}", self.nova.servers.get, server_id)
        return getattr(server, "host_status", "") or "UNKNOWN"

    def close(self) -> None:
        self._closed.set()
