"""What a Keystone token may do: oslo.policy rules, registered in code, as OpenStack does.

Each role declares its rules (``DocumentedRuleDefault``: name, default check string, the
operations it guards) in its ``policies.py``; ``Policy`` registers them with the base
rules below, and an optional ``policy_file`` (YAML or JSON, oslo.policy's format) overrides
any of them. ``guard`` checks, before each request, the rule of the route being served; a
route that names no rule is refused, so a new route cannot be left open by mistake. A
denied request is a 403 whose JSON names the rule.

The base rules follow Aodh's and Nova's defaults: ``context_is_admin`` (the ``admin``
role) and ``admin_or_owner`` (admin, or a token of the target's project). The target of a
check is a dict whose ``project_id`` is the object's project (by default the token's own
project, for routes without one).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask, g, request
from oslo_policy import policy as oslo_policy

from doctor.api import ApiError
from doctor.config import ConfigError
from doctor.keystone import Identity, KeystoneSettings, identity, protect

ADMIN = "rule:context_is_admin"
ANYONE = "@"  # any valid token
ADMIN_OR_OWNER = "rule:admin_or_owner"
PROJECT_SCOPE = ["project"]
IN_ROUTE = ""  # guard's endpoints: the route checks its rule itself (it depends on the body)

BASE_RULES = [
    oslo_policy.RuleDefault("context_is_admin", "role:admin",
                            description="Who is an administrator: a token with the admin "
                                        "role."),
    oslo_policy.RuleDefault("admin_or_owner",
                            "rule:context_is_admin or project_id:%(project_id)s",
                            description="An administrator, or a token of the project that "
                                        "owns the object."),
]


def rule(name: str, check: str, description: str,
         operations: Iterable[tuple[str, str]]) -> oslo_policy.DocumentedRuleDefault:
    """A project-scoped documented rule; ``operations``: (method, path) pairs."""
    return oslo_policy.DocumentedRuleDefault(
        name=name, check_str=check, description=description,
        operations=[{"method": method, "path": path} for method, path in operations],
        scope_types=PROJECT_SCOPE)


class PolicyDenied(ApiError):
    """A 403: the rule ``rule`` does not allow the request's token."""

    def __init__(self, rule_name: str) -> None:
        super().__init__(403, f"policy does not allow this request: rule {rule_name}")
        self.rule = rule_name


