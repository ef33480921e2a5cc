"""``mtdesk bench e2e --redis-cost SECONDS``: what Redis itself spends per message, away
from the machine's other work.

``bench e2e`` reads Redis' CPU over the load (``INFO cpu``); on a small machine where the
product, the fakes and the load generator share the cores with Redis, that figure carries
what sharing costs (cache misses, preemption in the middle of a command), several times
the cost of the commands themselves. This captures the commands the product sent during
``SECONDS`` of the load (``MONITOR``, on a connection of its own, from 40 % of the sending
time on), then replays them, in order, against a fresh Redis of its own that nothing else
uses, and reports that server's CPU per message accepted in the window:

- ``redis_cost.replay_cpu_us_per_msg``: ``INFO cpu`` of the replay over the replies that
  ended in the window (each writes its conversation's context with its last part; at a
  rate the shards keep up with, as many as the messages the gateway enqueued meanwhile);
- ``redis_cost.replay_us_per_msg_by_command``: ``INFO commandstats`` of the replay, by
  command (a script's own commands are inside its ``evalsha``), µs per message;
- ``redis_cost.captured``: commands, messages enqueued, answers, seconds.

The replay runs in pipelines of 256, so it leaves out the per-round-trip cost of the live
connections (their reads and writes): it is the cost of the commands. Blocking reads are
replayed without ``BLOCK``; subscriptions, ``MONITOR``, ``INFO`` and client handshakes are
left out. State made before the window (reply records of messages admitted before it)
is missing from the fresh server, so a few scripts take their short path: the figure errs
low by those. The live figures of a run with ``--redis-cost`` include the capture's own
cost to the live server (``MONITOR`` formats every command): take those from a run
without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_run import BenchConfig

# The modules that make every script the product runs (each LuaScript registers itself).
_SCRIPT_MODULES = (
    "mtdesk.actors.ratelimit", "mtdesk.actors.replies.store", "mtdesk.core.analytics",
    "mtdesk.core.groups", "mtdesk.core.history", "mtdesk.core.inbox", "mtdesk.core.media",
    "mtdesk.core.tenants", "mtdesk.gateway.ingest", "mtdesk.policy.erasure.conversations",
    "mtdesk.policy.quotas", "mtdesk.policy.retention", "mtdesk.policy.vault",
)
_SKIP = frozenset({b"MONITOR", b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE", b"UNSUBSCRIBE",
                   b"PUNSUBSCRIBE", b"INFO", b"HELLO", b"CLIENT", b"SELECT", b"AUTH",
                   b"CONFIG", b"PING", b"SCRIPT", b"QUIT", b"RESET", b"READONLY", b"WAIT",
                   b"FLUSHDB", b"FLUSHALL", b"DBSIZE", b"SLOWLOG", b"COMMAND",
                   b"BLPOP", b"BRPOP", b"BZPOPMIN"})
_ESCAPES = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, '"': 34, "\\": 92}
_PIPELINE = 256


def parse_monitor_line(line: str) -> tuple[bool, list[bytes]] | None:
    """One ``MONITOR`` line (``+1700000000.123456 [0 127.0.0.1:5000] "SET" "k" "v"``) as
    (run inside a script, the command's words as bytes); None for anything else."""
    head, sep, rest = line.partition("] ")
    if not sep or not head.startswith("+") or "[" not in head:
        return None
    inside = head.endswith(" lua")
    words: list[bytes] = []
    i, n = 0, len(rest)
    while i < n:
        if rest[i] != '"':
            i += 1
            continue
        i += 1
        word = bytearray()
        while i < n and rest[i] != '"':
            c = rest[i]
            if c == "\\" and i + 1 < n:
                nxt = rest[i + 1]
                if nxt == "x" and i + 3 < n:
                    word.append(int(rest[i + 2:i + 4], 16))
                    i += 4
                    continue
                word.append(_ESCAPES.get(nxt, ord(nxt)))
                i += 2
                continue
            word.append(ord(c))
            i += 1
        words.append(bytes(word))
        i += 1
    return (inside, words) if words else None


async def capture(redis_url: str, seconds: float) -> list[tuple[bool, list[bytes]]]:
    """The commands the server ran for ``seconds`` (its MONITOR feed)."""
    url = urlsplit(redis_url)
    reader, writer = await asyncio.open_connection(url.hostname or "127.0.0.1", url.port or 6379)
    out: list[tuple[bool, list[bytes]]] = []
    try:
        if url.password:
            writer.write(f"AUTH {url.password}\r\n".encode())
        writer.write(b"MONITOR\r\n")
        await writer.drain()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(reader.readline(), left)
            except TimeoutError:
                break
            if not raw:
                break
            parsed = parse_monitor_line(raw.decode("latin-1").rstrip("\r\n"))
            if parsed is not None:
                out.append(parsed)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return out


def replayable(commands: list[tuple[bool, list[bytes]]]) -> list[list[bytes]]:
    """What a client sent (a script's own commands run again inside its replay), blocking
    reads without their BLOCK."""
    out: list[list[bytes]] = []
    for inside, words in commands:
        name = words[0].upper()
        if inside or name in _SKIP:
            continue
        upper = [w.upper() for w in words]
        if name in (b"XREADGROUP", b"XREAD") and b"BLOCK" in upper:
            at = upper.index(b"BLOCK")
            words = words[:at] + words[at + 2:]
        out.append(words)
    return out


def messages_in(commands: list[tuple[bool, list[bytes]]]) -> int:
    """Messages the gateway enqueued: the ingest script's XADDs to partition streams."""
    return sum(1 for inside, words in commands
               if inside and words[0].upper() == b"XADD" and words[1].startswith(b"mt:in:"))


def answers_in(commands: list[tuple[bool, list[bytes]]]) -> int:
    """Replies that ended in the window: each writes its conversation's context with its
    last part's record (a ``SET`` of ``keys.context`` inside that script)."""
    return sum(1 for inside, words in commands
               if inside and words[0].upper() == b"SET" and b":ctx:" in words[1])


def _groups(commands: list[list[bytes]]) -> set[tuple[bytes, bytes]]:
    """(stream, group) of every consumer-group command replayed."""
    out: set[tuple[bytes, bytes]] = set()
    for words in commands:
        name = words[0].upper()
        if name == b"XREADGROUP":
            upper = [w.upper() for w in words]
            group = words[upper.index(b"GROUP") + 1]
            at = upper.index(b"STREAMS") + 1
            names = words[at:]
            out.update((stream, group) for stream in names[:len(names) // 2])
        elif name in (b"XACK", b"XAUTOCLAIM", b"XPENDING", b"XCLAIM") and len(words) > 2:
            out.add((words[1], words[2]))
    return out


def _scripts() -> list[bytes]:
    from mtdesk.core.scripts import LuaScript

    for name in _SCRIPT_MODULES:
        importlib.import_module(name)
    return [script.source for script in LuaScript.registered()]


async def replay(commands: list[list[bytes]], messages: int) -> dict[str, Any]:
    """Run ``commands`` on a fresh Redis of its own; its CPU and command times."""
    from mtdesk.cli.localredis import local_redis
    from mtdesk.core.redis import connect

    with tempfile.TemporaryDirectory(prefix="mtdesk-redis-cost-") as workdir, \
            local_redis(workdir, who="bench e2e --redis-cost", prefer_own="always") as url:
        client = connect(url)
        try:
            for source in _scripts():
                await client.execute_command("SCRIPT", "LOAD", source)
            for stream, group in _groups(commands):  # made before the window
                with contextlib.suppress(Exception):
                    await client.execute_command("XGROUP", "CREATE", stream, group, "0",
                                                 "MKSTREAM")
            await client.execute_command("CONFIG", "RESETSTAT")
            before = await client.info("cpu")
            errors: dict[str, int] = {}
            for at in range(0, len(commands), _PIPELINE):
                pipe = client.pipeline(transaction=False)
                for words in commands[at:at + _PIPELINE]:
                    pipe.execute_command(*words)
                for reply in await pipe.execute(raise_on_error=False):
                    if isinstance(reply, Exception):
                        kind = str(reply).split(" ", 1)[0][:40]
                        errors[kind] = errors.get(kind, 0) + 1
            after = await client.info("cpu")
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
    cpu_s = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    per = max(1, messages)
    by_command = {
        name.removeprefix("cmdstat_"): round(float(row["usec"]) / per, 1)
        for name, row in stats.items()
        if isinstance(row, dict) and name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    return {"replay_cpu_us_per_msg": round(cpu_s * 1e6 / per, 1),
            "replay_us_per_msg_by_command": dict(sorted(by_command.items(),
                                                        key=lambda kv: -kv[1])),
            "replay_errors": errors}


class RedisCost(Drill):
    """Not a failure: the capture during the load and the replay after it (the drill
    hooks are where ``bench e2e`` lets something run beside its load)."""

    name = "redis-cost"

    def __init__(self, seconds: float) -> None:
        super().__init__(short=False)
        self.seconds = seconds
        self._commands: list[tuple[bool, list[bytes]]] = []

    def config(self) -> BenchConfig:  # pragma: no cover - never run as a drill
        raise NotImplementedError

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        await asyncio.sleep(rig.cfg.seconds * 0.4)
        window = min(self.seconds, rig.cfg.seconds * 0.5)
        self._commands = await capture(rig.redis_url, window)
        out["captured_s"] = window

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        # Per answered message: a window in which the shards fell behind holds fewer
        # answers than messages taken in, and the commands of those answers.
        answers = answers_in(self._commands)
        commands = replayable(self._commands)
        out["captured"] = {"commands": len(commands), "messages": messages_in(self._commands),
                           "answers": answers, "seconds": out.pop("captured_s", self.seconds)}
        if answers:
            out.update(await replay(commands, answers))
        rig.log(f"Redis cost, replayed alone: {out.get('replay_cpu_us_per_msg', '?')} µs "
                f"of CPU per answered message ({answers} answers, {len(commands)} commands "
                f"captured)")
