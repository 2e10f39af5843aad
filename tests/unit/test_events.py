import uuid

import pytest

from doctor import clock
from doctor.events import (
    HOST_DOWN,
    MAX_TEXT,
    EventError,
    HostEvent,
    instance_update,
    parse_ceilometer_event,
    parse_ceilometer_events,
    parse_host_events,
)


def test_event_round_trips_through_the_contract_json():
    event = HostEvent.new(HOST_DOWN, "compute-1", "mon-a", at=1795309024.123456)
    body = event.to_doctor()
    assert body == {
        "time": "2026-11-22T00:57:04.123456+00:00",
        "type": "compute.host.down",
        "details": {"hostname": "compute-1", "status": "down", "monitor": "mon-a",
                    "monitor_event_id": event.monitor_event_id},
    }
    # Read at the time it was made: an event older than a day is refused (see below).
    assert parse_host_events([body], now=event.time) == [event]
    assert parse_host_events(body, now=event.time) == [event]  # a bare object, as older
    # monitors sent


def test_every_incident_gets_its_own_id():
    ids = {HostEvent.new(HOST_DOWN, "c", "m").monitor_event_id for _ in range(100)}
    assert len(ids) == 100


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ("down", "body"),
    ([{"type": "compute.host.down", "time": "x", "details": {}}], "body[0].time"),
    ([{"type": "compute.host.sideways"}], "body[0].type"),
    ([{"type": "compute.host.down", "time": "2026-11-21T10:00:00Z"}], "body[0].details"),
    ([{"type": "compute.host.down", "time": "2026-11-21T10:00:00Z",
       "details": {"hostname": "c1", "monitor": "m"}}], "body[0].details.monitor_event_id"),
    ([{"type": "compute.host.up", "time": "2026-11-21T10:00:00Z",
       "details": {"hostname": "c1", "monitor": "m", "monitor_event_id": "1",
                   "status": "down"}}], "body[0].details.status"),
])
def test_malformed_events_name_the_field(body, field):
    with pytest.raises(EventError) as info:
        parse_host_events(body)
    assert info.value.field == field


def test_naive_times_are_utc():
    assert clock.parse_iso("2026-11-21T10:00:00") == clock.parse_iso("2026-11-21T10:00:00+00:00")


# -- bounds ---------------------------------------------------------------------------------

def host_event(**details):
    fields = {"hostname": "c1", "monitor": "m", "monitor_event_id": "m:c1:1", **details}
    return {"type": "compute.host.down", "time": clock.isoformat(clock.now()),
            "details": fields}


@pytest.mark.parametrize("key", ["hostname", "monitor", "monitor_event_id"])
def test_names_and_ids_longer_than_255_characters_are_refused(key):
    assert parse_host_events([host_event(**{key: "x" * MAX_TEXT})])
    with pytest.raises(EventError) as info:
        parse_host_events([host_event(**{key: "x" * (MAX_TEXT + 1)})])
    assert info.value.field == f"body[0].details.{key}"
    with pytest.raises(EventError):
        parse_host_events([host_event(**{key: "x" * 1_000_000})])


def test_a_monitors_own_ids_fit_even_with_the_longest_names():
    event = HostEvent.new(HOST_DOWN, "h" * MAX_TEXT, "m" * MAX_TEXT)
    assert len(event.monitor_event_id) <= MAX_TEXT
    [parsed] = parse_host_events([event.to_doctor()])
    assert parsed.monitor_event_id == event.monitor_event_id
    other = HostEvent.new(HOST_DOWN, "h" * MAX_TEXT, "m" * MAX_TEXT)
    assert other.monitor_event_id != event.monitor_event_id


@pytest.mark.parametrize("stamp, problem", [
    ("9999-12-31T23:59:59+00:00", "in the future"),
    ("0001-01-01T00:00:00+00:00", "older than"),
    ("0001-01-01T00:00:00+05:00", "older than"),
])
def test_times_far_ahead_or_long_past_are_400_naming_time(stamp, problem):
    with pytest.raises(EventError) as info:
        parse_host_events([{**host_event(), "time": stamp}])
    assert info.value.field == "body[0].time" and problem in str(info.value)