class Policy:
    """An oslo.policy enforcer of ``rules`` (and the base rules), ``policy_file`` over them.

    A ``policy_file`` that is missing or not valid is a ConfigError naming the option, at
    start rather than at the first request."""

    def __init__(self, rules: Iterable[oslo_policy.RuleDefault], policy_file: str = "") -> None:
        from oslo_config import cfg as oslo_cfg

        conf = oslo_cfg.ConfigOpts()
        conf([], project="doctor", default_config_files=[], default_config_dirs=[])
        # Never a file found by oslo.config's search (policy.yaml in /etc/doctor, ~, ...)
        # nor a policy.d: the given file, or none (os.devnull: no rule overridden).
        path = os.path.abspath(policy_file) if policy_file else os.devnull
        self.enforcer = oslo_policy.Enforcer(conf, policy_file=path, use_conf=True,
                                             fallback_to_json_file=False)
        conf.set_override("policy_dirs", [], group="oslo_policy")
        self.enforcer.register_defaults([*BASE_RULES, *rules])
        self.policy_file = policy_file
        if policy_file:
            self._load_file(policy_file)
        else:
            self.enforcer.load_rules()

    def _load_file(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(f"policy_file: {path}: {exc.strerror}") from None
        try:
            self.enforcer.load_rules(force_reload=True)
        except Exception as exc:  # noqa: BLE001  (oslo.policy's parse errors have no base)
            raise ConfigError(f"policy_file: {path}: not a valid policy file: "
                              f"{type(exc).__name__}: {exc}") from None

    @property
    def names(self) -> list[str]:
        return sorted(self.enforcer.registered_rules)

    def allows(self, rule_name: str, who: Identity, target: Mapping[str, Any] | None = None
               ) -> bool:
        """Whether ``rule_name`` lets ``who`` act on ``target`` (default: its own project).
        An unknown rule allows nothing."""
        if rule_name not in self.enforcer.registered_rules:
            return False
        target = dict(target) if target is not None else {"project_id": who.project_id}
        return bool(self.enforcer.enforce(rule_name, target, who.credentials()))

    def enforce(self, rule_name: str, who: Identity,
                target: Mapping[str, Any] | None = None) -> None:
        """``allows``, or a 403 naming the rule."""
        if not self.allows(rule_name, who, target):
            raise PolicyDenied(rule_name)


def current_identity() -> Identity:
    """The identity ``guard`` found for the request being served (401 without one)."""
    who = g.get("doctor_identity")
    if who is None:
        raise ApiError(401, "a valid X-Auth-Token is required", "X-Auth-Token")
    return who


Target = Callable[[Identity], Mapping[str, Any] | None]
# A check of the request being served (a signature, say) that admits it without a token.
Alternative = Callable[[], bool]


def guard(app: Flask, policy: Policy, rules: Mapping[str, str],
          targets: Mapping[str, Target] | None = None,
          alternatives: Mapping[str, Alternative] | None = None) -> None:
    """Before each request: the identity the middleware confirmed (else 401), then the rule
    that ``rules`` (endpoint -> rule name) names for the route (else 403; a route without a
    rule is refused). ``targets`` (endpoint -> function of the identity) gives a route's
    target, when it is not the token's own project. A route may check more rules itself
    (``policy.enforce(..., current_identity(), target)``) once it knows the object.

    ``alternatives`` (endpoint -> check) lets a request to that route in without a token the
    rule allows when the check passes: such a request then has no identity
    (``current_identity`` is a 401). Only routes named there take anything but a token;
    those need the middleware's ``delay_auth_decision`` (``KeystoneGuard`` sets it)."""
    unknown = sorted(set(rules.values()) - set(policy.names) - {IN_ROUTE})
    if unknown:
        raise ValueError(f"rule {unknown[0]} is not registered")
    targets = targets or {}
    alternatives = alternatives or {}

    def _check() -> None:
        who = identity()
        endpoint = request.endpoint
        alternative = alternatives.get(endpoint) if endpoint is not None else None
        if who is None:
            if alternative is not None and alternative():
                return
            raise ApiError(401, "a valid X-Auth-Token is required", "X-Auth-Token")
        g.doctor_identity = who
        if endpoint is None:  # no route: let Flask answer 404 or 405
            return
        name = rules.get(endpoint)
        if name is None:
            raise PolicyDenied(f"(none for {endpoint})")
        if name == IN_ROUTE:
            return
        target_of = targets.get(endpoint)
        try:
            policy.enforce(name, who, target_of(who) if target_of else None)
        except PolicyDenied:
            if alternative is not None and alternative():
                g.doctor_identity = None  # let in by the alternative, not by the token
                return
            raise

    app.before_request(_check)


def sample(rules: Iterable[oslo_policy.RuleDefault]) -> str:
    """A Markdown table of ``rules`` (and the base rules): name, default, meaning."""
    lines = ["| rule | default | what it allows |", "|---|---|---|"]
    for item in [*BASE_RULES, *rules]:
        ops = getattr(item, "operations", None) or []
        where = ", ".join(f"`{op['method']} {op['path']}`" for op in ops)
        text = (item.description or "").rstrip(".") + (f" ({where})" if where else "")
        lines.append(f"| `{item.name}` | `{item.check_str}` | {text} |")
    return "\n".join(lines)


class KeystoneGuard:
    """``auth_strategy = keystone`` for one app (``doctor.api.json_app``'s ``keystone``):
    keystonemiddleware around it (``settings``), then ``guard`` with ``rules`` (the role's
    rule defaults) and ``endpoints`` (endpoint -> rule name). With ``alternatives`` (see
    ``guard``) the middleware defers its decision to the app (``delay_auth_decision``), which
    answers 401 itself (the middleware adds WWW-Authenticate)."""

    def __init__(self, settings: KeystoneSettings, rules: Iterable[oslo_policy.RuleDefault],
                 endpoints: Mapping[str, str],
                 targets: Mapping[str, Target] | None = None,
                 alternatives: Mapping[str, Alternative] | None = None) -> None:
        self.alternatives = dict(alternatives or {})
        self.settings = dataclasses.replace(settings, delay_auth_decision=True) \
            if self.alternatives else settings
        self.policy = Policy(rules, settings.policy_file)
        self.endpoints = dict(endpoints)
        self.targets = dict(targets or {})

    def install(self, app: Flask) -> None:
        guard(app, self.policy, self.endpoints, self.targets, self.alternatives)
        protect(app, self.settings)
