"""Every REST API bounds what it reads: a body limit (413 naming body), JSON that is too deep
or not standard (400 naming body), never a 500. Flask's test client, no sockets."""

from __future__ import annotations

import pytest

from consumer.config import ConsumerConfig
from consumer.sample import SampleConsumer
from consumer.sample import create_app as consumer_app
from controller.api import create_app as controller_app
from controller.embedded import Inventory
from doctor.config import build
from doctor.daemon import Daemon, daemon_parser
from doctor.store import make_engine
from inspector.api import create_app as inspector_app
from inspector.config import InspectorConfig
from inspector.service import InspectorService
from inspector.store import EventLog
from notifier.api import create_app as notifier_app
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from tests.fakes import ListPublisher
from vim.api import create_app as vim_app
from vim.crypto import PasswordBox
from vim.store import VimStore

TOKEN = "t0ken"
ADMIN = {"X-User-Id": "u1", "X-Project-Id": "p1", "X-Roles": "admin"}


class NoController:
    def list_servers(self, host=None):
        return []

    def close(self):
        pass


def inspector_service(tmp_path, **options):
    config = build(InspectorConfig, "inspector", {
        "token": TOKEN, "database": f"sqlite:///{tmp_path}/inspector.db", **options})
    return InspectorService(config, NoController(), ListPublisher(),
                            EventLog(make_engine(config.database)))


@pytest.fixture
def apps(tmp_path):
    """Each API as (name, test client, headers, a JSON route: method and path)."""
    engine = make_engine(f"sqlite:///{tmp_path}/controller.db")
    inventory = Inventory(engine, [])
    notifier = EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db",
                                               auth_strategy="noauth"))
    consumer = SampleConsumer(ConsumerConfig(auth_strategy="noauth"))
    vims = VimStore(make_engine(f"sqlite:///{tmp_path}/vim.db"),
                    PasswordBox.from_key_file(str(tmp_path / "vim.key")))
    token = {"X-Auth-Token": TOKEN}
    yield [
        ("inspector", inspector_app(inspector_service(tmp_path), TOKEN).test_client(), token,
         "PUT", "/events"),
        ("inspector", inspector_app(inspector_service(tmp_path), TOKEN).test_client(), token,
         "POST", "/v1/events"),
        ("controller", controller_app(inventory, TOKEN).test_client(), token, "POST",
         "/v1/servers"),
        ("notifier", notifier_app(notifier, "", "noauth").test_client(), ADMIN, "POST",
         "/v2/alarms"),
        ("notifier", notifier_app(notifier, "", "noauth").test_client(), {}, "POST", "/v1/events"),
        ("consumer", consumer_app(consumer).test_client(), {}, "POST", "/failure"),
        ("vim", vim_app(vims, TOKEN).test_client(), token, "POST", "/v1/vims"),
    ]
    notifier.stop()
    inventory.close()
    engine.dispose()


def send(client, method, path, headers, data):
    return client.open(path, method=method, data=data, headers=headers,
                       content_type="application/json")


def test_a_body_past_1_mib_is_413_naming_the_body_on_every_api(apps):
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    for name, client, headers, method, path in apps:
        response = send(client, method, path, headers, big)
        assert response.status_code == 413, (name, path, response.get_json())
        assert response.get_json()["field"] == "body", (name, path)


def test_the_notifier_answers_413_in_aodhs_shape_too(apps):
    [client] = [c for name, c, _, _, path in apps if path == "/v2/alarms"]
    response = send(client, "POST", "/v2/alarms", ADMIN, b"[" + b" " * (1 << 20) + b"]")
    assert response.status_code == 413
    assert "body" in response.get_json()["error_message"]["faultstring"]


def test_deep_nesting_is_400_naming_the_body_on_every_api(apps):
    deep = b"[" * 100_000 + b"]" * 100_000
    for name, client, headers, method, path in apps:
        response = send(client, method, path, headers, deep)
        assert response.status_code == 400, (name, path, response.get_json())
        body = response.get_json()
        assert body["field"] == "body" and "nested too deeply" in body["error"], (name, path)


@pytest.mark.parametrize("text", [b'{"a": NaN}', b'[Infinity]', b'{"a": -Infinity}'])
def test_nan_and_infinity_are_not_json(apps, text):
    for name, client, headers, method, path in apps:
        response = send(client, method, path, headers, text)
        assert response.status_code == 400, (name, path, response.get_json())
        assert response.get_json()["field"] == "body"


