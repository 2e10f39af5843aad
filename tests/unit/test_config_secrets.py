"""Secrets never on the command line, from the environment instead; auth_strategy for every API
part: a part with auth_strategy = token and no token refuses to start, noauth warns."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.config import ConsumerConfig
from controller.config import ControllerConfig
from doctor import config as cfg
from doctor.daemon import Daemon, daemon_parser
from inspector.config import InspectorConfig
from monitor.config import MonitorConfig
from notifier.config import NotifierConfig
from vim.config import VimConfig

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "monitor": (MonitorConfig, {"inspector_token"}),
    "inspector": (InspectorConfig, {"token", "controller_token", "notifier_token",
                                    "aodh_transport_url", "nova_transport_url",
                                    "keystone_password"}),
    "controller": (ControllerConfig, {"token", "notify_token", "keystone_password"}),
    "notifier": (NotifierConfig, {"token", "action_secret", "keystone_password",
                                  "nova_transport_url"}),
    "consumer": (ConsumerConfig, {"token", "alarm_secret", "controller_token",
                                  "keystone_password"}),
    "vim": (VimConfig, {"token", "notifier_token", "keystone_password"}),
}
API_PARTS = {"inspector": ["inspector.cli"], "controller": ["controller.cli", "serve"],
             "notifier": ["notifier.cli"], "consumer": ["consumer.cli"], "vim": ["vim.cli"]}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any DOCTOR_<PART>_<SECRET> of the caller's."""
    env = {k: v for k, v in os.environ.items()
           if not any(k.startswith(f"DOCTOR_{part.upper()}_") for part in SECRETS)}
    return {**env, **extra}


@pytest.mark.parametrize("section", sorted(SECRETS))
def test_every_token_and_secret_is_a_secret_option_without_a_flag(section):
    cls, expected = SECRETS[section]
    import dataclasses

    secret = {f.name for f in dataclasses.fields(cls) if cfg.is_secret(f)}
    assert secret == expected
    parser = daemon_parser(f"doctor-{section}", cls, "")
    flags = {a.dest for a in parser._actions if a.help != "==SUPPRESS=="}
    assert not secret & flags
    for name in secret:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([f"--{name.replace('_', '-')}", "s3cret"])
        assert exited.value.code == 2


