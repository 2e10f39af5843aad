#!/usr/bin/env python3
"""The test bed's resources, made through the real APIs (stdlib only; openstack.sh up runs it).

    provision.py identity    # keystone mode: projects, users, roles, catalog; KEY=VALUE lines
    provision.py token       # keystone mode: prints "X-Auth-Token: <admin's token>"
    provision.py resources   # flavor, image, network + subnet; prints KEY=VALUE lines
    provision.py computes    # waits until every compute is up in Nova, clears forced_down;
                             # keystone mode: each compute an availability zone doctor-<host>

All are idempotent: what exists is reused. Every request has a timeout, every wait a bound.
Settings come from the environment (TESTBED_AUTH, TESTBED_NOVA_URL, TESTBED_PROJECT_ID, ...);
the passwords from the file TESTBED_PASSWORDS names, never from the command line.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

ENV = os.environ
KEYSTONE = ENV.get("TESTBED_AUTH", "noauth") == "keystone"
HEADERS = {
    "X-Auth-Token": "admin",
    "X-User-Id": ENV.get("TESTBED_USER_ID", ""),
    "X-Project-Id": ENV.get("TESTBED_PROJECT_ID", ""),
    "X-Roles": "admin,member,reader",
    "OpenStack-API-Version": "compute 2.96",
    "Accept": "application/json",
}
# keystone mode: who is who. name: (project, role, password key); the service users share one.
USERS = {
    "doctor": ("doctor", "admin", "DOCTOR_PASSWORD"),
    "vnfm": ("vnf", "member", "VNFM_PASSWORD"),
    "other": ("other", "member", "OTHER_PASSWORD"),
}
SERVICE_USERS = ("nova", "placement", "glance", "neutron", "aodh")
# The catalog: type, name, URL (the same for the public, internal and admin interfaces).
CATALOG = (
    ("compute", "nova", "http://127.0.0.1:8774/v2.1"),
    ("placement", "placement", "http://127.0.0.1:8778"),
    ("image", "glance", "http://127.0.0.1:9292"),
    ("network", "neutron", "http://127.0.0.1:9696"),
    ("alarming", "aodh", "http://127.0.0.1:8042"),
)


def passwords() -> dict[str, str]:
    with open(ENV["TESTBED_PASSWORDS"], encoding="utf-8") as handle:
        return dict(line.strip().split("=", 1) for line in handle if "=" in line)


def keystone_token(username: str, password: str, project: str) -> str:
    """A project-scoped token of a user of the Default domain."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": username, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    request = urllib.request.Request(
        f"{ENV['TESTBED_KEYSTONE_URL']}/v3/auth/tokens", data=json.dumps(body).encode(),
        method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["X-Subject-Token"]


def authenticate() -> None:
    """keystone mode: every call as the admin, with a token instead of identity headers."""
    token = keystone_token("admin", passwords()["ADMIN_PASSWORD"], "admin")
    for name in ("X-User-Id", "X-Project-Id", "X-Roles"):
        HEADERS.pop(name, None)
    HEADERS["X-Auth-Token"] = token


def call(method: str, url: str, body: Any = None, raw: bytes | None = None,
         timeout: float = 30.0, expect: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
    """One request; the decoded JSON answer (or None). Raises on an unexpected status."""
    headers = dict(HEADERS)
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif raw is not None:
        headers["Content-Type"] = "application/octet-stream"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    if status not in expect:
        raise RuntimeError(f"{method} {url}: HTTP {status}: {text[:500]!r}")
    return json.loads(text) if text.strip() else None


def flavor(nova: str) -> str:
    name = ENV.get("FLAVOR_NAME", "doctor.tiny")
    for item in call("GET", f"{nova}/flavors?is_public=None")["flavors"]:
        if item["name"] == name:
            return item["id"]
    made = call("POST", f"{nova}/flavors", {"flavor": {
        "name": name, "id": name.replace(".", "-"), "ram": 64, "vcpus": 1, "disk": 1}})
    return made["flavor"]["id"]


def image(glance: str) -> str:
    name = ENV.get("IMAGE_NAME", "doctor-tiny")
    for item in call("GET", f"{glance}/v2/images?name={name}")["images"]:
        if item["status"] == "active":
            return item["id"]
        call("DELETE", f"{glance}/v2/images/{item['id']}")  # a half-made one
    made = call("POST", f"{glance}/v2/images", {
        "name": name, "disk_format": "raw", "container_format": "bare",
        "visibility": "public"})  # every project boots from it
    # The fake driver never reads it: 1 KiB is enough for Nova to accept it.
    call("PUT", f"{glance}/v2/images/{made['id']}/file", raw=b"\0" * 1024)
    status = call("GET", f"{glance}/v2/images/{made['id']}")["status"]
    if status != "active":
        raise RuntimeError(f"image {made['id']} is {status} after the upload")
    return made["id"]


def network(neutron: str) -> tuple[str, str]:
    name = ENV.get("NETWORK_NAME", "doctor-net")
    nets = call("GET", f"{neutron}/v2.0/networks?name={name}")["networks"]
    if nets:
        net_id = nets[0]["id"]
    else:
        net_id = call("POST", f"{neutron}/v2.0/networks", {"network": {
            "name": name, "project_id": ENV["TESTBED_PROJECT_ID"], "shared": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1"}})["network"]["id"]
    subnets = call("GET", f"{neutron}/v2.0/subnets?network_id={net_id}")["subnets"]
    if subnets:
        return net_id, subnets[0]["id"]
    # 192.0.2.0/24 is a documentation range: nothing is ever sent there (no agents, no ports
    # wired anywhere); it only gives Neutron's IPAM something to hand out.
    subnet = call("POST", f"{neutron}/v2.0/subnets", {"subnet": {
        "network_id": net_id, "project_id": ENV["TESTBED_PROJECT_ID"],
        "name": f"{name}-subnet", "ip_version": 4,
        "cidr": "192.0.2.0/24", "enable_dhcp": False, "gateway_ip": None}})
    return net_id, subnet["subnet"]["id"]


def one(listing: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    if len(listing) > 1:
        raise RuntimeError(f"{len(listing)} {what} where one was expected")
    return listing[0] if listing else None


def ensure(keystone: str, kind: str, query: str, body: dict[str, Any]) -> str:
    """The id of the ``kind`` (projects, users, services) ``query`` finds, made if missing."""
    found = one(call("GET", f"{keystone}/v3/{kind}?{query}")[kind], kind)
    if found:
        return found["id"]
    return call("POST", f"{keystone}/v3/{kind}", {kind[:-1]: body})[kind[:-1]]["id"]


def identity() -> None:
    """Projects, users and role assignments, the catalog; prints the ids as KEY=VALUE."""
    keystone, secret = ENV["TESTBED_KEYSTONE_URL"], passwords()
    roles = {r["name"]: r["id"] for r in call("GET", f"{keystone}/v3/roles")["roles"]}
    assign: list[tuple[str, str, str]] = []  # project id, user id, role name
    service = ensure(keystone, "projects", "name=service",
                     {"name": "service", "domain_id": "default"})
    for user in SERVICE_USERS:  # admin for Nova's port bindings, service for token checks
        uid = ensure(keystone, "users", f"name={user}", {
            "name": user, "domain_id": "default", "password": secret["SERVICE_PASSWORD"]})
        assign += [(service, uid, "admin"), (service, uid, "service")]
    ids: dict[str, str] = {}
    for user, (project, role, key) in USERS.items():
        pid = ensure(keystone, "projects", f"name={project}",
                     {"name": project, "domain_id": "default"})
        uid = ensure(keystone, "users", f"name={user}", {
            "name": user, "domain_id": "default", "password": secret[key],
            "default_project_id": pid})
        assign.append((pid, uid, role))
        ids[f"{project.upper()}_PROJECT_ID"], ids[f"{user.upper()}_USER_ID"] = pid, uid
    for pid, uid, role in assign:
        call("PUT", f"{keystone}/v3/projects/{pid}/users/{uid}/roles/{roles[role]}")
    for kind, name, url in CATALOG:
        sid = ensure(keystone, "services", f"type={kind}", {"type": kind, "name": name})
        have = {e["interface"] for e in call(
            "GET", f"{keystone}/v3/endpoints?service_id={sid}")["endpoints"]}
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                call("POST", f"{keystone}/v3/endpoints", {"endpoint": {
                    "service_id": sid, "interface": interface, "url": url,
                    "region_id": "RegionOne"}})
    print("\n".join(f"{key}={value}" for key, value in sorted(ids.items())))


def zones(nova: str, hosts: list[str]) -> None:
    """keystone mode: each compute in an availability zone of its own, ``doctor-<host>``, so
    that a member (who may not name a host) can still boot on a given compute."""
    have = {a["name"]: a for a in call("GET", f"{nova}/os-aggregates")["aggregates"]}
    for host in hosts:
        name = f"doctor-{host}"
        aggregate = have.get(name) or call("POST", f"{nova}/os-aggregates", {"aggregate": {
            "name": name, "availability_zone": name}})["aggregate"]
        if host not in aggregate.get("hosts", []):
            call("POST", f"{nova}/os-aggregates/{aggregate['id']}/action",
                 {"add_host": {"host": host}})


def resources() -> None:
    nova, glance = ENV["TESTBED_NOVA_URL"], ENV["TESTBED_GLANCE_URL"]
    neutron = ENV["TESTBED_NEUTRON_URL"]
    flavor_id = flavor(nova)
    image_id = image(glance)
    net_id, subnet_id = network(neutron)
    print(f"FLAVOR_ID={flavor_id}\nIMAGE_ID={image_id}\nNETWORK_ID={net_id}\nSUBNET_ID={subnet_id}")


def computes(timeout_s: float = 90.0) -> None:
    """Every compute up and enabled, not forced down (a test may have left one down)."""
    nova = ENV["TESTBED_NOVA_URL"]
    hosts = ENV.get("TESTBED_COMPUTES", "compute1 compute2").split()
    deadline = time.monotonic() + timeout_s
    while True:
        services = {s["host"]: s for s in call(
            "GET", f"{nova}/os-services?binary=nova-compute")["services"]}
        for host in hosts:
            svc = services.get(host)
            if svc and (svc["forced_down"] or svc["status"] != "enabled"):
                call("PUT", f"{nova}/os-services/{svc['id']}",
                     {"forced_down": False, "status": "enabled"})
                print(f"{host}: cleared forced_down / enabled", file=sys.stderr)
                svc["forced_down"], svc["state"] = False, "?"
        hypervisors = {h["hypervisor_hostname"] for h in call(
            "GET", f"{nova}/os-hypervisors")["hypervisors"]}
        missing = [h for h in hosts if h not in services or services[h]["state"] != "up"
                   or h not in hypervisors]
        if not missing:
            if KEYSTONE:
                zones(nova, hosts)
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"computes not up in Nova after {timeout_s:.0f} s: {missing}")
        time.sleep(0.5)


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if KEYSTONE and what in ("identity", "token", "resources", "computes"):
        authenticate()
    if what == "identity":
        identity()
    elif what == "token":
        print(f"X-Auth-Token: {HEADERS['X-Auth-Token']}")
    elif what == "resources":
        resources()
    elif what == "computes":
        computes()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
