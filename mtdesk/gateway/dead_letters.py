"""Whose a dead letter is: the accounts a kept webhook body names, and their tenant.

A dead letter (a signed body the gateway could not fully decode, ``keys.DEAD_LETTERS``)
is stored with the fields ``b`` (the body), ``r`` (receive time, ms), ``why`` and:

- ``a``: the accounts the body names, ``"{channel}:{account_id}"`` separated by spaces
  (for WhatsApp the ``phone_number_id`` of a change, else the entry id, as the channel
  adapter takes them); empty when none could be read;
- ``t``: the tenant owning *every* one of those accounts (read from the routing hash
  ``keys.account`` when the letter is written), or empty: no account read, an account
  nobody owns, or accounts of several tenants.

An erasure only ever touches the dead letters of its own tenant (``t``), so one
tenant's erasure can neither remove nor count another tenant's letters; a letter of no
known tenant is left to retention (trimmed after the maximum period).
"""

from __future__ import annotations

from typing import Any

import msgspec

from mtdesk.channels.webhook import OBJECT_CHANNEL
from mtdesk.core import keys
from mtdesk.core.redis import Redis, as_opt_bytes

MAX_ACCOUNTS = 50  # a body naming more is of no single tenant anyway


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        text = str(value)
        return text if text and len(text) <= 128 and not any(c.isspace() for c in text) else None
    return None


def _phone_numbers(entry: dict[str, Any]) -> list[str]:
    found: list[str] = []
    changes = entry.get("changes")
    for change in changes if isinstance(changes, list) else ():
        value = change.get("value") if isinstance(change, dict) else None
        meta = value.get("metadata") if isinstance(value, dict) else None
        number = _text(meta.get("phone_number_id")) if isinstance(meta, dict) else None
        if number is not None:
            found.append(number)
    return found


def accounts_named(body: bytes) -> list[str]:
    """``"{channel}:{account_id}"`` of every account the body names, sorted, as far as
    the body can be read at all (never raises: it is any signed bytes)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return []
    if not isinstance(data, dict):
        return []
    obj = data.get("object")
    channel = OBJECT_CHANNEL.get(obj) if isinstance(obj, str) else None
    entries = data.get("entry")
    if channel is None or not isinstance(entries, list):
        return []
    found: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        ids = _phone_numbers(entry) if channel == "whatsapp" else []
        if not ids and (entry_id := _text(entry.get("id"))) is not None:
            ids = [entry_id]
        found.update(f"{channel}:{i}" for i in ids)
    return sorted(found)[: MAX_ACCOUNTS + 1]


async def owner_fields(redis: Redis, body: bytes) -> tuple[str, str]:
    """The ``a`` and ``t`` fields of a dead letter of ``body`` (see the module)."""
    accounts = accounts_named(body)
    if not accounts or len(accounts) > MAX_ACCOUNTS:
        return " ".join(accounts[:MAX_ACCOUNTS]), ""
    pipe = redis.pipeline(transaction=False)
    for account in accounts:
        channel, _, account_id = account.partition(":")
        pipe.hget(keys.account(channel, account_id), "tenant")
    owners = {as_opt_bytes(o) for o in await pipe.execute()}
    tenant = ""
    if len(owners) == 1 and (only := owners.pop()) is not None:
        tenant = only.decode("utf-8", "replace")
    return " ".join(accounts), tenant
