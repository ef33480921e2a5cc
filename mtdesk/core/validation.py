"""msgspec's decode and convert errors as :class:`ValidationError` naming the field.

msgspec says where a value is wrong (``Expected `int`, got `str` - at `$.qa[0].q```);
:func:`field_of` turns that into a field path (``qa[0].q``) and a short problem, so the
admin API and the CLI name the same field for the same mistake.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
import msgspec.inspect

from mtdesk.core.errors import ValidationError

T = TypeVar("T")

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]*)`$")
_GOT = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_BOUND = re.compile(r"^Expected `(?P<want>[^`]+)` (?P<rest>.+)$")
_NOUNS = {"str": "a string", "int": "a whole number", "float": "a number",
          "bool": "true or false", "object": "an object", "array": "a list", "null": "null"}


def _noun(name: str) -> str:
    return " or ".join(_NOUNS.get(part.strip(), part.strip()) for part in name.split("|"))


def _allowed(kind: type[Any] | None, field: str) -> str:
    """', '.join of a top-level Literal field's values ('' when not one)."""
    if kind is None:
        return ""
    info = msgspec.inspect.type_info(kind)
    for f in getattr(info, "fields", ()):
        if f.encode_name == field:
            values: list[str] = []
            for t in getattr(f.type, "types", (f.type,)):
                values += [str(v) for v in getattr(t, "values", ())]
            return ", ".join(values)
    return ""


def _problem(what: str, kind: type[Any] | None, field: str) -> str:
    if m := _GOT.match(what):
        return f"must be {_noun(m['want'])}, got {_noun(m['got'])}"
    if m := _BOUND.match(what):
        return f"must be {_noun(m['want'])} {m['rest']}"
    if what.startswith("Invalid enum value"):
        allowed = _allowed(kind, field)
        return f"must be one of: {allowed}" if allowed else "is not one of the allowed values"
    return what.replace("`", "")


def known_fields(kind: type[Any]) -> tuple[str, ...]:
    """The wire names of a Struct type's fields."""
    return tuple(f.encode_name for f in msgspec.structs.fields(kind))


def field_of(exc: msgspec.ValidationError, kind: type[Any] | None = None) -> tuple[str, str]:
    """``(field path, problem)`` of a msgspec validation error met decoding ``kind``; the
    path is ``body`` when the whole value is wrong. An unknown top-level field's problem
    lists the known ones, a wrong choice the allowed ones."""
    known = known_fields(kind) if kind is not None else ()
    match = _AT.match(str(exc))
    what = match["what"] if match else str(exc)
    path = ((match["path"] or "") if match else "").removeprefix(".")
    named = _NAMED.match(what)
    if named:
        field = f"{path}.{named['name']}" if path else named["name"]
        if what.startswith("Object contains"):
            listed = f" (known: {', '.join(known)})" if not path and known else ""
            return field, f"unknown field{listed}"
        return field, "is required"
    return path or "body", _problem(what, kind, path)


def convert(data: object, kind: type[T]) -> T:
    """``data`` (builtins) as ``kind``, checking types and ``Meta`` constraints;
    :class:`ValidationError` naming the field otherwise."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        field, problem = field_of(exc, kind)
        raise ValidationError(field, problem) from None
