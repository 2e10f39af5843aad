#!/usr/bin/env python3
"""The test bed's resources, made through the real APIs (stdlib only; openstack.sh up runs it).

    provision.py resources   # flavor, image, network + subnet; prints KEY=VALUE lines
    provision.py computes    # waits until every compute is up in Nova, clears forced_down

Both are idempotent: what exists is reused. Every request has a timeout, every wait a bound.
Settings come from the environment (TESTBED_NOVA_URL, TESTBED_PROJECT_ID, ...).
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
HEADERS = {
    "X-Auth-Token": "admin",
    "X-User-Id": ENV.get("TESTBED_USER_ID", ""),
    "X-Project-Id": ENV.get("TESTBED_PROJECT_ID", ""),
    "X-Roles": "admin,member,reader",
    "OpenStack-API-Version": "compute 2.96",
    "Accept": "application/json",
}


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
        "name": name, "disk_format": "raw", "container_format": "bare"})
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
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"computes not up in Nova after {timeout_s:.0f} s: {missing}")
        time.sleep(0.5)


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "resources":
        resources()
    elif what == "computes":
        computes()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
