"""What an acknowledged write waits for (``MTDESK_ACK_DURABILITY``), checked at start.

- ``memory``: nothing more than Redis having applied the write (Redis' own persistence
  settings decide what survives a crash).
- ``fsync``: the append-only file on disk. Redis 7.2+ has ``WAITAOF``: one per batch
  (``WAITAOF 1 0 <timeout>``), with ``appendonly yes``. An older server has none, so every
  master must report ``appendonly yes`` with ``appendfsync always`` (each write is on
  disk before its reply); anything else refuses to start.
- ``replica``: one replica has the batch: ``WAIT 1 <timeout>`` after each batch, on the
  connection that wrote it (per batch, not per request). Fewer than one replica in time:
  the batch's requests are answered 503 (Meta retries; the retry finds its markers, and
  its own WAIT covers the first write too, so nothing acknowledged is lost).

:func:`ack_wait` checks the servers and gives the command to send after each batch.
"""

from __future__ import annotations

from redis.asyncio.cluster import ClusterNode

from mtdesk.core.errors import ConfigError
from mtdesk.core.redis import Redis, on_server, primaries
from mtdesk.core.resp import Arg

VARIABLE = "MTDESK_ACK_DURABILITY"


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def _config(redis: Redis, target: Redis | ClusterNode, name: str) -> str:
    reply = await on_server(redis, target, "CONFIG", "GET", name)
    if isinstance(reply, dict):
        for k, v in reply.items():
            if _text(k) == name:
                return _text(v)
        return ""
    items = list(reply)
    return _text(items[1]) if len(items) >= 2 else ""


def _version(info: object) -> tuple[int, ...]:
    raw = info.get("redis_version") if isinstance(info, dict) else None
    if raw is None and isinstance(info, (bytes, str)):
        for line in _text(info).splitlines():
            if line.startswith("redis_version:"):
                raw = line.split(":", 1)[1]
    try:
        return tuple(int(x) for x in _text(raw or "0").strip().split("."))
    except ValueError:
        return (0,)


async def ack_wait(redis: Redis, mode: str, timeout_ms: int) -> tuple[Arg, ...] | None:
    """The command a batch of acknowledged writes is followed by (None: none), after
    checking that every master can give ``mode``; :class:`ConfigError` naming
    ``MTDESK_ACK_DURABILITY`` and what the server reports when it cannot."""
    if mode == "memory":
        return None
    if mode == "replica":
        for target in primaries(redis):
            info = await on_server(redis, target, "INFO", "replication")
            count = info.get("connected_slaves", 0) if isinstance(info, dict) else 0
            if int(count) < 1:
                raise ConfigError(VARIABLE, "replica: a Redis master has no connected replica")
        return ("WAIT", "1", str(timeout_ms))
    if mode != "fsync":
        raise ConfigError(VARIABLE, f"must be memory, fsync or replica, not {mode!r}")
    waitaof = True
    for target in primaries(redis):
        appendonly = await _config(redis, target, "appendonly")
        fsync = await _config(redis, target, "appendfsync")
        info = await on_server(redis, target, "INFO", "server")
        has_waitaof = _version(info) >= (7, 2)
        waitaof = waitaof and has_waitaof
        if appendonly != "yes":
            raise ConfigError(VARIABLE, f"fsync needs appendonly yes; Redis reports "
                                        f"appendonly {appendonly or '?'}")
        if not has_waitaof and fsync != "always":
            raise ConfigError(VARIABLE, f"fsync needs appendfsync always on a Redis without "
                                        f"WAITAOF (before 7.2); it reports appendfsync {fsync}")
    if waitaof:
        return ("WAITAOF", "1", "0", str(timeout_ms))
    return None  # appendfsync always: every write is on disk before its reply
