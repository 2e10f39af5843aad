"""What the notifier's durable hot path costs in commits: time the store calls alone.

Run from the repository: ``python -m bench.commit_cost [repeats]``, on a quiet machine.
SQLite in a temp dir (WAL, synchronous=NORMAL, as doctor.store makes it)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from notifier.embedded import stored_actions
from notifier.evaluator import Evaluator, history_entry
from notifier.store import AlarmStore
from tests.unit.test_notifier_eval import alarm, event

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def pct(samples: list[float], q: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(q * len(samples)))]


def show(what: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{what:58s} median {statistics.median(ms):6.3f} ms  p99 {pct(ms, 0.99):6.3f} ms")


def run(vms: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = AlarmStore(f"sqlite:///{tmp}/n.db")
        evaluator = Evaluator()
        vm_ids = [f"vm-{i}" for i in range(vms)]
        for vm in vm_ids:
            data = alarm(query=[("traits.instance_id", "eq", vm)], repeat_actions=True)
            store.insert_alarm(data, 1, [history_entry(data, "creation", data, "t")])
            evaluator.add(data)
        events = [event(traits=[["instance_id", 1, vm], ["state", 1, "error"]]) for vm in vm_ids]
        inbox, evaluation, evaluate_only, cleanup = [], [], [], []
        for _ in range(REPEATS):
            started = time.perf_counter()
            row_id = store.add_inbox(events, time.time())
            inbox.append(time.perf_counter() - started)

            started = time.perf_counter()
            result = evaluator.evaluate(events)
            actions = stored_actions(result.firings)
            history = result.history()
            evaluate_only.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.commit_evaluation(list(result.changed.values()), history, actions, [row_id])
            evaluation.append(time.perf_counter() - started)

            started = time.perf_counter()
            store.remove_actions([a.request_id for a in actions])
            cleanup.append(time.perf_counter() - started)
        print(f"-- {vms} VMs per batch ({vms} events, {vms} firings, {vms} actions), "
              f"{REPEATS} batches")
        show("1. inbox insert (before the 202)", inbox)
        show("   evaluation + outbox rows + history built (no I/O)", evaluate_only)
        show("2. evaluation commit (alarms, history, outbox, inbox delete)", evaluation)
        show("3. outbox delete of the batch (cleaner, off the hot path)", cleanup)
        store.close()


if __name__ == "__main__":
    for n in (1, 50, 300):
        run(n)
