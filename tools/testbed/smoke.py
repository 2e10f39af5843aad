#!/usr/bin/env python3
"""Prove the OpenStack test bed works, with the real clients.

    eval "$(tools/testbed/openstack.sh env)"
    "$DOCTOR_TESTBED_PYTHON" tools/testbed/smoke.py [--json results.json]

Checks, in order (a check whose prerequisite failed is reported as not run):
  computes_up          both nova-compute services up and not forced down
  boot_on_compute1     a server pinned to compute1 (availability_zone nova:compute1; with
                       Keystone the VNFM's, in zone doctor-compute1) goes ACTIVE, with a port on
                       DOCTOR_NETWORK_ID (DOCTOR_BOOT_NETWORKS=none: without)
  list_by_host         servers.list(host=compute1, all_tenants) finds it
  alarm_via_ceilometer an Aodh event alarm on it fires to a local HTTP receiver after
                       servers.reset_state(id, 'error'): Nova -> Ceilometer -> Aodh, the
                       conservative path
  alarm_via_shortcut   an alarm on a second server fires after a compute.instance.update event
                       is published straight to Aodh's topic alarm.all (the shortcut path)
  host_status_down     services.force_down(compute1) makes the first server's host_status DOWN
  keystone_scope       with Keystone only: the VNFM (a member) is refused force_down (403), and
                       a member of another project sees none of the VNFM's alarms and servers

With Keystone (DOCTOR_TESTBED_AUTH=keystone) every client authenticates with a password from
the bed's clouds.yaml: the operator (admin) for Nova's admin calls, the VNFM (a member of the
project the servers and alarms are in) for its boots and alarms.

Needs python-novaclient, aodhclient, oslo.messaging (the bed's aodh venv has them:
DOCTOR_TESTBED_PYTHON). Every wait is bounded; the servers and alarms are removed at the end and
compute1 is no longer forced down. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

MICROVERSION = "2.96"  # python-novaclient's newest; force_down by service id needs >= 2.53
ROLES = "admin,member,reader"

CHECKS = ["computes_up", "boot_on_compute1", "list_by_host", "alarm_via_ceilometer",
          "alarm_via_shortcut", "host_status_down", "keystone_scope"]


class Bed:
    """The test bed as `openstack.sh env` describes it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.keystone = env.get("DOCTOR_TESTBED_AUTH") == "keystone"
        need = ["DOCTOR_NOVA_URL", "DOCTOR_AODH_URL", "DOCTOR_TRANSPORT_URL",
                "DOCTOR_PROJECT_ID", "DOCTOR_USER_ID", "DOCTOR_IMAGE_ID", "DOCTOR_FLAVOR_ID"]
        if self.keystone:
            need += ["DOCTOR_CLOUDS_YAML", "DOCTOR_OS_CLOUD", "DOCTOR_VNFM_CLOUD",
                     "DOCTOR_OTHER_CLOUD"]
        missing = [k for k in need if not env.get(k)]
        if missing:
            raise SystemExit(f"smoke: missing {', '.join(missing)}: "
                             "eval \"$(tools/testbed/openstack.sh env)\" first")
        self.nova_url = env["DOCTOR_NOVA_URL"]
        self.aodh_url = env["DOCTOR_AODH_URL"]
        self.transport_url = env["DOCTOR_TRANSPORT_URL"]
        self.project_id = env["DOCTOR_PROJECT_ID"]
        self.user_id = env["DOCTOR_USER_ID"]
        self.image_id = env["DOCTOR_IMAGE_ID"]
        self.flavor_id = env["DOCTOR_FLAVOR_ID"]
        self.network_id = env.get("DOCTOR_NETWORK_ID", "")
        self.computes = env.get("DOCTOR_COMPUTE_HOSTS", "compute1,compute2").split(",")
        # Each server gets a port on the bed's network; DOCTOR_BOOT_NETWORKS=none boots without
        # one (microversion >= 2.37), which is faster.
        self.boot_networks = env.get("DOCTOR_BOOT_NETWORKS") or self.network_id or "none"
        # Aodh's listener caches a project's alarms this long: a new alarm is seen after it.
        self.alarm_cache_ttl_s = float(env.get("DOCTOR_AODH_EVENT_CACHE_TTL", "0"))
        self.host_zone = env.get("DOCTOR_HOST_ZONE") or "nova:{host}"
        self.clouds_yaml = env.get("DOCTOR_CLOUDS_YAML", "")
        self.clouds = {role: env.get(f"DOCTOR_{role.upper()}_CLOUD", "")
                       for role in ("os", "vnfm", "other")}

    def wait_alarm_cache(self) -> None:
        if self.alarm_cache_ttl_s > 0:
            time.sleep(self.alarm_cache_ttl_s + 0.1)


