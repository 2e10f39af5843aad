"""auth_strategy = keystone without a Keystone: the config's checks, the rules in code, the
policy file, and that every route of every part names a rule (the guard refuses the rest)."""

from __future__ import annotations

import pytest

from consumer import policies as consumer_policies
from consumer.config import ConsumerConfig
from controller import policies as controller_policies
from controller.config import ControllerConfig
from doctor import config as cfg
from doctor.keystone import Identity, KeystoneSettings
from doctor.policy import IN_ROUTE, Policy
from inspector import policies as inspector_policies
from inspector.config import InspectorConfig
from notifier import policies as notifier_policies
from notifier.config import NotifierConfig
from vim import policies as vim_policies
from vim.config import VimConfig

KEYSTONE = {"auth_strategy": "keystone", "keystone_auth_url": "http://127.0.0.1:5000/v3",
            "keystone_username": "doctor", "keystone_password": "pw",
            "keystone_project_name": "service"}
PARTS = [("inspector", InspectorConfig, inspector_policies),
         ("controller", ControllerConfig, controller_policies),
         ("notifier", NotifierConfig, notifier_policies),
         ("vim", VimConfig, vim_policies)]
ADMIN = Identity("u-admin", "p-admin", frozenset({"admin", "member"}))
ALICE = Identity("u-alice", "p-a", frozenset({"member"}))


@pytest.mark.parametrize("section,cls,_policies", PARTS, ids=[p[0] for p in PARTS])
def test_keystone_needs_no_token_but_each_keystone_field_names_itself(section, cls, _policies):
    config = cfg.build(cls, section, dict(KEYSTONE))
    assert config.token == ""
    settings = KeystoneSettings.from_config(config)
    conf = settings.middleware_conf()
    assert conf["delay_auth_decision"] is False and conf["http_connect_timeout"] == 10
    assert conf["www_authenticate_uri"] == KEYSTONE["keystone_auth_url"]
    assert "pw" not in repr(settings)
    for name in ("keystone_auth_url", "keystone_username", "keystone_password",
                 "keystone_project_name"):
        values = {k: v for k, v in KEYSTONE.items() if k != name}
        with pytest.raises(cfg.ConfigError, match=rf"\[{section}\] {name}: required with "
                                                  r"auth_strategy = keystone"):
            cfg.build(cls, section, values)


def test_the_consumer_needs_the_project_whose_tokens_deliver_alarms():
    with pytest.raises(cfg.ConfigError, match=r"keystone_alarm_project_id: required"):
        cfg.build(ConsumerConfig, "consumer", dict(KEYSTONE))
    assert cfg.build(ConsumerConfig, "consumer", {**KEYSTONE, "keystone_alarm_project_id": "p"}
                     ).keystone_alarm_project_id == "p"