def test_the_time_window_is_300_s_ahead_and_a_day_behind_by_default_and_configurable():
    now = 1_800_000_000.0

    def at(offset, **bounds):
        return parse_host_events([{**host_event(), "time": clock.isoformat(now + offset)}],
                                 now=now, **bounds)

    assert at(299) and at(-86_399)
    for offset in (301, -86_401):
        with pytest.raises(EventError, match="body.0..time"):
            at(offset)
    assert at(3000, max_future_s=3600) and at(-7 * 86_400, max_age_s=8 * 86_400)
    with pytest.raises(EventError):
        at(10, max_future_s=5)


def test_one_request_carries_at_most_max_events():
    events = [host_event(monitor_event_id=f"m:c1:{i}") for i in range(1001)]
    with pytest.raises(EventError) as info:
        parse_host_events(events)
    assert info.value.field == "body" and "at most 1000" in str(info.value)
    assert len(parse_host_events(events, max_events=2000)) == 1001
    assert len(parse_host_events(events[:1000])) == 1000


def note(**changes):
    return {**instance_update(str(uuid.uuid4()), "error", "c1", "p1"), **changes}


@pytest.mark.parametrize("traits, problem", [
    ([["instance_id", 1, {"a": "b"}]], "a string or a number"),
    ([["instance_id", 1, ["a"]]], "a string or a number"),
    ([["instance_id", 1, None]], "a string or a number"),
    ([["flag", 1, True]], "a string or a number"),
    ([["load", 3, float("inf")]], "finite"),
    ([["instance_id", 1, "x" * (MAX_TEXT + 1)]], "longer than"),
    ([["x" * (MAX_TEXT + 1), 1, "a"]], "name"),
    ([["", 1, "a"]], "name"),
    ([["instance_id", True, "a"]], "type 1-4"),
    ([["instance_id", 5, "a"]], "type 1-4"),
])
def test_a_trait_must_be_a_short_name_a_type_and_a_string_or_finite_number(traits, problem):
    with pytest.raises(EventError) as info:
        parse_ceilometer_event(note(traits=[["state", 1, "error"], *traits]), "body[0]")
    assert info.value.field == "body[0].traits[1]" and problem in str(info.value)


def test_traits_raw_and_ids_are_bounded():
    assert parse_ceilometer_event(note(traits=[["n", 2, 5], ["f", 3, 1.5], ["t", 4, "x"]]))
    for event, field in [
        (note(traits=[[f"t{i}", 1, "v"] for i in range(257)]), "event.traits"),
        (note(event_type="x" * (MAX_TEXT + 1)), "event.event_type"),
        (note(message_id="x" * (MAX_TEXT + 1)), "event.message_id"),
        (note(raw=[]), "event.raw"),
    ]:
        with pytest.raises(EventError) as info:
            parse_ceilometer_event(event)
        assert info.value.field == field
    deep: dict = {}
    inner = deep
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(EventError) as info:
        parse_ceilometer_event(note(raw=deep))
    assert info.value.field == "event.raw"
    assert parse_ceilometer_event(note(raw={"a": {"b": [1, {"c": 2}]}}))


def test_a_list_of_ceilometer_events_is_capped_too():
    with pytest.raises(EventError) as info:
        parse_ceilometer_events([note() for _ in range(1001)])
    assert info.value.field == "body"
    assert len(parse_ceilometer_events([note() for _ in range(1001)], 5000)) == 1001


def test_times_outside_datetimes_range_are_shown_as_its_ends_not_an_error():
    assert clock.isoformat(clock.parse_iso("0001-01-01T00:00:00+05:00")) \
        == "0001-01-01T00:00:00+00:00"
    assert clock.isoformat(1e300) == "9999-12-31T23:59:59.999999+00:00"
    assert clock.isoformat(float("nan")) == "0001-01-01T00:00:00+00:00"
    assert clock.isoformat(0) == "1970-01-01T00:00:00+00:00"
