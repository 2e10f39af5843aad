"""notifier.errors: an error names its field, in doctor's JSON shape and Aodh's."""

from flask import Flask

from notifier.errors import aodh_error, fail


def test_fail_names_the_field_in_the_message_and_defaults_to_400():
    error = fail("event_rule.query[0].op", "'like' is not one of eq, ne")
    assert (error.status, error.field) == (400, "event_rule.query[0].op")
    assert error.message == "event_rule.query[0].op: 'like' is not one of eq, ne"
    assert str(error) == error.message
    assert fail("project_id", "Not Authorized to access project p9", 401).status == 401


def test_aodh_error_carries_the_faultstring_aodhclient_shows():
    with Flask(__name__).app_context():
        response, status = aodh_error(400, "name: required", "name")
        assert status == 400
        assert response.json == {"error": "name: required", "field": "name",
                                 "error_message": {"faultcode": "Client",
                                                   "faultstring": "name: required",
                                                   "debuginfo": None}}
        response, status = aodh_error(503, "events not published")
        assert status == 503 and "field" not in response.json
        assert response.json["error_message"]["faultcode"] == "Server"
