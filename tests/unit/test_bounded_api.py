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
    notifier = EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db"))
    consumer = SampleConsumer(ConsumerConfig())
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
        ("notifier", notifier_app(notifier).test_client(), ADMIN, "POST", "/v2/alarms"),
        ("notifier", notifier_app(notifier).test_client(), {}, "POST", "/v1/events"),
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
                    ["--max-body-bytes", "2048"])
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
                                            {"max_body_bytes": "4096"})))
    response = send(app.test_client(), "POST", "/failure", {}, b" " * 5000)
    assert response.status_code == 413


def test_the_body_limit_has_bounds_and_a_1_mib_default():
    assert InspectorConfig(token="t").max_body_bytes == 1 << 20
    with pytest.raises(ValueError, match="max_body_bytes"):
        build(NotifierConfig, "notifier", {"max_body_bytes": "10"})
