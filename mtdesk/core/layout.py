"""The key layout's version, and the one-time move of keys named before hash tags.

Key names carry Redis Cluster hash tags (:mod:`mtdesk.core.keys`): ``mt:t:{tenant}:…``
and ``mt:in:{p}``. A single Redis that ran an older MT Desk holds ``mt:t:tenant:…`` and
``mt:in:p``; :func:`migrate` renames them once (``RENAME`` keeps a stream's consumer
groups and pending entries, a hash its fields, a key its TTL) and records the layout
version in ``mt:layout``, so later starts cost one GET. What is not renamed, by design:
de-duplication markers (``mt:seen:…``, their partition is not in the old name; they
expire within days, and a redelivered event that passes de-duplication again is still
answered once: its reply record says it was) and erasure markers (minutes-long TTL).
``mtdesk serve`` runs it before anything else touches Redis; stop older processes first.
"""

from __future__ import annotations

from mtdesk.core import keys
from mtdesk.core.redis import Redis, is_cluster, scan_pages

VERSION = b"2"


def _renamed(name: bytes) -> bytes | None:
    text = name.decode("utf-8", "surrogateescape")
    tenants, inbound = keys.ROOT + ":t:", keys.ROOT + ":in:"
    if text.startswith(tenants) and not text.startswith(tenants + "{"):
        tenant, sep, rest = text[len(tenants):].partition(":")
        if not tenant or "{" in tenant or "}" in tenant:
            return None
        new = keys.tenant_prefix(tenant) + rest if sep else keys.tenant(tenant)
        return new.encode("utf-8", "surrogateescape")
    if text.startswith(inbound) and text[len(inbound):].isdigit():
        return keys.inbound(int(text[len(inbound):])).encode()
    return None


async def migrate(redis: Redis) -> int:
    """Rename the keys of the older layout (see the module docstring); how many were
    renamed. A name whose new form already exists is left as it was (never overwritten).
    A cluster is new to this layout: nothing to do there."""
    if is_cluster(redis) or await redis.get(keys.LAYOUT) == VERSION:
        return 0
    renamed = 0
    for pattern in (keys.ROOT + ":t:*", keys.ROOT + ":in:*"):
        async for names in scan_pages(redis, match=pattern, count=1000):
            for name in names:
                new = _renamed(name)
                if new is not None and await redis.renamenx(name, new):
                    renamed += 1
    await redis.set(keys.LAYOUT, VERSION)
    return renamed
