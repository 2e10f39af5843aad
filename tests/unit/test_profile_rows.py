"""The run's per-step profile: what the table and the JSON count."""

from __future__ import annotations

from doctor import profiler
from scenario.fault_management import profile_rows


def test_only_what_was_recorded_by_the_end_of_the_measurement_counts(tmp_path):
    path = str(tmp_path / "profile.jsonl")
    recorder = profiler.Profiler(path)
    recorder.record("T00", at=100.0)
    recorder.record("T09", at=100.4, alarm_id="a")
    recorder.record("T09", at=100.5, alarm_id="b")
    recorder.record("T09", at=102.0, alarm_id="a")  # fired again by the clean-up

    rows, data = profile_rows(path, until=101.0)

    assert data["T09"] == {"step": "received alarm", "first_ms": 400.0, "last_ms": 500.0,
                           "count": 2}
    assert ["T09", "received alarm", "400.0", "500.0", 2] in rows
    assert ["T05", "notified VM error", "-", "-", 0] in rows
    assert profile_rows(path)[1]["T09"]["count"] == 3
