"""Benchmarks' input and output: their list flags, a table for people, JSON for machines."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/min/mean in milliseconds."""
    if not seconds:
        return {}
    ms = [s * 1000.0 for s in seconds]
    return {"n": len(ms), "min": round(min(ms), 2), "p50": round(percentile(ms, 0.5), 2),
            "p90": round(percentile(ms, 0.9), 2), "p99": round(percentile(ms, 0.99), 2),
            "max": round(max(ms), 2), "mean": round(sum(ms) / len(ms), 2)}


def emit(result: dict[str, Any], tables: Sequence[str], json_path: str = "") -> None:
    """Print the tables, then the JSON (also to ``json_path`` when given)."""
    for text in tables:
        print(text)
        print()
    encoded = json.dumps(result, indent=2, sort_keys=True)
    print(encoded)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            handle.write(encoded + "\n")


def counts(prog: str, flag: str, text: str, low: int, high: int) -> list[int]:
    """A comma-separated list of counts in low..high, else exit naming the flag."""
    try:
        found = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        found = []
    if not found or min(found) < low or max(found) > high:
        raise SystemExit(f"{prog}: error: {flag} {text!r}: comma-separated counts, "
                         f"{low}..{high}")
    return found


def choices(prog: str, flag: str, text: str, allowed: set[str], expected: str) -> list[str]:
    """A comma-separated list of some of ``allowed``, else exit naming the flag and what it
    expects."""
    found = [c.strip() for c in text.split(",") if c.strip()]
    if not found or set(found) - allowed:
        raise SystemExit(f"{prog}: error: {flag} {text!r}: {expected}")
    return found
