import io
import json
import time

from doctor.events import HOST_DOWN, HOST_UP, HostEvent
from monitor.sender import InspectorSender
from testkit.eventsink import EventSink
from tests.waiting import wait_until


def make_sender(url, deliveries, **kwargs):
    sender = InspectorSender(url, timeout_s=1.0, retry_initial_s=0.01, retry_max_s=0.05,
                         on_delivered=deliveries.append, **kwargs)
    sender.start()
    return sender




def test_server_errors_are_retried_with_the_same_event_id():
    sink = EventSink(status=503).start()
    deliveries = []
    sender = make_sender(sink.url, deliveries)
    try:
        event = HostEvent.new(HOST_DOWN, "compute-1", "m")
        sender.submit(event)
        wait_until(lambda: len(sink.requests) >= 3)
        sink.status = 202
        wait_until(lambda: deliveries)
        assert deliveries[0].status == 202 and deliveries[0].attempts >= 4
        ids = {e["details"]["monitor_event_id"] for e in sink.events()}
        assert ids == {event.monitor_event_id}
    finally:
        sender.stop()
        sink.stop()


def test_client_errors_are_final():
    sink = EventSink(status=400).start()
    deliveries = []
    sender = make_sender(sink.url, deliveries)
    try:
        sender.submit(HostEvent.new(HOST_DOWN, "compute-1", "m"))
        wait_until(lambda: deliveries)
        time.sleep(0.2)
        assert len(sink.requests) == 1 and deliveries[0].status == 400
    finally:
        sender.stop()
        sink.stop()


def test_queued_events_go_in_order_and_in_batches():
    sink = EventSink(status=503).start()
    deliveries = []
    sender = make_sender(sink.url, deliveries)
    try:
        events = [HostEvent.new(HOST_DOWN, f"c{i}", "m") for i in range(5)]
        for event in events:
            sender.submit(event)
        events.append(HostEvent.new(HOST_UP, "c0", "m"))
        sender.submit(events[-1])
        wait_until(lambda: len(sink.requests) >= 2)
        sink.status = 202
        wait_until(lambda: len(deliveries) == 6)
        accepted = [e["details"]["monitor_event_id"] for e in sink.events()]
        order = list(dict.fromkeys(accepted))
        assert order == [e.monitor_event_id for e in events]
        assert max(len(body) for _, body in sink.requests) > 1  # several in one request
    finally:
        sender.stop()
        sink.stop()


def test_without_url_events_are_json_lines():
    stream = io.StringIO()
    deliveries = []
    sender = make_sender("", deliveries, stream=stream)
    event = HostEvent.new(HOST_DOWN, "compute-1", "m")
    sender.submit(event)
    wait_until(lambda: deliveries)
    sender.stop()
    assert json.loads(stream.getvalue()) == event.to_doctor()


def test_stop_gives_up_on_an_unreachable_inspector_in_bounded_time():
    deliveries = []
    sender = make_sender("http://127.0.0.1:9", deliveries)  # discard port: refused
    sender.submit(HostEvent.new(HOST_DOWN, "compute-1", "m"))
    time.sleep(0.1)
    started = time.monotonic()
    sender.stop(timeout_s=0.2)
    assert time.monotonic() - started < 3
    assert deliveries and deliveries[0].status is None


def test_stop_without_start_is_harmless():
    InspectorSender("http://127.0.0.1:9").stop()


def test_no_token_from_the_token_source_is_retried_until_there_is_one():
    sink = EventSink(status=202).start()
    deliveries = []
    keystone_up = []

    def tokens() -> str:
        if not keystone_up:
            raise RuntimeError("cloud c: no Keystone token: ConnectFailure")
        return "a-keystone-token"

    calls = []
    sender = make_sender(sink.url, deliveries,
                         token=lambda: calls.append(1) or tokens())
    try:
        event = HostEvent.new(HOST_DOWN, "compute-1", "m")
        sender.submit(event)
        wait_until(lambda: len(calls) >= 3)
        assert sink.requests == [] and deliveries == []  # nothing sent, nothing claimed
        keystone_up.append(True)
        wait_until(lambda: deliveries)
        assert deliveries[0].status == 202 and deliveries[0].attempts >= 4
        assert [e["details"]["monitor_event_id"] for e in sink.events()] == \
            [event.monitor_event_id]
    finally:
        sender.stop()
        sink.stop()
