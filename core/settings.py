"""Configuration tables, checked with msgspec, and their problems in the operator's words.

Every settings model of the bridge (a backend's table, a platform's options, the file's own
``[store]``, ``[limits]``...) is a :class:`Table`: a msgspec Struct that refuses unknown keys.
:func:`convert` builds one from a parsed TOML table; when it cannot, it reports *every*
problem, each with the key it concerns (msgspec itself stops at the first one, and words it
for programmers: "Expected `int`, got `str` - at `$.limits.turns_per_minute`").

Beyond types and bounds (``Annotated[int, Meta(ge=0)]``), a table checks single keys with
``key_checks`` (run on every key of the right type, even when another key is wrong) and
several keys together with ``_problems`` (run once every key is right); both also run when a
table is built in code, from ``__post_init__``, which raises :class:`Invalid`.

msgspec rather than pydantic: importing it costs about 1.4 MiB against 7 MiB, in a process
that must stay small (issue 15). Unlike pydantic, building a Struct in code checks no types
or bounds, only the checks above: tables read from a file go through :func:`convert`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    Self,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import msgspec

__all__ = [
    "MASKED",
    "MISSING_KEY",
    "UNKNOWN_KEY",
    "FrozenTable",
    "Invalid",
    "KeyCheck",
    "KeyProblem",
    "Secret",
    "Table",
    "convert",
    "dump",
    "kind_of",
    "problems",
]

MASKED = "**********"  # every masked value looks the same
UNKNOWN_KEY = "unknown key (check its spelling against the README's configuration reference)"
MISSING_KEY = "required key is missing"

T = TypeVar("T")
KeyCheck = Callable[[Any], "str | None"]


class Secret:
    """A token or key from the file: its repr, str and dumped form are :data:`MASKED`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASKED}')"

    def __str__(self) -> str:
        return MASKED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class KeyProblem(NamedTuple):
    key: str  # "limits.turns_per_minute", "bots[0]"; "" for the top level
    message: str
    by_check: bool = False  # found by a table's own check (its __post_init__), not by type


class Invalid(ValueError):
    """Problems of one table; raised by its checks with keys relative to it ("" = itself)."""

    def __init__(self, problems: Sequence[tuple[str, str] | KeyProblem]) -> None:
        self.problems = [p if isinstance(p, KeyProblem) else KeyProblem(*p) for p in problems]
        super().__init__(
            "; ".join(f"{p.key}: {p.message}" if p.key else p.message for p in self.problems)
        )


class _Checked:
    """What every table has: :meth:`from_dict` and its checks (a mixin without fields)."""

    __slots__ = ()

    # Checks of one key beyond its type: key -> check(value) -> what is wrong, or None. They
    # run on every key of the right type even when other keys are wrong, so the operator sees
    # all problems at once; ``None`` values are not checked.
    key_checks: ClassVar[Mapping[str, KeyCheck]] = {}

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """A checked table, or :class:`Invalid` with every problem."""
        return convert(cls, data)

    def __post_init__(self) -> None:
        found = [
            (key, problem)
            for key, check in self.key_checks.items()
            if (value := getattr(self, key)) is not None and (problem := check(value))
        ]
        if not found:  # the table as a whole, once each key is right
            found = self._problems()
        if found:
            raise Invalid(found)

    def _problems(self) -> list[tuple[str, str]]:
        """Checks of several keys together: (key, or "" for the whole table, what is wrong)."""
        return []


