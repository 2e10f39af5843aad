"""Configuration: one dataclass per role, read from an INI file and the command line.

Each role declares its options once, as dataclass fields made with
``option()``: the default, the help text (with the unit in the name or the
help), and bounds. From that one declaration come the INI parsing, the
command-line flags, the validation (errors name the section and the field),
and the documented table in the README (``doctor config-doc``).

Precedence: built-in defaults < the ``[section]`` of the config file < the environment <
flags. Secret options (``option(..., secret=True)``: tokens, shared secrets, URLs that hold
passwords) have no flag, since ``ps`` shows every process's command line to every user:
they come from the config file or from the environment variable ``DOCTOR_<SECTION>_<OPTION>``
(e.g. ``DOCTOR_INSPECTOR_TOKEN``), and given as a flag they are a usage error. Only secret
options are read from the environment.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the field."""


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    default_factory: Callable[[], Any] | None = None,
    parse: Callable[[str], Any] | None = None,
    flag: bool = True,
    default_doc: str = "",
    secret: bool = False,
    url_with_password: bool = False,
) -> Any:
    """A documented config field. ``parse`` turns one text value into the field's value;
    ``default_doc`` describes a default computed at run time (e.g. "the host name");
    ``secret``: never a flag, read from the config file or ``env_name(section, name)``;
    ``url_with_password``: a URL that may hold a password (a database, a coordination
    backend): a flag only without one, else the config file or ``env_name(section, name)``."""
    meta = {"help": help, "min": min, "max": max, "parse": parse,
            "flag": flag and not secret, "default_doc": default_doc, "secret": secret,
            "url_with_password": url_with_password}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(field: dataclasses.Field, hints: dict[str, Any]) -> Any:
    hint = hints[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        hint = args[0]
    return hint


def _convert_one(kind: Any, text: str) -> Any:
    text = text.strip()
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ValueError(f"expected a {'whole ' if kind is int else ''}number, "
                         f"got {text!r}") from None
    return text


def split_list(text: str) -> list[str]:
    """Comma- or newline-separated items, blanks dropped."""
    return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]


def _convert(field: dataclasses.Field, kind: Any, raw: Any) -> Any:
    parse = field.metadata.get("parse")
    if typing.get_origin(kind) is list:
        (item_kind,) = typing.get_args(kind)
        items = split_list(raw) if isinstance(raw, str) else list(raw)
        if parse:
            return [parse(item) for item in items]
        return [_convert_one(item_kind, item) for item in items]
    if not isinstance(raw, str):
        return raw
    if parse:
        return parse(raw)
    return _convert_one(kind, raw)


def _check_bounds(section: str, field: dataclasses.Field, value: Any, where: str) -> None:
    lo, hi = field.metadata.get("min"), field.metadata.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"[{section}] {field.name}: must be >= {lo:g}, got {value!r}{where}")
        if hi is not None and value > hi:
            raise ConfigError(f"[{section}] {field.name}: must be <= {hi:g}, got {value!r}{where}")


def build(cls: type[T], section: str, values: dict[str, Any], source: str = "") -> T:
    """An instance of the config dataclass ``cls`` from text (or typed) values.

    Unknown keys, unparsable values and values out of bounds raise ConfigError
    naming ``[section] field`` and, when given, where the value came from.
    """
    where = f" (in {source})" if source else ""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"[{section}] {unknown[0]}: unknown option{where}; "
                          f"known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, raw in values.items():
        field = fields[name]
        try:
            value = _convert(field, _base_type(field, hints), raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"[{section}] {name}: {exc}{where}") from None
        _check_bounds(section, field, value, where)
        kwargs[name] = value
    try:
        config = cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {exc}{where}") from None
    return config


