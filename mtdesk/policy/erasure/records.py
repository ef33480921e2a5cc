"""Record sweeps: removing what names an identifier from keys of any Redis type.

Identifiers are matched as whole tokens (not inside a longer id: ``123`` never hits
``1234``) in raw bytes, which covers JSON and msgpack values alike. A string or a hash
whose value names the identifier is a record about the person and goes whole; a hash
field, set or sorted-set member, list item or stream entry naming it goes alone. Every
sweep works in pages of ``batch`` items with pipelined reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from mtdesk.core.redis import Redis, as_bytes_list, as_entries, as_scored

Fields = dict[bytes, bytes]


def id_pattern(identifiers: Iterable[str]) -> re.Pattern[bytes] | None:
    """Bytes regex matching any identifier as a whole token (not inside a longer id)."""
    alts = sorted({i for i in identifiers if i}, key=len, reverse=True)
    if not alts:
        return None
    body = b"|".join(re.escape(a.encode("utf-8")) for a in alts)
    return re.compile(rb"(?<![A-Za-z0-9_])(?:" + body + rb")(?![A-Za-z0-9_])")


class RecordSweeper:
    """Removes what matches from the keys it is given; each call returns items removed."""

    def __init__(self, redis: Redis, *, batch: int) -> None:
        self._redis = redis
        self._batch = batch

    async def names(self, names: list[bytes], pattern: re.Pattern[bytes]) -> int:
        """Keys named by, or holding, an identifier (pipelined)."""
        r = self._redis
        removed = 0
        rest: list[bytes] = []
        for name in names:
            if pattern.search(name):
                removed += int(await r.delete(name))
            else:
                rest.append(name)
        if not rest:
            return removed
        pipe = r.pipeline(transaction=False)
        for name in rest:
            pipe.type(name)
        types = [t.decode() for t in await pipe.execute()]
        small = [(n, t) for n, t in zip(rest, types, strict=True) if t in ("string", "hash")]
        pipe = r.pipeline(transaction=False)
        for name, kind in small:
            pipe.get(name) if kind == "string" else pipe.hgetall(name)
        values = await pipe.execute() if small else []
        for (name, kind), value in zip(small, values, strict=True):
            if kind == "string":
                if value and pattern.search(value):
                    removed += int(await r.delete(name))
                continue
            if any(pattern.search(v) for v in value.values()):
                removed += int(await r.delete(name))  # a record about the person
                continue
            fields = [f for f in value if pattern.search(f)]
            if fields:
                removed += int(await r.hdel(name, *fields))
        for name, kind in zip(rest, types, strict=True):
            if kind not in ("string", "hash"):
                removed += await self.container(name, kind, pattern)
        return removed

    async def container(self, name: bytes, kind: str, pattern: re.Pattern[bytes]) -> int:
        """The members, items or entries of a set, sorted set, list or stream that match."""
        r = self._redis
        if kind in ("set", "zset"):
            hits: list[bytes] = []
            cursor = 0
            while True:
                if kind == "set":
                    cursor, page = await r.sscan(name, cursor, count=self._batch)
                    members = as_bytes_list(page)
                else:
                    cursor, rows = await r.zscan(name, cursor, count=self._batch)
                    members = [m for m, _ in as_scored(rows)]
                hits.extend(m for m in members if pattern.search(m))
                if cursor == 0:
                    break
            if not hits:
                return 0
            return int(await (r.srem(name, *hits) if kind == "set" else r.zrem(name, *hits)))
        if kind == "list":
            removed = 0
            values = as_bytes_list(await r.lrange(name, 0, -1))
            for value in {v for v in values if pattern.search(v)}:
                # redis-py annotates LREM's value as str; the exact bytes must be sent back
                # (decoding could alter a non-UTF-8 member and miss it).
                removed += int(await r.lrem(name, 0, value))  # type: ignore[arg-type]
            return removed
        if kind == "stream":
            return await self.stream(name, lambda fields: any(
                pattern.search(v) for v in fields.values()
            ))
        return 0

    async def stream(self, name: bytes | str, match: Callable[[Fields], bool]) -> int:
        """The entries of a stream for which ``match(fields)``."""
        removed = 0
        start = "-"
        while True:
            page = as_entries(await self._redis.xrange(name, start, "+", count=self._batch))
            if not page:
                return removed
            hits = [entry_id for entry_id, fields in page if match(fields)]
            if hits:
                removed += int(await self._redis.xdel(name, *hits))
            start = "(" + page[-1][0].decode()