class Table(_Checked, msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One TOML table of the configuration: unknown keys are refused.

    Subclasses say ``kw_only=True`` again (msgspec does not inherit it), so a required key may
    follow keys with defaults."""


class FrozenTable(_Checked, msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A :class:`Table` that cannot change once read (subclasses repeat ``frozen=True``)."""


def _decode_secret(tp: type, value: Any) -> Any:
    if tp is Secret:
        if isinstance(value, str):
            return Secret(value)
        raise TypeError(f"must be a string (got {kind_of(value)})")
    raise NotImplementedError


def _encode_secret(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASKED
    raise NotImplementedError


def dump(table: Any) -> Any:
    """Builtin types (dicts, lists, strings...) with every :class:`Secret` masked."""
    return msgspec.to_builtins(table, enc_hook=_encode_secret)


def _convert(value: Any, tp: Any) -> Any:
    # strict=False: ``port = "${PORT}"`` gives a string, which a number key accepts
    return msgspec.convert(value, tp, strict=False, dec_hook=_decode_secret)


def convert(cls: type[T], data: Any, key: str = "") -> T:
    """``data`` as ``cls``; else :class:`Invalid` listing every problem under ``key``."""
    try:
        return _convert(data, cls)
    except msgspec.ValidationError as exc:
        raise Invalid(_locate(cls, data, key, exc)) from None


def problems(tp: Any, value: Any, key: str) -> list[KeyProblem]:
    """Every problem of ``value`` read as ``tp`` (empty when it is fine)."""
    try:
        _convert(value, tp)
    except msgspec.ValidationError as exc:
        return _locate(tp, value, key, exc)
    return []


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key and name else key or name


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return _unwrap(rest[0])
    return tp


def _locate(tp: Any, value: Any, key: str, exc: msgspec.ValidationError) -> list[KeyProblem]:
    """Where ``value`` fails ``tp``: in its keys or items first, else in the value itself."""
    base = _unwrap(tp)
    origin = get_origin(base)
    found: list[KeyProblem] = []
    if isinstance(base, type) and issubclass(base, msgspec.Struct) and isinstance(value, dict):
        found = _table_problems(base, value, key)
    elif origin is dict and isinstance(value, dict):
        item = get_args(base)[1]
        found = [p for k, v in value.items() for p in problems(item, v, _join(key, str(k)))]
    elif origin is list and isinstance(value, list):
        item = get_args(base)[0]
        found = [p for i, v in enumerate(value) for p in problems(item, v, f"{key}[{i}]")]
    if found:
        return found
    if isinstance(exc.__cause__, Invalid):  # the table's own check
        return [KeyProblem(_join(key, p.key), p.message, True) for p in exc.__cause__.problems]
    return [_translate(str(exc), tp, key)]


def _table_problems(cls: type[msgspec.Struct], data: dict[Any, Any], key: str) -> list[KeyProblem]:
    found: list[KeyProblem] = []
    fields = msgspec.structs.fields(cls)
    for field in fields:
        if field.encode_name not in data:
            if field.required:
                found.append(KeyProblem(_join(key, field.encode_name), MISSING_KEY))
            continue
        where = _join(key, field.encode_name)
        try:
            value = _convert(data[field.encode_name], field.type)
        except msgspec.ValidationError as exc:
            found += _locate(field.type, data[field.encode_name], where, exc)
            continue
        check = getattr(cls, "key_checks", {}).get(field.name)
        problem = check(value) if check is not None and value is not None else None
        if problem:
            found.append(KeyProblem(where, problem, True))
    names = {field.encode_name for field in fields}
    found += [KeyProblem(_join(key, str(k)), UNKNOWN_KEY) for k in data if k not in names]
    return found


# msgspec's names for the kinds of value, in TOML's words
_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
}
_BOUNDS = {">=": "at least", ">": "greater than", "<=": "at most", "<": "less than"}
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)


def kind_of(value: Any) -> str:
    """What a TOML value is, in words ("a string", "a table")."""
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "array", dict: "object"}
    return _KINDS.get(names.get(type(value), ""), type(value).__name__)


def _literals(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    return list(get_args(tp)) if get_origin(tp) is Literal else []


def _number(text: str) -> str:
    return text.removesuffix(".0")


def _translate(error: str, tp: Any, key: str) -> KeyProblem:
    """One msgspec message in the operator's words; the key it names is ``key``."""
    match = _AT.match(error)
    assert match is not None  # the pattern matches any text
    message, path = match["message"], match["path"] or ""
    where = (key + path) if key or not path.startswith(".") else path[1:]
    if m := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        return KeyProblem(_join(where, m[1]), UNKNOWN_KEY)
    if m := re.fullmatch(r"Object missing required field `(.*)`", message):
        return KeyProblem(_join(where, m[1]), MISSING_KEY)
    if m := re.fullmatch(r"Expected `(\w+)`, got `(\w+)`", message):
        if m[1] == "int" and m[2] == "float":
            return KeyProblem(where, "must be a whole number (got a number with a fraction)")
        expected, got = _KINDS.get(m[1], m[1]), _KINDS.get(m[2], m[2])
        return KeyProblem(where, f"must be {expected} (got {got})")
    if m := re.fullmatch(r"Expected `\w+` (>=|>|<=|<) (\S+)", message):
        return KeyProblem(where, f"must be {_BOUNDS[m[1]]} {_number(m[2])}")
    if m := re.fullmatch(r"Expected `str` matching regex (.*)", message):
        return KeyProblem(where, f"must match the pattern {m[1]}")
    if m := re.fullmatch(r"Expected `(\w+)` of length (>=|<=) (\d+)", message):
        what = ("character" if m[1] == "str" else "item") + ("" if m[3] == "1" else "s")
        return KeyProblem(where, f"must have {_BOUNDS[m[2]]} {m[3]} {what}")
    if m := re.fullmatch(r"Invalid enum value (.*)", message):
        choices = _literals(tp) if not path else []
        if choices:
            allowed = ", ".join(repr(c) for c in choices)
            return KeyProblem(where, f"must be one of {allowed} (got {m[1]})")
        return KeyProblem(where, f"{m[1]} is not one of the allowed values")
    return KeyProblem(where, message)