def read_ini(path: str) -> configparser.ConfigParser:
    """Parse an INI config file; a missing or malformed file is a ConfigError."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"config file {path}: {exc.message}") from None
    return parser


def is_secret(field: dataclasses.Field) -> bool:
    """Whether the option is a secret (no flag; the config file or the environment)."""
    return bool(field.metadata.get("secret"))


def env_name(section: str, name: str) -> str:
    """The environment variable of a secret option: ``DOCTOR_<SECTION>_<OPTION>``."""
    return f"DOCTOR_{section}_{name}".upper().replace("-", "_")


def refuse_flag(parser: argparse.ArgumentParser, flag: str, where: str,
                dest: str = "") -> None:
    """A hidden ``flag`` that is a usage error: a secret never comes from the command line
    (``ps`` shows it to every user); ``where`` says where it goes instead."""

    class Refused(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            parser.error(f"{option_string}: a secret is never taken on the command line (ps "
                         f"shows it to every user); set {where}")

    parser.add_argument(flag, nargs="?", dest=dest or f"_refused_{flag.lstrip('-')}",
                        help=argparse.SUPPRESS, action=Refused)


def ordered_fields(cls: type) -> list[dataclasses.Field]:
    """``cls``'s options, those it declares itself first, then those it inherits (e.g. the
    ``keystone_*`` fields of ``doctor.keystone.KeystoneOptions``)."""
    own = set(vars(cls).get("__annotations__", {}))
    fields = dataclasses.fields(cls)
    return [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]


def add_flags(parser: argparse.ArgumentParser, cls: type, section: str = "") -> None:
    """One ``--field-name`` flag per option of ``cls`` (values parsed later by build).

    A secret option gets a hidden flag that is a usage error naming where the secret goes
    (``section`` names its environment variable)."""
    for field in ordered_fields(cls):
        if is_secret(field):
            where = (f"[{section}] {field.name} in the config file, or the environment "
                     f"variable {env_name(section, field.name)}") if section else \
                "it in the config file, or the environment (doctor config-doc names the " \
                "variable)"
            refuse_flag(parser, "--" + field.name.replace("_", "-"), where,
                        f"_secret_{field.name}")
            continue
        if not field.metadata.get("flag", True):
            continue
        default = describe_default(field)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            metavar=field.name.upper(),
            help=f"{field.metadata.get('help', '')} (default: {default})",
        )


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, str]:
    """The options given on the command line, by field name (never a secret)."""
    names = {f.name for f in dataclasses.fields(cls) if not is_secret(f)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def from_environment(field: dataclasses.Field) -> bool:
    """Whether the option may come from ``env_name(section, name)``: a secret, or a URL
    that may hold a password."""
    return is_secret(field) or bool(field.metadata.get("url_with_password"))


def _has_password(value: Any) -> bool:
    try:
        return bool(urlsplit(str(value)).password)
    except ValueError:  # a malformed URL: its own field's check says so
        return False


def url_flag_or_env(section: str, name: str, url: str) -> tuple[list[str], dict[str, str]]:
    """How a launcher hands a part the URL option ``name``: a flag, or, when the URL holds a
    password, the part's environment (``env_name``), since ``ps`` shows every flag."""
    if _has_password(url):
        return [], {env_name(section, name): url}
    return [f"--{name.replace('_', '-')}", url], {}


def env_values(cls: type, section: str, environ: Mapping[str, str] | None = None
               ) -> dict[str, str]:
    """The options of ``cls`` that may come from the environment (secrets, URLs that may hold
    a password) set there (non-empty), by field name."""
    environ = os.environ if environ is None else environ
    found = {}
    for field in dataclasses.fields(cls):
        if from_environment(field) and environ.get(env_name(section, field.name)):
            found[field.name] = environ[env_name(section, field.name)]
    return found


def describe_default(field: dataclasses.Field) -> str:
    if field.metadata.get("default_doc"):
        return field.metadata["default_doc"]
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    if value == "" or value is None:
        return "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def doc_table(cls: type, section: str, skip: Iterable[str] = ()) -> str:
    """A Markdown table of ``cls``'s options, for the README; a secret option names its
    environment variable (it has no flag)."""
    rows = [f"| `[{section}]` option | default | meaning |", "|---|---|---|"]
    for field in ordered_fields(cls):
        if field.name in skip:
            continue
        default = describe_default(field)
        meaning = field.metadata.get("help", "")
        if is_secret(field):
            meaning += (f". Secret: the config file or `{env_name(section, field.name)}`, "
                        "never a flag")
        elif field.metadata.get("url_with_password"):
            meaning += (f". With a password: the config file or "
                        f"`{env_name(section, field.name)}`, never a flag")
        rows.append(f"| `{field.name}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def load(cls: type[T], section: str, config_file: str | None,
         flags: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> T:
    """``cls`` from its defaults, the file's ``[section]``, the environment's secrets
    (``environ``, default ``os.environ``), ``extra`` values, then ``flags``.

    The one loading path of every role's console script. A secret among ``flags`` is a
    ConfigError: secrets never come from the command line.
    """
    values: dict[str, Any] = {}
    sources = []
    if config_file:
        ini = read_ini(config_file)
        if ini.has_section(section):
            values.update(ini[section])
        sources.append(config_file)
    from_env = env_values(cls, section, environ)
    if from_env:
        values.update(from_env)
        sources.append(", ".join(env_name(section, name) for name in from_env))
    values.update(extra or {})
    if flags:
        secret = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                  if is_secret(f) and f.name in flags]
        if secret:
            raise ConfigError(f"[{section}] {secret[0]}: a secret is never taken from flags; "
                              f"set it in the config file or {env_name(section, secret[0])}")
        with_password = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if f.metadata.get("url_with_password") and f.name in flags
                         and _has_password(flags[f.name])]
        if with_password:
            name = with_password[0]
            raise ConfigError(f"[{section}] {name}: a URL with a password is never taken from "
                              f"flags (ps shows them to every user); set it in the config file "
                              f"or {env_name(section, name)}")
        values.update(flags)
        sources.append("flags")
    return build(cls, section, values, " and ".join(sources))