def test_each_daemon_takes_its_body_limit_from_max_body_bytes(tmp_path):
    daemon = Daemon(daemon_parser("doctor-consumer", ConsumerConfig, ""),
                    ["--max-body-bytes", "2048", "--auth-strategy", "noauth"])
    config = daemon.load(ConsumerConfig, "consumer")
    assert config.max_body_bytes == 2048
    from flask import Flask

    app = consumer_app(SampleConsumer(config))
    assert isinstance(app, Flask)
    server = daemon.listen(app, "127.0.0.1", 0)
    try:
        client = app.test_client()
        response = send(client, "POST", "/failure", {}, b'{"a": "' + b"x" * 4096 + b'"}')
        assert response.status_code == 413 and "2048" in response.get_json()["error"]
        assert send(client, "POST", "/failure", {}, b'{"a": 1}').status_code == 400
    finally:
        server.stop()


def test_the_consumer_sets_its_own_limit_when_started_without_a_daemon():
    app = consumer_app(SampleConsumer(build(ConsumerConfig, "consumer",
                                            {"max_body_bytes": "4096",
                                             "auth_strategy": "noauth"})))
    response = send(app.test_client(), "POST", "/failure", {}, b" " * 5000)
    assert response.status_code == 413


def test_the_body_limit_has_bounds_and_a_1_mib_default():
    assert InspectorConfig(token="t").max_body_bytes == 1 << 20
    with pytest.raises(ValueError, match="max_body_bytes"):
        build(NotifierConfig, "notifier", {"max_body_bytes": "10"})


# -- events: times, counts, traits ---------------------------------------------------------------

def doctor_event(i=0, stamp=None):
    from doctor import clock

    return {"type": "compute.host.down", "time": stamp or clock.isoformat(clock.now()),
            "details": {"hostname": "c1", "monitor": "m", "monitor_event_id": f"m:c1:{i}"}}


def test_the_inspector_refuses_a_year_9999_or_0001_event_naming_time(tmp_path):
    client = inspector_app(inspector_service(tmp_path), TOKEN).test_client()
    for stamp in ("9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00"):
        response = client.put("/events", json=[doctor_event(stamp=stamp)],
                              headers={"X-Auth-Token": TOKEN})
        assert response.status_code == 400
        assert response.get_json()["field"] == "body[0].time"
    response = client.put("/events", json=[doctor_event()], headers={"X-Auth-Token": TOKEN})
    assert response.status_code == 202


def test_the_inspectors_time_window_is_configurable(tmp_path):
    from doctor import clock

    service = inspector_service(tmp_path, event_max_future_s="3600")
    client = inspector_app(service, TOKEN).test_client()
    soon = clock.isoformat(clock.now() + 1800)
    response = client.put("/events", json=[doctor_event(stamp=soon)],
                          headers={"X-Auth-Token": TOKEN})
    assert response.status_code == 202


def test_the_inspector_takes_at_most_max_events_per_request(tmp_path):
    client = inspector_app(inspector_service(tmp_path), TOKEN).test_client()
    headers = {"X-Auth-Token": TOKEN}
    response = client.put("/events", json=[doctor_event(i) for i in range(1001)],
                          headers=headers)
    assert response.status_code == 400 and response.get_json()["field"] == "body"
    notes = [note() for _ in range(1001)]
    response = client.post("/v1/events", json=notes, headers=headers)
    assert response.status_code == 400 and response.get_json()["field"] == "body"
    bigger = inspector_app(inspector_service(tmp_path, max_events_per_request="2000"),
                           TOKEN).test_client()
    response = bigger.put("/events", json=[doctor_event(i) for i in range(1001)],
                          headers=headers)
    assert response.status_code == 202


def note(traits=None):
    from doctor.events import instance_update

    event = instance_update("vm-1", "error", "c1", "p1")
    if traits is not None:
        event["traits"] = traits
    return event


def test_the_notifier_takes_at_most_max_events_per_request(tmp_path):
    notifier = EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/n.db",
                                               auth_strategy="noauth"))
    try:
        client = notifier_app(notifier, "", "noauth").test_client()
        response = client.post("/v1/events", json=[note() for _ in range(1001)])
        assert response.status_code == 400 and response.get_json()["field"] == "body"
        assert client.post("/v1/events", json=[note() for _ in range(1000)]).status_code == 202
    finally:
        notifier.stop()


