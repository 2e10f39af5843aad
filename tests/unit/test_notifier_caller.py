"""notifier.caller: who is asking: as Aodh's noauth mode reads it from the headers, or as the
token says (auth_strategy = token)."""

import pytest
from flask import Flask

from doctor.api import ApiError
from notifier.caller import Caller, noauth_caller


def caller_of(headers):
    with Flask(__name__).test_request_context(headers=headers):
        return noauth_caller()


def test_the_caller_is_what_the_headers_say_with_roles_normalized():
    caller = caller_of({"X-User-Id": " u1 ", "X-Project-Id": " p1 ", "X-Roles": " Admin ,, x"})
    assert caller == Caller("u1", "p1", frozenset({"admin", "x"}))
    assert caller.is_admin


def test_without_a_project_the_caller_is_refused_naming_the_header():
    for headers in [{}, {"X-Project-Id": "  ", "X-User-Id": "u1"}]:
        with pytest.raises(ApiError) as raised:
            caller_of(headers)
        assert (raised.value.status, raised.value.field) == (401, "X-Project-Id")
        assert "aodh-noauth" in raised.value.message


def test_a_member_sees_its_own_project_and_an_admin_sees_every_project():
    member = caller_of({"X-User-Id": "u2", "X-Project-Id": "p2", "X-Roles": "member"})
    admin = Caller("u1", "p1", frozenset({"admin"}))
    assert not member.is_admin and member.user_id == "u2"
    assert member.may_see({"project_id": "p2"})
    assert not member.may_see({"project_id": "p1"}) and not member.may_see({})
    assert admin.may_see({"project_id": "p2"}) and admin.may_see({})
    assert caller_of({"X-Project-Id": "p3"}) == Caller("", "p3", frozenset())