def test_a_policy_file_that_is_missing_or_not_rules_is_a_config_error(tmp_path):
    with pytest.raises(cfg.ConfigError, match="policy_file: .*No such file"):
        cfg.build(VimConfig, "vim", {**KEYSTONE, "policy_file": str(tmp_path / "none.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(cfg.ConfigError, match="policy_file: .*must map rule names"):
        cfg.build(VimConfig, "vim", {**KEYSTONE, "policy_file": str(bad)})


@pytest.mark.parametrize("module", [inspector_policies, controller_policies,
                                    notifier_policies, consumer_policies, vim_policies],
                         ids=lambda m: m.__name__)
def test_every_endpoints_rule_is_registered_and_documented(module):
    names = {r.name for r in module.RULES}
    assert set(module.ENDPOINTS.values()) - {IN_ROUTE} <= names
    assert all(r.description and r.operations and r.scope_types == ["project"]
               for r in module.RULES)


def test_admin_rules_refuse_a_member_and_owner_rules_keep_to_the_project():
    policy = Policy(notifier_policies.RULES)
    assert not policy.allows(notifier_policies.EVENTS_CREATE, ALICE)
    assert policy.allows(notifier_policies.EVENTS_CREATE, ADMIN)
    assert policy.allows(notifier_policies.ALARMS_SHOW, ALICE, {"project_id": "p-a"})
    assert not policy.allows(notifier_policies.ALARMS_SHOW, ALICE, {"project_id": "p-b"})
    assert policy.allows(notifier_policies.ALARMS_SHOW, ADMIN, {"project_id": "p-b"})
    assert not policy.allows(notifier_policies.ALARMS_ALL_PROJECTS, ALICE)
    assert not policy.allows("notifier:no-such-rule", ADMIN)
    domain_scoped = Identity("u", "", frozenset({"admin"}), domain_id="default")
    assert not policy.allows(notifier_policies.EVENTS_CREATE, domain_scoped)


def test_a_policy_file_overrides_a_default_by_name(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text('"notifier:events:create": "role:member"\n')
    policy = Policy(notifier_policies.RULES, str(path))
    assert policy.allows(notifier_policies.EVENTS_CREATE, ALICE)
    assert not policy.allows(notifier_policies.ALARMS_ALL_PROJECTS, ALICE)  # the others stay


def test_every_route_of_the_controller_names_a_rule(tmp_path):
    from sqlalchemy import create_engine

    from controller.api import create_app
    from controller.embedded import Inventory

    settings = KeystoneSettings.from_config(
        cfg.build(ControllerConfig, "controller", dict(KEYSTONE)))
    app = create_app(Inventory(create_engine(f"sqlite:///{tmp_path}/c.db")), "", "keystone",
                     settings)
    endpoints = {r.endpoint for r in app.url_map.iter_rules()} - {"static"}
    assert endpoints == set(controller_policies.ENDPOINTS)


def _confirmed(project: str, roles: str = "member") -> dict:
    """The headers keystonemiddleware sets for a valid token (set by hand here: no
    middleware in front of the app)."""
    return {"X-Identity-Status": "Confirmed", "X-Project-Id": project, "X-User-Id": "u",
            "X-Roles": roles}


def test_an_alternative_admits_its_route_only_when_no_token_the_policy_allows_did():
    from doctor.api import json_app
    from doctor.policy import guard

    app = json_app("t", auth_strategy="noauth")  # its JSON errors; guard is the check
    checked = []
    passes = {"now": False}

    def signature_ok() -> bool:
        checked.append(1)
        return passes["now"]

    project = {"project_id": "p-a"}
    guard(app, Policy(consumer_policies.RULES), consumer_policies.ENDPOINTS,
          {e: (lambda _who: project) for e in consumer_policies.ENDPOINTS},
          {"failure": signature_ok})
    app.add_url_rule("/failure", "failure", lambda: "taken", methods=["POST"])
    app.add_url_rule("/failures", "list_failures", lambda: "list")
    http = app.test_client()
    # a token the policy allows: taken, the alternative not even asked
    assert http.post("/failure", headers=_confirmed("p-a")).status_code == 200
    assert checked == []
    # no token, or one the policy refuses: the alternative decides
    assert http.post("/failure").status_code == 401
    assert http.post("/failure", headers=_confirmed("p-b")).status_code == 403
    passes["now"] = True
    assert http.post("/failure").status_code == 200
    assert http.post("/failure", headers=_confirmed("p-b")).status_code == 200
    # other routes take tokens only
    assert http.get("/failures").status_code == 401
    assert http.get("/failures", headers=_confirmed("p-b")).status_code == 403
    assert http.get("/failures", headers=_confirmed("p-a")).status_code == 200


def test_the_consumer_defers_the_middlewares_decision_only_with_an_alarm_secret():
    from consumer.sample import SampleConsumer, create_app

    seen = []
    values = {**KEYSTONE, "keystone_alarm_project_id": "p-a"}
    for extra in ({}, {"alarm_secret": "s"}):
        app = create_app(SampleConsumer(cfg.build(ConsumerConfig, "consumer",
                                                  {**values, **extra})))
        seen.append(app.wsgi_app._conf.get("delay_auth_decision"))  # the AuthProtocol's
    assert seen == [False, True]