def add_common_flags(parser: argparse.ArgumentParser, cls: type, section: str = "") -> None:
    """``--config-file``, ``--log-level`` and one flag per option of ``cls`` (``section``:
    its config section, named in the error of a secret given as a flag)."""
    from doctor import logs

    parser.add_argument("--config-file", metavar="PATH",
                        help="INI file; its section for this part, flags override it "
                             "(secrets: the file or DOCTOR_<SECTION>_<OPTION>, never a flag)")
    parser.add_argument("--log-level", default="INFO", choices=logs.LEVELS, type=str.upper)
    add_flags(parser, cls, section)


def from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, cls: type[T],
              section: str) -> T:
    """A console script's config: logging set up, then ``load``; a bad value exits with
    status 2 and a message naming the field."""
    from doctor import logs

    logs.setup(args.log_level)
    try:
        return load(cls, section, args.config_file, flag_values(args, cls))
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


# -- fields that several roles declare -------------------------------------------------------


def host_option(what: str = "the REST API") -> Any:
    """The ``host`` field: the address ``what`` listens on."""
    return option("127.0.0.1", help=f"address {what} listens on")


def port_option(default: int, what: str = "the REST API") -> Any:
    """The ``port`` field: the port of ``what`` (0: any free one)."""
    return option(default, min=0, max=65535, help=f"port of {what} (0: any free one)")


DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB


def body_limit_option(default: int = DEFAULT_MAX_BODY_BYTES) -> Any:
    """The ``max_body_bytes`` field: the largest request body the REST API reads."""
    return option(default, min=1024, max=1 << 30,
                  help="largest request body the REST API takes; a larger one is answered "
                       "413 naming body, bytes")


def max_events_option(what: str) -> Any:
    """The ``max_events_per_request`` field: a cap on the events of one request to ``what``.

    Not below 1000: the pipeline's own senders (the inspector's shortcut, the controller's
    and the VIM server's notifications) send up to 1000 events per request."""
    return option(1000, min=1000, max=100_000,
                  help=f"most events one request to {what} may carry (1000 at least: the "
                       "pipeline's own senders send up to 1000); more is a 400 naming body")


def profile_option(what: str = "latency checkpoints") -> Any:
    """The ``profile_file`` field: where ``what`` are appended, as JSON lines."""
    return option("", help=f"append {what} to this file (JSON lines, mode 0600)")


TOKEN, NOAUTH, KEYSTONE = "token", "noauth", "keystone"
AUTH_STRATEGIES = (TOKEN, NOAUTH, KEYSTONE)


def _auth_strategy(text: str) -> str:
    value = text.strip().lower()
    if value not in AUTH_STRATEGIES:
        raise ValueError(f"{text.strip()!r} is not one of {', '.join(AUTH_STRATEGIES)}")
    return value


def auth_strategy_option(what: str = "the REST API", note: str = "") -> Any:
    """The ``auth_strategy`` field: who ``what`` answers. ``token`` (the default): only
    requests carrying the part's ``token`` in X-Auth-Token; ``noauth``: anyone;
    ``keystone``: a valid Keystone token, and what it may do is the policy's
    (``doctor.keystone``, ``doctor.policy``). ``note`` ends the help (what else the strategy
    decides for this part)."""
    return option(TOKEN, parse=_auth_strategy,
                  help=f"who {what} answers: token (every request carries the token option "
                       "as X-Auth-Token; the part refuses to start without one), noauth "
                       "(anyone; a warning at start) or keystone (a Keystone token, checked "
                       "by keystonemiddleware with the keystone_* options; what it may do is "
                       "the oslo.policy rules)" + (f". {note}" if note else ""))


def token_option(help: str) -> Any:
    """A token or shared secret: a secret option (the config file or the environment)."""
    return option("", help=help, secret=True)


def keystone_cloud_option(calls: str, instead: str) -> Any:
    """The ``keystone_cloud`` field: the clouds.yaml cloud whose Keystone token the part sends
    when it calls ``calls``; ``instead``: the static token option(s) it replaces."""
    return option("", help=f"the clouds.yaml cloud (a Keystone user with a password) whose "
                           f"token this part sends as X-Auth-Token when it calls {calls} "
                           "(theirs with auth_strategy = keystone): its current token, "
                           "renewed before it expires and once more after a 401; the file: "
                           "OS_CLIENT_CONFIG_FILE, else openstacksdk's usual places. Empty: "
                           f"the static {instead}")


def check_auth(section: str, strategy: str, token: str) -> None:
    """For a config's ``__post_init__``: ``auth_strategy = token`` needs a token.

    The ConfigError says the three ways out (``build`` prefixes ``[section] ``)."""
    if strategy == TOKEN and not token:
        raise ConfigError(
            f"token: required with auth_strategy = token; set token in the config file's "
            f"[{section}] section, or the environment variable {env_name(section, 'token')}, "
            f"or write auth_strategy = noauth in [{section}] (the API then answers anyone)")


# -- argparse types ----------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
