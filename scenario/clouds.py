"""The cloud a scenario or benchmark boots its VMs in: the embedded controller, or Nova."""

from __future__ import annotations

import logging
import time
from typing import Any

from scenario.pipeline import Pipeline

LOG = logging.getLogger(__name__)


class ScenarioError(RuntimeError):
    """A step failed; the message says which and why."""


def wait_for(what: str, predicate: Any, timeout_s: float, interval_s: float = 0.02) -> Any:
    """The predicate's first truthy value; ScenarioError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise ScenarioError(f"timed out after {timeout_s:g} s waiting for {what}")


class LocalCloud:
    """The embedded controller as the cloud: VMs booted through its API."""

    def __init__(self, pipeline: Pipeline) -> None:
        from controller.client import ControllerClient

        self.controller = ControllerClient(pipeline.url("controller"), pipeline.token)

    def boot(self, count: int, host: str, project: str) -> list[str]:
        return [self.controller.create_server(f"doctor_vm{i}", project, host).id
                for i in range(count)]

    def host_status(self, vm: str) -> str:
        return self.controller.host_status(vm)

    def reset(self, vm: str, state: str) -> None:
        self.controller.reset_state(vm, state)

    def cleanup(self) -> None:
        self.controller.close()


def operator_cloud(env: dict[str, str], project: str = "") -> Any:
    """The operator's session (admin): a cloud of clouds.yaml (``DOCTOR_OS_CLOUD``), or the
    test bed without Keystone in ``project`` (default ``DOCTOR_PROJECT_ID``), in headers."""
    from doctor.openstack import open_cloud

    if env.get("DOCTOR_OS_CLOUD"):
        return open_cloud(env["DOCTOR_OS_CLOUD"])
    return open_cloud(noauth_url=env["DOCTOR_NOVA_URL"],
                      project_id=project or env["DOCTOR_PROJECT_ID"],
                      user_id=env["DOCTOR_USER_ID"])


def vnfm_cloud(env: dict[str, str], project: str = "") -> Any:
    """The VNFM's session, which boots the VMs and owns their alarms: its cloud of clouds.yaml
    (``DOCTOR_VNFM_CLOUD``, a member of the VMs' project), else the operator's."""
    from doctor.openstack import open_cloud

    if env.get("DOCTOR_VNFM_CLOUD"):
        return open_cloud(env["DOCTOR_VNFM_CLOUD"])
    return operator_cloud(env, project)


def host_zone(env: dict[str, str], host: str) -> str:
    """The availability zone that puts a server on ``host``: ``DOCTOR_HOST_ZONE`` with
    ``{host}`` (the test bed with Keystone has a zone per compute, which a member may name),
    else ``nova:{host}``, which only an admin may."""
    return (env.get("DOCTOR_HOST_ZONE") or "nova:{host}").format(host=host)


def nova_client(cloud: Any, env: dict[str, str]) -> Any:
    """novaclient on a session, at the newest microversion novaclient knows."""
    from novaclient import client

    return client.Client("2.96", session=cloud.session,
                         endpoint_override=env.get("DOCTOR_NOVA_URL") or None)


class OpenStackCloud:
    """Nova as the cloud: the VNFM boots the servers on the compute host to fail; the
    operator (admin) reads their host_status and resets their state."""

    def __init__(self, env: dict[str, str], project: str) -> None:
        self.env = env
        # On the bed without Keystone: the project of this run, in noauth headers.
        self.nova = nova_client(operator_cloud(env, project), env)
        self.tenant = nova_client(vnfm_cloud(env, project), env) \
            if env.get("DOCTOR_VNFM_CLOUD") else self.nova
        self.booted: list[str] = []

    def boot(self, count: int, host: str, project: str) -> list[str]:
        del project  # the session's project owns them
        first = len(self.booted)
        for i in range(count):
            server = self.tenant.servers.create(
                f"doctor_vm{i}", self.env["DOCTOR_IMAGE_ID"], self.env["DOCTOR_FLAVOR_ID"],
                nics=[{"net-id": self.env["DOCTOR_NETWORK_ID"]}],
                availability_zone=host_zone(self.env, host))
            self.booted.append(server.id)
        new = self.booted[first:]

        def all_active() -> bool:  # one listing per poll, not one GET per server
            status = {s.id: s.status for s in self.tenant.servers.list()}
            failed = [vm for vm in new if status.get(vm) == "ERROR"]
            if failed:
                raise ScenarioError(f"servers failed to boot on {host}: {', '.join(failed)}")
            return all(status.get(vm) == "ACTIVE" for vm in new)

        wait_for(f"{count} servers ACTIVE on {host}", all_active, 30 + 2 * count,
                 interval_s=0.5)
        return new

    def host_status(self, vm: str) -> str:
        return getattr(self.nova.servers.get(vm), "host_status", "") or "UNKNOWN"

    def reset(self, vm: str, state: str) -> None:
        self.nova.servers.reset_state(vm, state)

    def cleanup(self) -> None:
        booted, self.booted = self.booted, []
        for server in booted:
            try:
                self.nova.servers.delete(server)
            except Exception as exc:  # best effort: say what is left behind
                LOG.warning("server %s not deleted: %s", server, exc)
