"""What a Controller promises the Inspector: Nova's calls that Doctor's fault management uses.

Nova's names and meanings: ``force_down`` is ``services.force_down``
(microversion 2.11+), ``reset_state`` is ``servers.reset_state``,
``host_status`` is the server field of microversion 2.16+.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

# Nova's vm_state values; reset_state accepts any of them.
VM_STATES = ("active", "building", "paused", "suspended", "stopped", "rescued", "resized",
             "soft_deleted", "deleted", "error", "shelved", "shelved_offloaded")
HOST_UP, HOST_DOWN, HOST_UNKNOWN = "UP", "DOWN", "UNKNOWN"


R = TypeVar("R", bound="_Record")


class _Record:
    """A frozen dataclass as the REST API's JSON object, and back (extra keys ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        return cls(**{f.name: data[f.name] for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Server(_Record):
    """A VM as the Controller knows it; ``state`` is Nova's vm_state ("active", "error", ...)."""

    id: str
    name: str
    project_id: str
    host: str
    state: str


@dataclass(frozen=True)
class Host(_Record):
    """A compute host; ``forced_down`` is Nova's forced_down flag of its compute service."""

    name: str
    forced_down: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "forced_down", bool(self.forced_down))


class ControllerError(RuntimeError):
    """A Controller call failed; ``status`` is the HTTP status that fits it, when one does."""

    default_status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.default_status


class NotFound(ControllerError):
    """No such server or host."""

    default_status = 404


class Controller(abc.ABC):
    """The inventory the Inspector reads and changes when a host fails."""

    @abc.abstractmethod
    def list_servers(self, host: str | None = None) -> list[Server]:
        """Every server, or only those on ``host``."""

    @abc.abstractmethod
    def force_down(self, host: str, down: bool = True) -> None:
        """Mark ``host``'s compute service forced down (or up again); NotFound if unknown."""

    @abc.abstractmethod
    def reset_state(self, server_id: str, state: str = "error") -> None:
        """Set a server's vm_state; NotFound if there is no such server."""

    # Whether ``reset_states`` sets many servers in one call (the embedded controller). Nova
    # has no such call: the Inspector then resets each server in a call of its own, in
    # parallel.
    batch_reset = False

    def reset_states(self, server_ids: list[str], state: str = "error") -> list[str]:
        """Set the vm_state of every server of ``server_ids``; returns those that do not
        exist. One call each, unless the controller can do better (``batch_reset``)."""
        missing = []
        for server_id in server_ids:
            try:
                self.reset_state(server_id, state)
            except NotFound:
                missing.append(server_id)
        return missing

    @abc.abstractmethod
    def host_status(self, server_id: str) -> str:
        """"UP", "DOWN" (its host is forced down) or "UNKNOWN", as Nova 2.16+ reports it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads."""
