import pytest

from doctor import clock
from doctor.events import HOST_DOWN, EventError, HostEvent, parse_host_events


def test_event_round_trips_through_the_contract_json():
    event = HostEvent.new(HOST_DOWN, "compute-1", "mon-a", at=1795309024.123456)
    body = event.to_doctor()
    assert body == {
        "time": "2026-11-22T00:57:04.123456+00:00",
        "type": "compute.host.down",
        "details": {"hostname": "compute-1", "status": "down", "monitor": "mon-a",
                    "monitor_event_id": event.monitor_event_id},
    }
    assert parse_host_events([body]) == [event]
    assert parse_host_events(body) == [event]  # a bare object, as older monitors sent


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
