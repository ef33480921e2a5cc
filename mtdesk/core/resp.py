"""What the lean Redis links share: RESP packing, where to connect, the connection set-up.

Two hot paths talk RESP on their own sockets rather than through redis-py's pool: the
gateway's ingest batcher (:mod:`mtdesk.gateway.resp`, one batch in flight) and the
shards' auto-pipelined client (:mod:`mtdesk.core.pipelined`, replies matched in order).
Both connect to the server and database of a redis-py client, plain TCP or a unix
socket (a TLS client stays on redis-py's pool: :meth:`RespTarget.of` says None).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import hiredis
import redis.asyncio as aioredis

Arg = bytes | str | int | float

# hiredis packs in C (~2.5x faster than a Python loop on the ingest batches); its stub
# types the argument as a 1-tuple and the result not at all. It takes tuples only.
_pack_command = cast("Callable[[tuple[Any, ...]], bytes]", hiredis.pack_command)


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP (an array of bulk strings; str as UTF-8, numbers as decimal)."""
    return _pack_command(args if type(args) is tuple else tuple(args))


P = TypeVar("P", bound=asyncio.Protocol)


@dataclass(frozen=True)
class RespTarget:
    """Where a lean link connects, and how long it waits."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host:port
    db: int = 0
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 2.0
    timeout_s: float = 5.0

    def __repr__(self) -> str:  # never the password
        where = self.path or f"{self.host}:{self.port}"
        return f"RespTarget({where}/{self.db})"

    @classmethod
    def of(cls, redis: aioredis.Redis) -> RespTarget | None:
        """The server and database of ``redis``'s pool, or None when its connections need
        what a lean link does not do (TLS)."""
        pool = redis.connection_pool
        kw = pool.connection_kwargs
        cls_name = pool.connection_class.__name__
        if cls_name not in ("Connection", "UnixDomainSocketConnection"):
            return None
        return cls(
            host=str(kw.get("host", "127.0.0.1")),
            port=int(kw.get("port", 6379)),
            path=kw.get("path") if cls_name == "UnixDomainSocketConnection" else None,
            db=int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            connect_timeout_s=float(kw.get("socket_connect_timeout") or 2.0),
            timeout_s=float(kw.get("socket_timeout") or 5.0),
        )

    def setup_commands(self) -> list[tuple[Arg, ...]]:
        """AUTH and SELECT, as needed, to send first on a new connection."""
        setup: list[tuple[Arg, ...]] = []
        if self.password:
            setup.append(("AUTH", *([self.username] if self.username else []), self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        return setup

    async def open(self, factory: Callable[[], P]) -> P:
        """A connected protocol from ``factory``; ConnectionError when it cannot connect."""
        loop = asyncio.get_running_loop()
        try:
            if self.path:
                coro = loop.create_unix_connection(factory, self.path)
            else:
                coro = loop.create_connection(factory, self.host, self.port)
            _t, proto = await asyncio.wait_for(coro, self.connect_timeout_s)
        except (TimeoutError, OSError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from exc
        return proto


def check_setup(replies: Sequence[Any]) -> None:
    """Raise ConnectionError when Redis refused a set-up command (wrong password, db)."""
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(f"Redis refused the connection set-up: {reply}")
