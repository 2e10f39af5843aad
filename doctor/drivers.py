"""Drivers chosen by name, the way OpenStack services load theirs: entry points, through
stevedore.

Each role that has drivers owns one namespace (``doctor.controller``: the Controller the
Inspector calls; ``doctor.notifier``: how events reach a Notifier), registered in setup.py.
A driver is a factory that takes the options object of the part that uses it (an
``InspectorConfig``, say) and returns the driver's instance. A package of one's own can add
a driver by declaring an entry point in the same namespace; no ``if`` to edit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import metadata
from typing import Any

CONTROLLER = "doctor.controller"
NOTIFIER = "doctor.notifier"


class DriverNotFound(LookupError):
    """No driver of that name in the namespace; the message lists the known ones."""


@functools.cache
def names(namespace: str) -> tuple[str, ...]:
    """The drivers registered in ``namespace``, sorted."""
    return tuple(sorted({ep.name for ep in metadata.entry_points(group=namespace)}))


def load(namespace: str, name: str) -> Callable[..., Any]:
    """The factory of driver ``name`` in ``namespace``."""
    from stevedore import driver, exception

    try:
        return driver.DriverManager(namespace, name, invoke_on_load=False).driver
    except exception.NoMatches:
        raise DriverNotFound(f"unknown driver {name!r}; known: "
                             f"{', '.join(names(namespace)) or 'none (is the project installed?)'}"
                             ) from None