def keystone_session(bed: Bed, role: str) -> Any:
    """A password session of the bed's cloud for ``role`` (os: the operator, vnfm, other)."""
    import yaml
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    with open(bed.clouds_yaml, encoding="utf-8") as handle:
        auth = yaml.safe_load(handle)["clouds"][bed.clouds[role]]["auth"]
    return session.Session(auth=v3.Password(**auth), timeout=30)


def nova_client(bed: Bed, role: str = "os") -> Any:
    """novaclient: with Keystone, ``role``'s password session; without, a fixed token on Nova's
    URL and the identity in headers."""
    from keystoneauth1 import session, token_endpoint
    from novaclient import client

    if bed.keystone:
        return client.Client(MICROVERSION, session=keystone_session(bed, role))
    sess = session.Session(
        auth=token_endpoint.Token(bed.nova_url, "admin"), timeout=30,
        additional_headers={"X-User-Id": bed.user_id, "X-Project-Id": bed.project_id,
                            "X-Roles": ROLES})
    return client.Client(MICROVERSION, session=sess)


def aodh_client(bed: Bed, role: str = "vnfm") -> Any:
    """aodhclient: with Keystone, ``role``'s password session; without, auth type aodh-noauth
    (as ``aodh --os-auth-type aodh-noauth``)."""
    from aodhclient import client
    from keystoneauth1 import loading, session

    if bed.keystone:
        return client.Client("2", session=keystone_session(bed, role))
    auth = loading.get_plugin_loader("aodh-noauth").load_from_options(
        user_id=bed.user_id, project_id=bed.project_id, roles="admin",
        endpoint=bed.aodh_url)
    return client.Client("2", session=session.Session(auth=auth, timeout=30))


