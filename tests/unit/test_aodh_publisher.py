"""The Aodh publisher's messages: one per events_per_message events, in order."""

from __future__ import annotations

import pytest

from doctor.events import instance_update
from notifier.aodh import AodhPublisher


@pytest.mark.parametrize("per_message, sizes", [(0, [12]), (5, [5, 5, 2]), (12, [12])])
def test_a_failures_events_go_in_messages_of_events_per_message(per_message, sizes):
    publisher = AodhPublisher("fake:", events_per_message=per_message)
    sent = []
    publisher.notifier.sample = lambda ctxt, event_type, payload: sent.append(payload)
    try:
        events = [instance_update(f"vm-{i}", "error", "c1", "p") for i in range(12)]
        publisher.publish(events)
        assert [len(batch) for batch in sent] == sizes
        assert [e for batch in sent for e in batch] == events
    finally:
        publisher.close()
