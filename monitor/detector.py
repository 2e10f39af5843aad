"""Per-host failure detector: named states, and a suspicion is not a verdict.

    UNKNOWN --reply--> UP --miss--> SUSPECT --misses_before_down misses--> DOWN
                        ^             |                                      |
                        +---reply-----+                                      |
                        +------------ replies_before_up replies -------------+

A single lost packet only makes a host SUSPECT (and the scheduler re-probes it
fast); DOWN needs ``misses_before_down`` consecutive misses. When the monitor
doubts itself (its own link), the last step is held: the host stays SUSPECT
until the monitor trusts its own view again.
"""

from __future__ import annotations

import enum


class HostState(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


MISSING = (HostState.SUSPECT, HostState.DOWN)


class HostDetector:
    """The state machine of one host; the caller supplies replies and misses."""

    __slots__ = ("state", "misses", "replies", "misses_before_down", "replies_before_up")

    def __init__(self, misses_before_down: int, replies_before_up: int) -> None:
        self.state = HostState.UNKNOWN
        self.misses = 0
        self.replies = 0
        self.misses_before_down = misses_before_down
        self.replies_before_up = replies_before_up

    def on_reply(self) -> HostState | None:
        """Record a matching echo reply; returns the new state if it changed."""
        self.misses = 0
        state = self.state
        if state is HostState.UP:
            return None
        if state is HostState.DOWN:
            self.replies += 1
            if self.replies < self.replies_before_up:
                return None
        self.replies = 0
        self.state = HostState.UP
        return HostState.UP

    def on_miss(self, may_go_down: bool = True) -> HostState | None:
        """Record a probe that timed out; ``may_go_down`` False holds the verdict."""
        state = self.state
        self.replies = 0
        if state is HostState.DOWN:
            return None
        self.misses += 1
        if self.misses >= self.misses_before_down and may_go_down:
            self.state = HostState.DOWN
            return HostState.DOWN
        if state is not HostState.SUSPECT:
            self.state = HostState.SUSPECT
            return HostState.SUSPECT
        return None

    @property
    def verdict_due(self) -> bool:
        """A suspect host with enough misses for a verdict (held back so far)."""
        return self.state is HostState.SUSPECT and self.misses >= self.misses_before_down
