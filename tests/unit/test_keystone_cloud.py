"""keystone_cloud without a Keystone: the option in every calling part's config and in
config-doc, the token source of a clouds.yaml cloud, and its errors (naming the option,
never the password)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import pytest

from client.main import _config_doc
from consumer.config import ConsumerConfig
from controller.config import ControllerConfig
from doctor import config as cfg
from doctor.http import HttpClient, HttpError
from doctor.openstack import CloudToken, TokenError, outgoing_token
from inspector.config import InspectorConfig
from monitor.config import MonitorConfig
from notifier.config import NotifierConfig
from testkit.eventsink import free_port
from vim.config import VimConfig

CALLERS = {"monitor": (MonitorConfig, "inspector_token"),
           "inspector": (InspectorConfig, "controller_token and notifier_token"),
           "controller": (ControllerConfig, "notify_token"),
           "consumer": (ConsumerConfig, "controller_token"),
           "vim": (VimConfig, "notifier_token")}
PASSWORD = "pw-never-shown-3f1c"


@pytest.fixture
def clouds_yaml(tmp_path, monkeypatch):
    """A clouds.yaml (mode 0600) with cloud ``nowhere``: a Keystone on a closed port."""
    path = tmp_path / "clouds.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"clouds:\n  nowhere:\n    auth:\n"
                     f"      auth_url: http://127.0.0.1:{free_port()}/v3\n"
                     f"      username: doctor\n      password: {PASSWORD}\n"
                     f"      project_name: service\n      user_domain_name: Default\n"
                     f"      project_domain_name: Default\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    for name in [n for n in os.environ if n.startswith("OS_") and n != "OS_CLIENT_CONFIG_FILE"]:
        monkeypatch.delenv(name)
    return path


@pytest.mark.parametrize("section", sorted(CALLERS))
def test_every_calling_part_has_keystone_cloud_empty_by_default(section):
    cls, instead = CALLERS[section]
    field = {f.name: f for f in dataclasses.fields(cls)}["keystone_cloud"]
    assert field.default == "" and not cfg.is_secret(field)
    help_text = field.metadata["help"]
    assert "clouds.yaml" in help_text and f"Empty: the static {instead}" in help_text
    # not a secret (a name, no password in it): a flag like the other options
    values = {"keystone_cloud": "ops"} if section == "monitor" else \
        {"keystone_cloud": "ops", "token": "t"}
    assert cfg.build(cls, section, values).keystone_cloud == "ops"


def test_the_notifier_has_no_keystone_cloud():
    # it calls only alarm action URLs, which a tenant chooses: never with a Keystone token
    assert "keystone_cloud" not in {f.name for f in dataclasses.fields(NotifierConfig)}


def test_config_doc_lists_keystone_cloud_with_its_help():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _config_doc(None)
    rows = [line for line in out.getvalue().splitlines() if line.startswith("| `keystone_cloud`")]
    assert len(rows) == len(CALLERS)
    assert all("clouds.yaml cloud" in row and "X-Auth-Token" in row for row in rows)


def test_without_keystone_cloud_the_static_token_is_sent():
    assert outgoing_token("monitor", "", "static-token") == "static-token"
    assert outgoing_token("monitor", "  ", "") == ""


def test_an_unknown_cloud_is_a_config_error_naming_the_option(clouds_yaml):
    with pytest.raises(cfg.ConfigError, match=r"^\[monitor\] keystone_cloud: .*missing"):
        outgoing_token("monitor", "missing", "static")


def test_an_unreachable_keystone_is_a_token_error_then_the_clients_http_error(clouds_yaml):
    source = outgoing_token("consumer", "nowhere", "static")
    assert isinstance(source, CloudToken) and "nowhere" in repr(source)
    with pytest.raises(TokenError) as caught:
        source()
    assert "cloud nowhere: no Keystone token" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    client = HttpClient(2.0, token=source)
    with pytest.raises(HttpError) as failed:
        client.get(f"http://127.0.0.1:{free_port()}/v1/hosts")
    assert "no token to send" in failed.value.reason and PASSWORD not in str(failed.value)
    source.invalidate("a token it never had")  # harmless
    client.close()