def test_a_secret_given_as_a_flag_is_a_usage_error_naming_the_file_and_the_variable():
    result = subprocess.run([sys.executable, "-m", "inspector.cli", "--controller-token", "s3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env=clean_env())
    assert result.returncode == 2
    assert "--controller-token: a secret is never taken on the command line" in result.stderr
    assert "[inspector] controller_token in the config file" in result.stderr
    assert "DOCTOR_INSPECTOR_CONTROLLER_TOKEN" in result.stderr
    assert "s3" not in result.stderr.replace("s3cret", "")


def test_the_client_commands_take_their_token_from_the_environment_only():
    result = subprocess.run([sys.executable, "-m", "controller.cli", "list", "--token", "t"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "DOCTOR_CONTROLLER_TOKEN" in result.stderr
    for argv, variable in ((["service", "list"], "DOCTOR_INSPECTOR_TOKEN"),
                           (["vim", "list"], "DOCTOR_VIM_TOKEN")):
        result = subprocess.run([sys.executable, "-m", "client.main", *argv, "--token", "t"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert variable in result.stderr and "never taken on the command line" in result.stderr


def test_load_order_defaults_file_environment_flags(tmp_path):
    ini = tmp_path / "doctor.conf"
    ini.write_text("[inspector]\ntoken = from-file\ncontroller_token = file-ct\nport = 1\n")
    config = cfg.load(InspectorConfig, "inspector", str(ini), {"port": "3"},
                      environ={"DOCTOR_INSPECTOR_TOKEN": "from-env",
                               "DOCTOR_INSPECTOR_PORT": "2"})  # not a secret: not read
    assert config.token == "from-env" and config.controller_token == "file-ct"
    assert config.port == 3
    only_env = cfg.load(InspectorConfig, "inspector", None,
                        environ={"DOCTOR_INSPECTOR_TOKEN": "e",
                                 "DOCTOR_INSPECTOR_AODH_TRANSPORT_URL": "rabbit://u:p@h//"})
    assert (only_env.token, only_env.aodh_transport_url) == ("e", "rabbit://u:p@h//")
    # An empty variable is no value: the file's stays.
    kept = cfg.load(InspectorConfig, "inspector", str(ini),
                    environ={"DOCTOR_INSPECTOR_TOKEN": ""})
    assert kept.token == "from-file"


def test_a_secret_among_flags_is_refused_and_a_bad_env_value_names_its_variable():
    with pytest.raises(cfg.ConfigError, match=r"\[inspector\] token: a secret is never taken "
                                              r"from flags.*DOCTOR_INSPECTOR_TOKEN"):
        cfg.load(InspectorConfig, "inspector", None, {"token": "t"}, environ={})
    with pytest.raises(cfg.ConfigError, match=r"\(in DOCTOR_CONSUMER_TOKEN and flags\)"):
        cfg.load(ConsumerConfig, "consumer", None, {"path": "/failures"},
                 environ={"DOCTOR_CONSUMER_TOKEN": "t"})


def test_config_doc_names_the_variable_of_every_secret():
    result = subprocess.run([sys.executable, "-m", "client.main", "config-doc"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for section, (_cls, secrets) in SECRETS.items():
        for name in secrets:
            [row] = [line for line in result.stdout.splitlines()
                     if line.startswith(f"| `{name}` |") and cfg.env_name(section, name)
                     in line]
            assert "never a flag" in row
    assert "| `auth_strategy` | `token` |" in result.stdout


@pytest.mark.parametrize("section", sorted(API_PARTS))
def test_every_api_part_answers_only_with_a_token_by_default_and_refuses_to_start_without(
        section, tmp_path):
    cls, _ = SECRETS[section]
    assert cfg.build(cls, section, {"token": "t"}).auth_strategy == "token"
    result = subprocess.run([sys.executable, "-m", *API_PARTS[section]], cwd=ROOT,
                            capture_output=True, text=True, timeout=30,
                            env=clean_env(DOCTOR_STATE_DIR=str(tmp_path)))
    assert result.returncode == 2, result.stderr
    assert (f"[{section}] token: required with auth_strategy = token; set token in the config "
            f"file's [{section}] section, or the environment variable "
            f"DOCTOR_{section.upper()}_TOKEN, or write auth_strategy = noauth") in result.stderr


def test_auth_strategy_is_token_noauth_or_keystone():
    assert cfg.build(ControllerConfig, "controller", {"auth_strategy": " NoAuth "}
                     ).auth_strategy == "noauth"
    with pytest.raises(cfg.ConfigError, match=r"\[controller\] auth_strategy: 'kerberos' is "
                                              r"not one of token, noauth, keystone"):
        cfg.build(ControllerConfig, "controller", {"auth_strategy": "kerberos", "token": "t"})


def test_noauth_warns_at_start_that_the_api_answers_anyone(caplog, monkeypatch):
    def started(argv):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            config = Daemon(daemon_parser("doctor-consumer", ConsumerConfig, ""), argv).load(
                ConsumerConfig, "consumer")
        return config, [r for r in caplog.records if "answers anyone" in r.getMessage()]

    config, [warning] = started(["--auth-strategy", "noauth"])
    assert config.auth_strategy == "noauth" and config.token == ""
    assert warning.levelno == logging.WARNING
    assert "[consumer] auth_strategy = noauth" in warning.getMessage()
    monkeypatch.setenv("DOCTOR_CONSUMER_TOKEN", "t")
    config, warnings = started([])
    assert (config.auth_strategy, config.token, warnings) == ("token", "t", [])


def test_a_url_with_a_password_is_refused_as_a_flag_and_taken_from_the_environment():
    """A database or coordination URL may hold a password: ps would show it on a command
    line, so there it must come from the config file or DOCTOR_<SECTION>_<OPTION>."""
    from doctor.config import ConfigError, load
    from vim.config import VimConfig

    url = "postgresql+psycopg://doctor:s3cret@db.example:5432/vim"
    with pytest.raises(ConfigError) as raised:
        load(VimConfig, "vim", None, flags={"database": url},
             environ={"DOCTOR_VIM_TOKEN": "t"})
    assert "[vim] database: a URL with a password is never taken from flags" in str(raised.value)
    assert "DOCTOR_VIM_DATABASE" in str(raised.value) and "s3cret" not in str(raised.value)
    config = load(VimConfig, "vim", None, environ={"DOCTOR_VIM_TOKEN": "t",
                                                   "DOCTOR_VIM_DATABASE": url,
                                                   "DOCTOR_VIM_COORDINATION_URL":
                                                   "redis://:pw@127.0.0.1:6379"})
    assert config.database == url and config.coordination_url == "redis://:pw@127.0.0.1:6379"
    # Without a password a flag is fine, as before.
    plain = load(VimConfig, "vim", None, flags={"database": "sqlite:////tmp/v.db"},
                 environ={"DOCTOR_VIM_TOKEN": "t"})
    assert plain.database == "sqlite:////tmp/v.db"
