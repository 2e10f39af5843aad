"""Configuration: one dataclass per role, read from an INI file and the command line.

Each role declares its options once, as dataclass fields made with
``option()``: the default, the help text (with the unit in the name or the
help), and bounds. From that one declaration come the INI parsing, the
command-line flags, the validation (errors name the section and the field),
and the documented table in the README (``doctor config-doc``).

Precedence: built-in defaults < the ``[section]`` of the config file < flags.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

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
) -> Any:
    """A documented config field. ``parse`` turns one text value into the field's value;
    ``default_doc`` describes a default computed at run time (e.g. "the host name")."""
    meta = {"help": help, "min": min, "max": max, "parse": parse, "flag": flag,
            "default_doc": default_doc}
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


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field-name`` flag per option of ``cls`` (values parsed later by build)."""
    for field in dataclasses.fields(cls):
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
    """The options given on the command line, by field name."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


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
    """A Markdown table of ``cls``'s options, for the README."""
    rows = [f"| `[{section}]` option | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        default = describe_default(field)
        rows.append(f"| `{field.name}` | `{default}` | {field.metadata.get('help', '')} |")
    return "\n".join(rows)


def load(cls: type[T], section: str, config_file: str | None,
         flags: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> T:
    """``cls`` from its defaults, the file's ``[section]``, ``extra`` values, then ``flags``.

    The one loading path of every role's console script.
    """
    values: dict[str, Any] = {}
    sources = []
    if config_file:
        ini = read_ini(config_file)
        if ini.has_section(section):
            values.update(ini[section])
        sources.append(config_file)
    values.update(extra or {})
    if flags:
        values.update(flags)
        sources.append("flags")
    return build(cls, section, values, " and ".join(sources))


def add_common_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config-file``, ``--log-level`` and one flag per option of ``cls``."""
    from doctor import logs

    parser.add_argument("--config-file", metavar="PATH",
                        help="INI file; its section for this part, flags override it")
    parser.add_argument("--log-level", default="INFO", choices=logs.LEVELS, type=str.upper)
    add_flags(parser, cls)


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
    return option("", help=f"append {what} to this file (JSON lines)")


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
