"""The embedded Notifier's bounds: where alarm actions may go, how many an alarm may have,
alarms per project, the lengths of texts, limits and filters. No DNS: names are resolved by
a stand-in resolver; nothing is sent anywhere but 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest

from doctor.api import ApiError
from doctor.config import ConfigError, build
from notifier.actions import ActionDispatcher
from notifier.api import create_app
from notifier.caller import Caller
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from notifier.evaluator import ALARM, Firing
from notifier.targets import ActionTargets, TargetRefused, address_of
from notifier.validation import AlarmLimits, validate_alarm
from testkit.eventsink import free_port
from tests.waiting import wait_until

ADMIN = {"X-User-Id": "u1", "X-Project-Id": "p1", "X-Roles": "admin"}
NAMES = {"consumer.test": ["198.18.0.5"], "metadata.test": ["169.254.169.254"],
         "sneaky.test": ["198.18.0.6", "169.254.169.254"], "localhost": ["127.0.0.1", "::1"],
         "mapped.test": ["::ffff:127.0.0.1"]}
OWN = 8042


def resolve(name):
    if name == "later.test":
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    try:
        return NAMES[name]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


def targets(**kwargs):
    policy = ActionTargets(resolve=resolve, **kwargs)
    policy.listening_at("127.0.0.1", OWN)
    return policy


def refusal(policy, url):
    with pytest.raises(TargetRefused) as info:
        policy.check(url)
    return str(info.value)


# -- the rule ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:12346/failure", "https://[::1]:12346/failure", "http://127.0.0.1/x",
    "http://198.18.0.3:12346/failure", "http://consumer.test:12346/failure",
    "http://10.0.0.5:8042/failure", "http://localhost:12346/failure", "http://[2001:db8::1]/",
])
def test_consumers_on_loopback_test_hosts_and_other_machines_are_allowed(url):
    assert targets().check(url) == url


@pytest.mark.parametrize("url, problem", [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://100.100.100.200/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://0.0.0.0:12346/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]:12346/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ("http://0xa9fea9fe/", "link-local"),
    ("http://2852039166/", "link-local"),
    ("http://metadata.test/", "link-local"),
    ("http://sneaky.test/", "link-local"),
    ("http://127.0.0.1:8042/v1/events", "the notifier's own API"),
    ("http://0x7f000001:8042/", "the notifier's own API"),
    ("http://2130706433:8042/", "the notifier's own API"),
    ("http://0177.0.0.1:8042/", "the notifier's own API"),
    ("http://127.1:8042/", "the notifier's own API"),
    ("http://127.0.0.1.:8042/", "the notifier's own API"),
    ("http://[::ffff:127.0.0.1]:8042/", "the notifier's own API"),
    ("http://[::ffff:7f00:1]:8042/", "the notifier's own API"),
    ("http://localhost:8042/", "the notifier's own API"),
    ("http://mapped.test:8042/", "the notifier's own API"),
    ("http://127.0.0.1:12345/events", "action_url_deny"),
    ("http://0x7f000001:12347/v1/servers", "action_url_deny"),
    ("http://127.0.0.2:9890/v1/vims", "action_url_deny"),
    ("http://[::1]:12345/events", "action_url_deny"),
    ("ftp://consumer.test/", "unsupported action scheme"),
    ("http://consumer.test\\@127.0.0.1:8042/", "backslashes"),
    ("http://consumer test/", "spaces"),
    ("http://ünïcode.test/", "ASCII host name"),
    ("http://" + "a" * 3000 + "/", "longer than 2048"),
    ("http://unknown.test/", "does not resolve"),
])
def test_refused_targets_say_why(url, problem):
    assert problem in refusal(targets(), url)


def test_a_name_that_cannot_be_resolved_just_now_may_be_retried():
    with pytest.raises(TargetRefused) as info:
        targets().check("http://later.test/")
    assert info.value.retry


def test_the_allow_list_permits_what_the_rules_refuse_by_cidr_or_name():
    policy = targets(allow=["169.254.0.0/16", "metadata.test", "127.0.0.1"])
    assert policy.check("http://169.254.169.254/x") == "http://169.254.169.254/x"
    assert policy.check("http://metadata.test/x")
    assert policy.check("http://0x7f000001:8042/")  # even the own port, when allowed
    assert "link-local" in refusal(policy, "http://[fe80::1]/")


def test_the_deny_list_takes_ports_cidrs_and_names_and_can_refuse_all_loopback():
    policy = targets(deny=["127.0.0.0/8", "::1", "10.1.0.0/16:80", "api.test", "[2001:db8::5]:443"])
    for url in ("http://127.0.0.1:12346/failure", "http://[::1]:1/", "http://10.1.2.3/",
                "http://api.test:1/", "https://[2001:db8::5]/"):
        assert "action_url_deny" in refusal(policy, url), url
    assert policy.check("http://10.1.2.3:8080/") and policy.check("http://[2001:db8::5]:80/")


def test_a_notifier_on_a_wildcard_address_refuses_its_port_on_any_address():
    policy = ActionTargets(resolve=resolve)
    policy.listening_at("0.0.0.0", OWN)
    assert "own API" in refusal(policy, "http://198.18.0.5:8042/")
    assert policy.check("http://198.18.0.5:8043/")


def test_without_a_resolver_names_pass_and_addresses_are_still_checked():
    def no_dns(name):
        raise AssertionError(f"resolved {name}")

    policy = ActionTargets(resolve=no_dns)
    assert policy.check("http://anything.test/", resolve=False)
    assert "link-local" in str(pytest.raises(TargetRefused, policy.check,
                                             "http://169.254.169.254/", resolve=False).value)
    assert address_of("0x7f000001") == address_of("127.0.0.1") == address_of("::ffff:127.0.0.1")
    assert address_of("compute-1") is None and address_of("dead") is None


def test_the_lists_are_checked_when_the_config_is_read():
    for name, value in [("action_url_allow", "10.0.0.0/33"), ("action_url_allow", "a b"),
                        ("action_url_deny", "127.0.0.1:99999"), ("action_url_deny", "[::1]x")]:
        with pytest.raises(ConfigError, match=name):
            build(NotifierConfig, "notifier", {"auth_strategy": "noauth", name: value})
    config = build(NotifierConfig, "notifier", {"auth_strategy": "noauth",
                                                "action_url_allow": "10.0.0.0/8, c.test"})
    assert config.action_url_allow == ["10.0.0.0/8", "c.test"]
    assert NotifierConfig(auth_strategy="noauth").action_url_deny == [
        "127.0.0.1:12345", "127.0.0.1:12347", "127.0.0.1:9890"]


# -- through the API ---------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path):
    def make(**options):
        config = build(NotifierConfig, "notifier", {
            "database": f"sqlite:///{tmp_path}/notifier-{len(made)}.db",
            "auth_strategy": "noauth", **options})
        service = EmbeddedNotifier(config, resolve=resolve)
        made.append(service)
        return service, create_app(service, "", "noauth").test_client()

    made: list[EmbeddedNotifier] = []
    yield make
    for service in made:
        service.stop()


def alarm_body(n=0, **fields):
    return {"name": f"a{n}", "type": "event",
            "event_rule": {"event_type": "compute.instance.update"},
            "alarm_actions": ["http://127.0.0.1:12346/failure"], **fields}


def post(client, body, headers=ADMIN):
    return client.post("/v2/alarms", json=body, headers=headers)


def test_a_metadata_address_action_is_refused(api):
    _, client = api()
    for url in ("http://169.254.169.254/latest/meta-data/", "http://metadata.test/",
                "http://0x7f000001:8042/v1/events"):
        response = post(client, alarm_body(alarm_actions=["http://127.0.0.1:12346/f", url]))
        assert response.status_code == 400, url
        assert response.get_json()["field"] == "alarm_actions[1]"
    assert post(client, alarm_body(ok_actions=["http://169.254.169.254/"])).get_json()[
        "field"] == "ok_actions[0]"
    assert post(client, alarm_body()).status_code == 201


def test_the_notifier_refuses_its_own_listen_port_once_it_is_known(api):
    service, client = api(port="0")
    port = free_port()
    service.listening_at("127.0.0.1", port)
    response = post(client, alarm_body(alarm_actions=[f"http://127.0.0.1:{port}/v1/events"]))
    assert response.status_code == 400 and "own API" in response.get_json()["error"]


def test_an_unresolvable_name_is_400_and_a_temporary_failure_503(api):
    _, client = api()
    assert post(client, alarm_body(alarm_actions=["http://nowhere.test/"])).status_code == 400
    assert post(client, alarm_body(alarm_actions=["http://later.test/"])).status_code == 503


def test_an_allow_listed_target_is_accepted(api):
    _, client = api(action_url_allow="169.254.169.254")
    assert post(client, alarm_body(alarm_actions=["http://169.254.169.254/x"])).status_code \
        == 201


@pytest.mark.parametrize("key", ["alarm_actions", "ok_actions", "insufficient_data_actions"])
def test_each_action_list_holds_at_most_alarm_max_actions(api, key):
    _, client = api()
    urls = [f"http://127.0.0.1:12346/failure/{i}" for i in range(11)]
    response = post(client, alarm_body(**{key: urls}))
    assert response.status_code == 400 and response.get_json()["field"] == key
    assert "at most 10" in response.get_json()["error"]
    assert post(client, alarm_body(**{key: urls[:10]})).status_code == 201
    _, bigger = api(alarm_max_actions="20")
    assert post(bigger, alarm_body(**{key: urls})).status_code == 201


def test_an_alarm_with_1000_actions_is_refused(api):
    _, client = api()
    urls = [f"http://127.0.0.1:12346/failure/{i}" for i in range(1000)]
    assert post(client, alarm_body(alarm_actions=urls)).status_code == 400


def test_a_project_may_hold_at_most_project_alarm_quota_alarms(api):
    service, client = api(project_alarm_quota="2")
    assert [post(client, alarm_body(i)).status_code for i in range(2)] == [201, 201]
    over = post(client, alarm_body(2))
    assert over.status_code == 403 and over.get_json()["field"] == "project_id"
    assert "quota" in over.get_json()["error_message"]["faultstring"]
    other = {"X-User-Id": "u2", "X-Project-Id": "p2", "X-Roles": "member"}
    assert post(client, alarm_body(2), other).status_code == 201
    first = service.list_alarms()[0]["alarm_id"]
    # an admin moving p2's alarm into the full p1 is over the quota too
    [theirs] = [a for a in service.list_alarms() if a["project_id"] == "p2"]
    moved = client.put(f"/v2/alarms/{theirs['alarm_id']}", json={"project_id": "p1"},
                       headers=ADMIN)
    assert moved.status_code == 403
    assert client.delete(f"/v2/alarms/{first}", headers=ADMIN).status_code == 204
    assert post(client, alarm_body(3)).status_code == 201


def test_the_quota_counts_the_alarms_loaded_at_start(tmp_path):
    config = build(NotifierConfig, "notifier", {"database": f"sqlite:///{tmp_path}/n.db",
                                                "project_alarm_quota": "1",
                                                "auth_strategy": "noauth"})
    service = EmbeddedNotifier(config, resolve=resolve)
    client = create_app(service, "", "noauth").test_client()
    assert post(client, alarm_body()).status_code == 201
    service.stop()
    again = EmbeddedNotifier(config, resolve=resolve)
    try:
        client = create_app(again, "", "noauth").test_client()
        assert post(client, alarm_body(1)).status_code == 403
    finally:
        again.stop()


@pytest.mark.parametrize("fields, field", [
    ({"description": "d" * 4097}, "description"),
    ({"name": "n" * 256}, "name"),
    ({"project_id": "p" * 256}, "project_id"),
    ({"event_rule": {"event_type": "e" * 256}}, "event_rule.event_type"),
    ({"event_rule": {"event_type": "e", "query": [{"field": "traits.x", "value": "v" * 256}]}},
     "event_rule.query[0].value"),
    ({"event_rule": {"event_type": "e", "query": [{"field": "traits." + "x" * 256,
                                                   "value": "v"}]}},
     "event_rule.query[0].field"),
    ({"event_rule": {"event_type": "e", "query": [{"field": "traits.x", "value": "v"}] * 101}},
     "event_rule.query"),
])
def test_texts_and_conditions_are_bounded(api, fields, field):
    _, client = api()
    response = post(client, alarm_body(**fields))
    assert response.status_code == 400 and response.get_json()["field"] == field


def test_a_52_mb_description_is_never_stored(api):
    service, client = api()
    response = post(client, alarm_body(description="d" * 52_000_000))
    assert response.status_code == 413 and service.list_alarms() == []
    assert post(client, alarm_body(description="d" * 4096)).status_code == 201


def test_validation_without_limits_uses_aodhs_default_cap_and_checks_addresses():
    caller = Caller("u1", "p1", frozenset({"admin"}))
    with pytest.raises(ApiError) as info:
        validate_alarm(alarm_body(alarm_actions=["http://169.254.169.254/"]), caller)
    assert info.value.field == "alarm_actions[0]"
    urls = [f"http://h{i}.test/" for i in range(11)]
    with pytest.raises(ApiError):
        validate_alarm(alarm_body(alarm_actions=urls), caller)
    assert validate_alarm(alarm_body(alarm_actions=urls), caller,
                          limits=AlarmLimits(max_actions=11))["alarm_actions"] == urls


# -- queries: limits and filters -----------------------------------------------------------------

@pytest.mark.parametrize("text", ['{"limit": 1e400}', '{"limit": -1e400}', '{"limit": 1e30}',
                                  '{"limit": 100000000000000000000000000000}',
                                  '{"limit": true}', '{"limit": "inf"}'])
def test_a_query_limit_that_is_not_a_sane_whole_number_is_400_naming_limit(api, text):
    _, client = api()
    response = client.post("/v2/query/alarms", data=text, headers=ADMIN,
                           content_type="application/json")
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == "limit"


def test_a_listing_limit_of_infinity_is_400(api):
    _, client = api()
    for value in ("inf", "nan", "1e400", "9" * 5000):
        response = client.get(f"/v2/alarms?limit={value}", headers=ADMIN)
        assert response.status_code == 400 and response.get_json()["field"] == "limit", value


def test_a_deeply_nested_filter_is_400_naming_filter(api):
    service, client = api()
    assert post(client, alarm_body()).status_code == 201
    deep: dict = {"=": {"name": "a0"}}
    for _ in range(950):
        deep = {"not": deep}
    for body in ({"filter": json.dumps(deep)}, {"filter": "[" * 100_000}):
        response = client.post("/v2/query/alarms", json=body, headers=ADMIN)
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["field"] == "filter"
    shallow: dict = {"=": {"name": "a0"}}
    for _ in range(30):  # 30 levels of not: within the bound, and an even count
        shallow = {"not": shallow}
    response = client.post("/v2/query/alarms", json={"filter": json.dumps(shallow)},
                           headers=ADMIN)
    assert response.status_code == 200 and [a["name"] for a in response.get_json()] == ["a0"]


# -- the send path -------------------------------------------------------------------------------

def test_a_stored_alarm_whose_action_the_rules_refuse_is_not_sent(tmp_path):
    port = free_port()  # nothing listens there; were it sent, it would fail on loopback
    service = EmbeddedNotifier(build(NotifierConfig, "notifier", {
        "database": f"sqlite:///{tmp_path}/n.db", "action_url_deny": f"127.0.0.1:{port}",
        "auth_strategy": "noauth"}),
        resolve=resolve)
    dispatcher = ActionDispatcher(timeout_s=0.2, retry_for_s=1,
                                  check_url=service._check_url).start()
    try:
        firing = Firing(alarm_id="a1", alarm_name="n", severity="low", previous="ok",
                        current=ALARM, reason="r", event={}, actions=[
                            f"http://0x7f000001:{port}/x"], instance_id="vm", at=time.time(),
                        alarm={})
        dispatcher.dispatch([firing])
        wait_until(lambda: dispatcher.counts["refused"] == 1)
        assert dispatcher.counts["sent"] == 0
    finally:
        dispatcher.stop(1)
        service.stop()