class Receiver:
    """A local HTTP endpoint for Aodh's alarm actions: keeps (receive time, path, body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, str, Any]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                try:
                    data = json.loads(body)
                except ValueError:
                    data = body.decode(errors="replace")
                with receiver.cond:
                    receiver.posts.append((at, self.path, data))
                    receiver.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, path: str, timeout_s: float) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for at, got, data in self.posts:
                    if got == path:
                        return at, data
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no alarm POST on {path} within {timeout_s:.0f} s")
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def vm_alarm(vm_id: str, url: str) -> dict[str, Any]:
    return {
        "name": f"smoke-{vm_id}", "type": "event", "severity": "critical",
        "event_rule": {"event_type": "compute.instance.update", "query": [
            {"field": "traits.instance_id", "op": "eq", "type": "string", "value": vm_id},
            {"field": "traits.state", "op": "eq", "type": "string", "value": "error"}]},
        "alarm_actions": [url], "repeat_actions": False,
    }


class Smoke:
    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.nova = nova_client(bed)  # the operator's: admin calls, any project's servers
        self.tenant_nova = nova_client(bed, "vnfm") if bed.keystone else self.nova
        self.aodh = aodh_client(bed)
        self.receiver = Receiver()
        self.servers: list[str] = []
        self.alarms: list[str] = []
        self.forced: list[str] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.vm1 = self.vm2 = ""

    # -- plumbing ------------------------------------------------------------------------------

    def run(self, name: str, fn: Callable[[], str], needs: tuple[str, ...] = ()) -> None:
        failed = [n for n in needs if not self.results.get(n, {}).get("ok")]
        if failed:
            self.results[name] = {"ok": False, "seconds": 0.0,
                                  "detail": f"not run: needs {', '.join(failed)}"}
        else:
            start = time.monotonic()
            try:
                detail, ok = fn(), True
            except Exception as exc:  # a check reports, the others go on
                detail, ok = f"{type(exc).__name__}: {exc}", False
            self.results[name] = {"ok": ok, "seconds": round(time.monotonic() - start, 3),
                                  "detail": detail}
        r = self.results[name]
        print(f"{'PASS' if r['ok'] else 'FAIL'} {name:22} {r['seconds']:7.2f} s  {r['detail']}",
              flush=True)

    def boot(self, name: str, host: str, timeout_s: float = 60.0) -> tuple[Any, float]:
        """A server pinned to host, ACTIVE; one retry if it hangs in BUILD (seen once, cold)."""
        nics: Any = self.bed.boot_networks
        if nics not in ("none", "auto"):
            nics = [{"net-id": nics}]
        for attempt in (1, 2):
            start = time.monotonic()
            server = self.tenant_nova.servers.create(
                name, self.bed.image_id, self.bed.flavor_id, nics=nics,
                availability_zone=self.bed.host_zone.format(host=host))
            self.servers.append(server.id)
            deadline = start + (timeout_s if attempt == 2 else timeout_s / 2)
            while time.monotonic() < deadline:
                server = self.nova.servers.get(server.id)
                if server.status == "ACTIVE":
                    return server, time.monotonic() - start
                if server.status == "ERROR":
                    fault = getattr(server, "fault", {}) or {}
                    raise AssertionError(f"{name} went to ERROR: {fault.get('message', '?')}")
                time.sleep(0.1)
            self.nova.servers.delete(server.id)
        raise AssertionError(f"{name} not ACTIVE after two boots ({server.status})")

    # -- checks --------------------------------------------------------------------------------

    def computes_up(self) -> str:
        services = {s.host: s for s in self.nova.services.list(binary="nova-compute")}
        states = {h: (services[h].state, services[h].forced_down) if h in services else None
                  for h in self.bed.computes}
        bad = {h: s for h, s in states.items() if s != ("up", False)}
        assert not bad, f"computes not up: {bad}"
        return f"{', '.join(self.bed.computes)} up"

    def boot_on_compute1(self) -> str:
        host = self.bed.computes[0]
        server, took = self.boot(f"smoke-{uuid.uuid4().hex[:8]}-1", host)
        on = getattr(server, "OS-EXT-SRV-ATTR:host", None)
        assert on == host, f"server on {on}, not {host}"
        self.vm1 = server.id
        ports = "no port" if self.bed.boot_networks == "none" else f"addresses {server.addresses}"
        return f"{server.id} ACTIVE on {host} in {took:.2f} s, {ports}"

    def list_by_host(self) -> str:
        host = self.bed.computes[0]
        start = time.monotonic()
        found = self.nova.servers.list(search_opts={"host": host, "all_tenants": True})
        took = time.monotonic() - start
        assert self.vm1 in {s.id for s in found}, f"{self.vm1} not listed on {host}"
        return f"{len(found)} server(s) on {host}, listed in {took * 1000:.0f} ms"

    def alarm_via_ceilometer(self) -> str:
        alarm = self.aodh.alarm.create(vm_alarm(self.vm1, f"{self.receiver.url}/ceilometer"))
        self.alarms.append(alarm["alarm_id"])
        self.bed.wait_alarm_cache()
        start = time.monotonic()
        self.nova.servers.reset_state(self.vm1, "error")
        called = time.monotonic() - start
        at, body = self.receiver.wait("/ceilometer", 30)
        assert body.get("alarm_id") == alarm["alarm_id"], f"unexpected alarm POST: {body}"
        traits = {t[0]: t[2] for t in body["reason_data"]["event"]["traits"]}
        assert traits.get("instance_id") == self.vm1, f"event of another VM: {traits}"
        return (f"reset_state call {called * 1000:.0f} ms, its start -> alarm POST "
                f"{(at - start) * 1000:.0f} ms")

    def alarm_via_shortcut(self) -> str:
        import oslo_messaging
        from oslo_config import cfg

        host = self.bed.computes[-1]
        server, took = self.boot(f"smoke-{uuid.uuid4().hex[:8]}-2", host)
        self.vm2 = server.id
        alarm = self.aodh.alarm.create(vm_alarm(self.vm2, f"{self.receiver.url}/shortcut"))
        self.alarms.append(alarm["alarm_id"])
        self.bed.wait_alarm_cache()
        transport = oslo_messaging.get_notification_transport(cfg.ConfigOpts(),
                                                              url=self.bed.transport_url)
        try:
            notifier = oslo_messaging.Notifier(transport, driver="messagingv2",
                                               topics=["alarm.all"], publisher_id="doctor.smoke")
            event = {
                "message_id": str(uuid.uuid4()), "event_type": "compute.instance.update",
                "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "raw": {},
                "traits": [["instance_id", 1, self.vm2], ["state", 1, "error"],
                           ["host", 1, host], ["project_id", 1, self.bed.project_id],
                           ["tenant_id", 1, self.bed.project_id]],
            }
            start = time.monotonic()
            notifier.sample({}, "event", [event])
            published = time.monotonic() - start
            at, body = self.receiver.wait("/shortcut", 30)
        finally:
            transport.cleanup()
        assert body.get("alarm_id") == alarm["alarm_id"], f"unexpected alarm POST: {body}"
        return (f"second server ACTIVE on {host} in {took:.2f} s; publish {published * 1000:.0f}"
                f" ms, publish start -> alarm POST {(at - start) * 1000:.0f} ms")

    def host_status_down(self) -> str:
        host = self.bed.computes[0]
        service = self.nova.services.list(binary="nova-compute", host=host)[0]
        start = time.monotonic()
        self.nova.services.force_down(service.id, True)
        self.forced.append(service.id)
        called = time.monotonic() - start
        status = getattr(self.nova.servers.get(self.vm1), "host_status", None)
        assert status == "DOWN", f"host_status {status!r}, expected 'DOWN'"
        self.nova.services.force_down(service.id, False)
        self.forced.remove(service.id)
        after = getattr(self.nova.servers.get(self.vm1), "host_status", None)
        assert after == "UP", f"host_status {after!r} after force_down(False), expected 'UP'"
        return f"force_down call {called * 1000:.0f} ms; host_status DOWN, then UP again"

    def keystone_scope(self) -> str:
        from keystoneauth1 import exceptions

        host = self.bed.computes[0]
        service = self.nova.services.list(binary="nova-compute", host=host)[0]
        try:
            self.tenant_nova.services.force_down(service.id, True)
        except exceptions.Forbidden:
            pass
        except Exception as exc:  # novaclient's own exception classes
            assert getattr(exc, "code", None) == 403, f"force_down as a member: {exc}"
        else:
            self.forced.append(service.id)
            raise AssertionError("the VNFM (a member) could force a compute down")
        other_aodh = aodh_client(self.bed, "other")
        seen = {a["alarm_id"] for a in other_aodh.alarm.list()}
        assert not seen & set(self.alarms), "another project sees the VNFM's alarms"
        other_nova = nova_client(self.bed, "other")
        assert not {s.id for s in other_nova.servers.list()} & set(self.servers), \
            "another project sees the VNFM's servers"
        return (f"member refused force_down (403); another project sees none of "
                f"{len(self.alarms)} alarms, {len(self.servers)} servers")

    # -- all -----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        for service_id in self.forced:
            try:
                self.nova.services.force_down(service_id, False)
            except Exception as exc:
                print(f"cleanup: could not un-force {service_id}: {exc}", file=sys.stderr)
        for alarm_id in self.alarms:
            try:
                self.aodh.alarm.delete(alarm_id)
            except Exception as exc:
                print(f"cleanup: alarm {alarm_id}: {exc}", file=sys.stderr)
        for server_id in self.servers:
            try:
                self.nova.servers.delete(server_id)
            except Exception:
                pass  # already gone (a retried boot)
        deadline = time.monotonic() + 30
        left = set(self.servers)
        while left and time.monotonic() < deadline:
            left = {s.id for s in self.nova.servers.list(search_opts={"all_tenants": True})
                    if s.id in left}
            time.sleep(0.2)
        if left:
            print(f"cleanup: servers still there after 30 s: {sorted(left)}", file=sys.stderr)
        self.receiver.close()

    def all(self) -> dict[str, dict[str, Any]]:
        try:
            self.run("computes_up", self.computes_up)
            self.run("boot_on_compute1", self.boot_on_compute1, ("computes_up",))
            self.run("list_by_host", self.list_by_host, ("boot_on_compute1",))
            self.run("alarm_via_ceilometer", self.alarm_via_ceilometer, ("boot_on_compute1",))
            self.run("alarm_via_shortcut", self.alarm_via_shortcut, ("computes_up",))
            self.run("host_status_down", self.host_status_down, ("boot_on_compute1",))
            if self.bed.keystone:
                self.run("keystone_scope", self.keystone_scope, ("alarm_via_shortcut",))
        finally:
            self.cleanup()
        return self.results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    start = time.monotonic()
    results = Smoke(Bed(dict(os.environ))).all()
    total = time.monotonic() - start
    passed = sum(r["ok"] for r in results.values())
    print(f"smoke: {passed} of {len(results)} checks passed in {total:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"checks": results, "seconds": round(total, 3)}, out, indent=1)
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
