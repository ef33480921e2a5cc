"""Admin request bodies decoded once, from bytes, into msgspec Structs.

What a caller may rely on:

- :func:`read_body` answers a typed Struct or raises; nothing reads a body twice.
- An empty, oversized or malformed body is a :class:`ValidationError` on ``body`` (400).
- A body that is JSON but not of the Struct's shape — a wrong type, an unknown or missing
  field, a value outside its ``msgspec.Meta`` constraints, a string holding a lone UTF-16
  surrogate (``"\\ud800"``, not text) — is an :class:`InvalidBody` (422) whose ``field``
  names the field by its path (``qa[0].q``; ``body`` when the whole body is wrong).
- :func:`body_errors` turns a ValidationError raised by later checks of a body's values
  (e-mail syntax, known providers) into the same 422, so one body's errors share a status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from mtdesk.core.errors import ValidationError
from mtdesk.core.validation import field_of, known_fields

T = TypeVar("T")


class InvalidBody(ValidationError):
    """The body is JSON but a field is wrong → HTTP 422 naming the field."""


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every admin request body: unknown fields are refused."""


class TenantScoped(Body, frozen=True, kw_only=True):
    """A body the operator may send for one tenant (``tenant_id``; a tenant key acts for
    its own tenant and may repeat its id)."""

    tenant_id: str | None = None


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) holding a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            found = _surrogate_path(key, here) or _surrogate_path(item, here)
            if found:
                return found
    return None


def decode(raw: bytes, kind: type[T]) -> T:
    """``raw`` decoded as ``kind`` (a :class:`Body`); errors as described above."""
    if not raw.strip():
        raise ValidationError("body", "is required (a JSON object)")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        field, problem = field_of(exc, kind)
        raise InvalidBody(field, problem) from None
    except msgspec.DecodeError:
        pass
    # msgspec refuses what is not text; the standard parser still reads a lone surrogate
    # escape, which tells us where it is.
    try:
        loose = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("body", "is not valid JSON (UTF-8)") from None
    where = _surrogate_path(loose)
    if where is None:  # valid to the standard parser for another reason (e.g. NaN)
        raise ValidationError("body", "is not valid JSON")
    raise InvalidBody(where, "holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is not text")


async def read_body(request: web.Request, kind: type[T]) -> T:
    """The request's body decoded as ``kind``; see the module's contract."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ValidationError("body", "is too large") from None
    return decode(raw, kind)


async def read_optional_body(request: web.Request, kind: type[T]) -> T:
    """Like :func:`read_body`, but no body at all means ``kind()`` (all defaults)."""
    raw = await request.read() if request.can_read_body else b""
    return decode(raw, kind) if raw.strip() else kind()


@contextmanager
def body_errors(kind: type[msgspec.Struct]) -> Iterator[None]:
    """Inside: a ValidationError naming one of ``kind``'s fields becomes an InvalidBody."""
    names = set(known_fields(kind))
    try:
        yield
    except InvalidBody:
        raise
    except ValidationError as exc:
        root = re.split(r"[.\[]", exc.field, maxsplit=1)[0]
        if root in names:
            raise InvalidBody(exc.field, exc.problem) from None
        raise
