"""doctor.api's auth strategies on the parts' apps: nothing answers without the token by
default, and an app cannot be built to answer anyone by mistake."""

from __future__ import annotations

import pytest

from controller.api import create_app as controller_app
from controller.embedded import Inventory
from doctor.api import json_app, token_matches
from doctor.store import make_engine


@pytest.fixture
def inventory(tmp_path):
    found = Inventory(make_engine(f"sqlite:///{tmp_path}/controller.db"))
    yield found
    found.close()


def test_the_controllers_api_refuses_the_attacks_without_the_token(inventory):
    http = controller_app(inventory, "controller-token").test_client()
    server = inventory.create_server("vnf", "tenant", "compute-1")
    for headers in ({}, {"X-Auth-Token": "wrong"}, {"X-Auth-Token": ""}):
        assert http.post("/v1/servers", headers=headers,
                         json={"name": "x", "project_id": "p", "host": "h"}).status_code == 401
        assert http.put("/v1/hosts/compute-1", headers=headers,
                        json={"forced_down": True}).status_code == 401
        assert http.delete(f"/v1/servers/{server.id}", headers=headers).status_code == 401
        assert http.get("/v1/servers", headers=headers).status_code == 401
    assert [s.id for s in inventory.list_servers()] == [server.id]
    assert not any(h.forced_down for h in inventory.list_hosts())
    ok = {"X-Auth-Token": "controller-token"}
    assert http.put("/v1/hosts/compute-1", headers=ok, json={"forced_down": True}).status_code \
        == 200


def test_an_app_with_auth_strategy_token_and_no_token_cannot_be_built(inventory):
    with pytest.raises(ValueError, match="needs a token"):
        json_app("part")
    with pytest.raises(ValueError, match="needs a token"):
        controller_app(inventory)
    with pytest.raises(ValueError, match="keystone"):
        json_app("part", "t", "keystone")
    anyone = controller_app(inventory, auth_strategy="noauth").test_client()
    assert anyone.get("/v1/servers").status_code == 200


def test_tokens_are_compared_whole_and_never_empty():
    assert token_matches("abc", "abc")
    assert not token_matches("ab", "abc") and not token_matches("abcd", "abc")
    assert not token_matches("", "")
