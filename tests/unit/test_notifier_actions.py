"""The alarm actions' event loop: per-target and overall bounds, timeouts, TLS, keep-alive."""

from __future__ import annotations

from notifier.actions import ActionDispatcher
from tests.unit.conftest import OK, Scripted
from tests.unit.test_notifier_eval import a_firing
from tests.waiting import wait_until

REQUEST_ID = b"x-openstack-request-id:"


def request_id(head: bytes) -> bytes:
    [line] = [line for line in head.split(b"\r\n") if line.lower().startswith(REQUEST_ID)]
    return line.split(b":", 1)[1].strip()


def gated(make):
    """A consumer that answers each POST once its ``release`` is set."""
    server: Scripted = make(lambda conn, req, head: OK if server.release.wait(10) else None)
    return server


def test_a_slow_consumer_holds_only_its_share_and_connections_are_kept_alive(scripted):
    slow, fast = gated(scripted), scripted(lambda conn, req, head: OK)
    dispatcher = ActionDispatcher(timeout_s=10, workers=4).start()  # 3 per target
    try:
        dispatcher.dispatch([a_firing(slow.url + "/failure")] * 10
                            + [a_firing(fast.url + "/failure")] * 10)
        wait_until(lambda: dispatcher.counts["delivered"] == 10, what="the fast consumer's")
        assert len(fast.requests) == 10 and fast.connections == 1
        assert len(slow.requests) == 3 == dispatcher.per_target  # received, not answered yet
        assert dispatcher.pending() == 10
        slow.release.set()
        wait_until(lambda: dispatcher.counts["delivered"] == 20, what="the slow consumer's")
        assert len(slow.requests) == 10 and slow.connections == 3
        assert dispatcher.pending() == 0 and dispatcher.counts["retried"] == 0
    finally:
        slow.release.set()
        dispatcher.stop(1)


def test_at_most_workers_posts_are_in_flight_over_all_consumers(scripted):
    consumers = [gated(scripted) for _ in range(3)]
    dispatcher = ActionDispatcher(timeout_s=10, workers=2, per_target=2).start()
    try:
        dispatcher.dispatch([a_firing(c.url + "/failure") for c in consumers])
        wait_until(lambda: sum(len(c.requests) for c in consumers) == 2, what="two POSTs")
        assert [len(c.requests) for c in consumers] == [1, 1, 0]  # the third one waits
        consumers[0].release.set()
        wait_until(lambda: len(consumers[2].requests) == 1, what="the third POST")
        for consumer in consumers:
            consumer.release.set()
        wait_until(lambda: dispatcher.counts["delivered"] == 3, what="all delivered")
    finally:
        for consumer in consumers:
            consumer.release.set()
        dispatcher.stop(1)


def test_a_post_that_times_out_is_retried_with_the_same_request_id(scripted):
    # The first connection never answers; the next ones do.
    server = scripted(lambda conn, req, head:
                      OK if conn > 1 else (server.release.wait(10) and None))
    dispatcher = ActionDispatcher(timeout_s=0.2, retry_initial_s=0.01, retry_max_s=0.02).start()
    try:
        dispatcher.dispatch([a_firing(server.url + "/failure")])
        wait_until(lambda: dispatcher.counts["delivered"] == 1, what="the retry")
        assert dispatcher.counts["retried"] == 1 and dispatcher.counts["sent"] == 2
        assert len({request_id(head) for head in server.requests}) == 1
        assert len(server.requests) == 2
    finally:
        server.release.set()
        dispatcher.stop(1)


def test_an_https_consumer_whose_certificate_does_not_verify_gets_nothing(tls_server, caplog):
    dispatcher = ActionDispatcher(timeout_s=1, retry_for_s=0.2, retry_initial_s=0.05,
                                  retry_max_s=0.05).start()
    try:
        dispatcher.dispatch([a_firing(tls_server + "/failure")])
        wait_until(lambda: dispatcher.counts["lost"] == 1 and dispatcher.pending() == 0,
                   what="the action given up")
        assert dispatcher.counts["delivered"] == 0 and dispatcher.counts["retried"] >= 1
    finally:
        dispatcher.stop(1)
    assert "certificate verify failed" in caplog.text


def test_actions_dispatched_before_the_start_or_after_the_stop(scripted):
    server = scripted(lambda conn, req, head: OK)
    dispatcher = ActionDispatcher(timeout_s=2)
    dispatcher.dispatch([a_firing(server.url + "/failure")])  # no start(): sent all the same
    wait_until(lambda: dispatcher.counts["delivered"] == 1, what="the action")
    dispatcher.stop(1)
    dispatcher.dispatch([a_firing(server.url + "/failure")])
    assert dispatcher.counts["lost"] == 1 and dispatcher.pending() == 0
    assert len(server.requests) == 1