def test_an_object_where_a_trait_value_is_expected_is_400_naming_the_trait(apps):
    bad = note([["instance_id", 1, {"nested": "object"}], ["state", 1, "error"]])
    for name, client, headers, _method, path in apps:
        if path == "/v1/events":
            response = client.post(path, json=[bad], headers=headers)
            assert response.status_code == 400, (name, response.get_json())
            assert response.get_json()["field"] == "body[0].traits[0]", name
    [consumer] = [c for name, c, _, _, path in apps if path == "/failure"]
    response = consumer.post("/failure", json={
        "alarm_id": "a1", "alarm_name": "n", "reason_data": {"type": "event", "event": bad}})
    assert response.status_code == 400
    assert response.get_json()["field"] == "reason_data.event.traits[0]"


def test_the_http_publisher_sends_long_lists_in_requests_of_at_most_1000():
    from notifier.http import HttpPublisher

    class Answer:
        status = 202
        text = ""

    class Session:
        def __init__(self):
            self.sizes = []

        def post(self, url, json):
            self.sizes.append(len(json))
            return Answer()

        def close(self):
            pass

    publisher = HttpPublisher("http://127.0.0.1:1")
    publisher.session = Session()  # type: ignore[assignment]
    events = [note() for _ in range(2500)]
    publisher.publish(events)
    assert publisher.session.sizes == [1000, 1000, 500]


# -- what clients send is logged escaped ---------------------------------------------------------

FORGED = "x\ndoctor consumer notified at 1795000000.000000 alarm forged\r\x1b[31m"


def one_line_each(caplog):
    messages = [r.getMessage() for r in caplog.records]
    assert messages
    for message in messages:
        assert "\n" not in message and "\r" not in message and "\x1b" not in message, message
    return messages


def test_the_consumer_logs_alarm_and_instance_ids_escaped(caplog):
    client = consumer_app(SampleConsumer(ConsumerConfig(auth_strategy="noauth"))).test_client()
    event = note([["instance_id", 1, "vm\n" + FORGED], ["state", 1, "error"]])
    with caplog.at_level("INFO", logger="consumer.sample"):
        response = client.post("/failure", json={
            "alarm_id": FORGED, "alarm_name": "n",
            "reason_data": {"type": "event", "event": event}})
    assert response.status_code == 200
    [message] = one_line_each(caplog)  # the one real line; the forged ones stay inside it
    assert message.startswith("doctor consumer notified at")
    assert message.count("\\ndoctor consumer notified at") == 2


def test_the_consumer_bounds_alarm_ids_and_names():
    client = consumer_app(SampleConsumer(ConsumerConfig(auth_strategy="noauth"))).test_client()
    for key in ("alarm_id", "alarm_name"):
        body = {"alarm_id": "a", "alarm_name": "n", key: "x" * 256,
                "reason_data": {"type": "event", "event": note()}}
        response = client.post("/failure", json=body)
        assert response.status_code == 400 and response.get_json()["field"] == key


def test_the_notifier_logs_alarm_names_escaped(tmp_path, caplog):
    notifier = EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/n.db",
                                               auth_strategy="noauth"))
    try:
        client = notifier_app(notifier, "", "noauth").test_client()
        with caplog.at_level("INFO", logger="notifier.embedded"):
            response = client.post("/v2/alarms", headers=ADMIN, json={
                "name": FORGED, "type": "event",
                "event_rule": {"event_type": "compute.instance.update"}})
        assert response.status_code == 201
        assert any("\\x1b[31m" in m for m in one_line_each(caplog))
    finally:
        notifier.stop()


def test_the_vim_server_logs_a_refused_reports_ids_escaped(tmp_path, caplog):
    vims = VimStore(make_engine(f"sqlite:///{tmp_path}/vim.db"),
                    PasswordBox.from_key_file(str(tmp_path / "vim.key")))
    client = vim_app(vims, TOKEN).test_client()
    with caplog.at_level("WARNING", logger="vim.store"):
        response = client.post("/v1/vims/v%0Aforged%1B/status",
                               json={"monitor_id": "m", "status": "REACHABLE"},
                               headers={"X-Auth-Token": TOKEN})
    assert response.status_code == 409
    assert any("v\\nforged\\x1b" in m for m in one_line_each(caplog))
    response = client.post("/v1/vims/v/status", json={"monitor_id": "m" * 256,
                                                      "status": "REACHABLE"},
                           headers={"X-Auth-Token": TOKEN})
    assert response.status_code == 400 and response.get_json()["field"] == "monitor_id"


def test_an_empty_key_is_named_too(apps):
    # Found by tests/unit/test_fuzz_api.py: a 400 for the unknown key "" had no "field".
    for name, client, headers, method, path in apps:
        if path in ("/v2/alarms", "/v1/vims"):
            response = send(client, method, path, headers, b'{"": null}')
            assert response.status_code == 400, (name, path)
            assert response.get_json()["field"] == "", (name, path, response.get_json())
