"""The one batching outbox: order, batches, flush and close, and a failing delivery."""

from __future__ import annotations

import threading

import pytest

from doctor.outbox import Outbox, OutboxClosed, OutboxFull
from tests.waiting import wait_until


class Gate:
    """A deliver callable that records batches and can be held shut."""

    def __init__(self, fail_on=None):
        self.batches: list[list] = []
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, batch):
        self.entered.set()
        self.open.wait(5)
        self.batches.append(list(batch))
        if self.fail_on is not None and self.fail_on in batch:
            raise RuntimeError("delivery failed")

    def items(self):
        return [item for batch in self.batches for item in batch]


def test_what_waits_goes_in_order_in_batches_of_at_most_max_batch():
    gate = Gate()
    gate.open.clear()
    outbox = Outbox(gate, name="test-outbox", max_batch=3).start()
    outbox.put(0)
    assert gate.entered.wait(5)  # 0 is being delivered alone; the rest waits
    outbox.put_many(range(1, 8))
    assert outbox.pending() == 7
    gate.open.set()
    assert outbox.flush(5)
    assert gate.items() == list(range(8))
    assert [len(b) for b in gate.batches] == [1, 3, 3, 1]
    assert outbox.close() == []


def test_a_weight_bounds_a_batch_by_its_items_sizes():
    gate = Gate()
    gate.open.clear()
    outbox = Outbox(gate, name="test-outbox", max_batch=5, weight=len).start()
    outbox.put(["a"])
    assert gate.entered.wait(5)
    for item in (["b", "c"], ["d", "e", "f"], ["g"], ["h", "i", "j", "k", "l", "m"], ["n"]):
        outbox.put(item)
    gate.open.set()
    assert outbox.flush(5)
    # Items are taken while the batch holds fewer than 5: a batch may end above it.
    assert gate.batches == [[["a"]], [["b", "c"], ["d", "e", "f"]],
                            [["g"], ["h", "i", "j", "k", "l", "m"]], [["n"]]]
    outbox.close()


def test_close_delivers_within_its_timeout_and_returns_the_rest():
    gate = Gate()
    gate.open.clear()
    outbox = Outbox(gate, name="test-outbox", max_batch=1).start()
    outbox.put_many([1, 2, 3])
    assert gate.entered.wait(5)
    assert not outbox.flush(0.05)  # 1 is held in delivery
    threading.Timer(0.1, gate.open.set).start()
    lost = outbox.close(timeout_s=0.0, join_s=5.0)
    assert lost == [2, 3] and gate.items() == [1]  # the batch in delivery was finished
    assert not outbox.alive()
    with pytest.raises(OutboxClosed):
        outbox.put(4)
    assert outbox.close() == []  # closing again: nothing more


def test_close_waits_for_what_is_queued():
    gate = Gate()
    outbox = Outbox(gate, name="test-outbox").start()
    outbox.put_many(range(100))
    assert outbox.close(timeout_s=5.0) == []
    assert gate.items() == list(range(100))


def test_a_bounded_outbox_refuses_what_does_not_fit():
    gate = Gate()
    outbox = Outbox(gate, name="test-outbox", maxsize=2)  # not started: nothing drains
    outbox.put_many([1, 2])
    with pytest.raises(OutboxFull):
        outbox.put(3)
    assert outbox.pending() == 2
    assert not outbox.flush(1.0)  # no worker: returns at once
    assert outbox.close(timeout_s=5.0) == [1, 2]  # never started: nothing delivered
    assert gate.batches == []


def test_a_failed_delivery_is_logged_and_the_next_batch_goes(caplog):
    gate = Gate(fail_on="bad")
    outbox = Outbox(gate, name="test-outbox", max_batch=1).start()
    outbox.put_many(["bad", "good"])
    assert outbox.flush(5)
    assert gate.items() == ["bad", "good"]
    wait_until(lambda: "test-outbox: delivering 1 items failed" in caplog.text)
    outbox.close()
