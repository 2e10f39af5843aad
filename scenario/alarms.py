"""The VNFM's side of alarms: created with aodhclient, against either Notifier.

The embedded Notifier serves the same ``/v2/alarms`` subset as Aodh, so this
one code path serves both (docs/ARCHITECTURE.md, "Alarms").
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from doctor.events import INSTANCE_UPDATE, VIM_STATUS_UPDATE


def aodh_client(endpoint: str, project_id: str, user_id: str = "doctor-vnfm",
                roles: str = "admin", timeout_s: float = 10.0) -> Any:
    """An aodhclient v2 client without Keystone (auth type ``aodh-noauth``): real Aodh in
    noauth mode (the test bed), or the embedded notifier with ``auth_strategy = noauth``."""
    from aodhclient import client
    from aodhclient.noauth import AodhNoAuthPlugin
    from keystoneauth1 import session

    auth = AodhNoAuthPlugin(user_id=user_id, project_id=project_id, roles=roles,
                            endpoint=endpoint)
    return client.Client("2", session=session.Session(auth=auth, timeout=timeout_s))


def token_aodh_client(endpoint: str, token: str, timeout_s: float = 10.0) -> Any:
    """An aodhclient v2 client that sends ``token`` as X-Auth-Token (keystoneauth1's
    ``token_endpoint``): the embedded notifier with ``auth_strategy = token``, where the
    token is the caller (a project's token of its ``api_tokens_file``)."""
    from aodhclient import client
    from keystoneauth1 import session
    from keystoneauth1.token_endpoint import Token

    return client.Client("2", session=session.Session(auth=Token(endpoint, token),
                                                      timeout=timeout_s))


def cloud_aodh_client(env: dict[str, str], project_id: str = "") -> Any:
    """The VNFM's aodhclient on real Aodh: the session of its cloud of clouds.yaml
    (``DOCTOR_VNFM_CLOUD``, else ``DOCTOR_OS_CLOUD``'s); on the test bed without Keystone,
    Aodh's noauth mode in ``project_id`` (default ``DOCTOR_PROJECT_ID``)."""
    if env.get("DOCTOR_OS_CLOUD") or env.get("DOCTOR_VNFM_CLOUD"):
        from aodhclient import client

        from scenario.clouds import vnfm_cloud

        return client.Client("2", session=vnfm_cloud(env).session,
                             endpoint_override=env.get("DOCTOR_AODH_URL") or None)
    return aodh_client(env["DOCTOR_AODH_URL"], project_id or env["DOCTOR_PROJECT_ID"],
                       user_id=env["DOCTOR_USER_ID"])


def vnfm_aodh_client(pipeline: Any, project_id: str) -> Any:
    """The VNFM's aodhclient for a pipeline: on real Aodh ``cloud_aodh_client``; on the
    embedded notifier the VNFM's token (its project is ``pipeline.vnfm_project``)."""
    if pipeline.aodh:
        return cloud_aodh_client(pipeline.openstack, project_id)
    if project_id != pipeline.vnfm_project:
        raise ValueError(f"the embedded notifier knows the VNFM's project "
                         f"{pipeline.vnfm_project}, not {project_id}")
    return token_aodh_client(pipeline.url("notifier"), pipeline.vnfm_token)


def vm_error_alarm(vm_id: str, consumer_url: str, name: str = "") -> dict[str, Any]:
    """Doctor's alarm: fire once when this VM's state becomes error."""
    return {
        "name": name or f"doctor_alarm_{vm_id}",
        "type": "event",
        "severity": "critical",
        "event_rule": {
            "event_type": INSTANCE_UPDATE,
            "query": [
                {"field": "traits.instance_id", "op": "eq", "type": "string", "value": vm_id},
                {"field": "traits.state", "op": "eq", "type": "string", "value": "error"},
            ],
        },
        "alarm_actions": [consumer_url],
        "repeat_actions": False,
    }


def vim_status_alarm(consumer_url: str, status: str = "unreachable", vim_id: str = "",
                     name: str = "") -> dict[str, Any]:
    """Fire when a VIM (any of the project's, or ``vim_id``) becomes ``status``."""
    query = [{"field": "traits.status", "op": "eq", "type": "string", "value": status}]
    if vim_id:
        query.append({"field": "traits.vim_id", "op": "eq", "type": "string", "value": vim_id})
    return {
        "name": name or f"vim_{status}_{vim_id or 'any'}",
        "type": "event",
        "severity": "critical",
        "event_rule": {"event_type": VIM_STATUS_UPDATE, "query": query},
        "alarm_actions": [consumer_url],
        "repeat_actions": False,
    }


def create_vm_alarms(client: Any, vm_ids: list[str], consumer_url: str,
                     parallel: int = 8) -> list[str]:
    """One alarm per VM; returns their ids in the same order."""
    with ThreadPoolExecutor(parallel) as pool:
        alarms = list(pool.map(lambda vm: client.alarm.create(vm_error_alarm(vm, consumer_url)),
                               vm_ids))
    return [alarm["alarm_id"] for alarm in alarms]


def rearm(client: Any, alarm_ids: list[str], parallel: int = 8) -> None:
    """Back to ``ok``: a ``repeat_actions=false`` alarm fires again only after this."""
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda alarm_id: client.alarm.set_state(alarm_id, "ok"), alarm_ids))


def aodh_cache_ttl_s(openstack: bool) -> float:
    """How long Aodh's listener may keep using a project's alarms from before a change.

    Aodh caches a project's event alarms for ``event_alarm_cache_ttl`` (60 s by
    default): an alarm created, or re-armed, within that time of the project's
    last load is not evaluated yet. The test bed exports its TTL as
    ``DOCTOR_AODH_EVENT_CACHE_TTL``; the embedded notifier has no cache.
    """
    if not openstack:
        return 0.0
    return float(os.environ.get("DOCTOR_AODH_EVENT_CACHE_TTL", "60"))


def wait_alarms_seen(changed_at: float, ttl_s: float) -> None:
    """Sleep until ``ttl_s`` has passed since the alarms changed (time.monotonic())."""
    remaining = changed_at + ttl_s + 0.1 - time.monotonic() if ttl_s > 0 else 0.0
    if remaining > 0:
        time.sleep(remaining)
