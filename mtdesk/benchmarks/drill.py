"""The failure drills' harness: ``mtdesk drill NAME [--short] [--json PATH]``.

A drill is ``bench e2e`` (:mod:`mtdesk.benchmarks.e2e_run`: the real gateway, shards
and Redis, the fake LLM and Graph API as real servers, every reply matched to its
message) with something broken while the load runs. A drill module
(``mtdesk.benchmarks.drill_*``) subclasses :class:`Drill` and offers
``register_drill = TheDrill.register``; :mod:`mtdesk.cli.cmd_drill` finds it. The hooks,
each optional:

- :meth:`Drill.redis`: a Redis of the drill's own (e.g. with AOF);
- :meth:`Drill.tune`: the product's environment (a second LLM provider, a setting);
- :meth:`Drill.provision`: after the tenant is provisioned (the bot's fallback chain);
- :meth:`Drill.blow`: runs beside the load from its first message (kill, storm, …);
- :meth:`Drill.after`: a phase after every accepted message is answered (or the drain
  timed out): a replayed backlog, all providers down.

Each writes its figures into ``out`` (the report's ``drill`` key). The result printed and
written as JSON: ``in``, ``answered_once``, ``lost``, ``duplicated``, ``recovery_s`` and
the drill's own figures; the exit code is 1 when :meth:`Drill.passed` says no (by
default: anything lost or answered twice).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mtdesk.benchmarks.e2e_run import ADMIN_TOKEN, APP_SECRET, BenchConfig, Log, Replies


@dataclass
class Rig:
    """The running product as a drill sees it (filled in as the bench starts it)."""

    cfg: BenchConfig
    log: Log
    port: int
    env: dict[str, str]
    redis_url: str
    graph_root: str
    llm_root: str
    gateway: subprocess.Popen[bytes]
    cluster: Any
    workdir: str
    llm: Any  # the fake LLM's FakeProcess
    stack: contextlib.ExitStack  # what the drill starts is stopped with the bench
    session: Any = None  # aiohttp.ClientSession
    base: str = ""
    replies: Replies | None = None
    accounts: dict[str, list[str]] = field(default_factory=dict)
    run_id: str = ""
    tenant_key: str = ""
    load_started: float = 0.0  # time.time() the load began

    def start_gateway(self) -> subprocess.Popen[bytes]:
        """Start the gateway again (as its supervisor would), stopped with the bench."""
        from mtdesk.benchmarks.e2e_run import _gateway

        self.gateway = self.stack.enter_context(
            _gateway(self.env, self.port, self.workdir, self.cfg.gateway_workers))
        return self.gateway

    async def webhook(self, raw: bytes, timeout_s: float = 10.0) -> int:
        """POST one raw webhook request on a connection of its own; its status (599 when
        the connection failed)."""
        from mtdesk.benchmarks.rawhttp import Connection

        loop = asyncio.get_running_loop()
        try:
            _t, conn = await loop.create_connection(Connection, "127.0.0.1", self.port)
        except OSError:
            return 599
        try:
            return await asyncio.wait_for(conn.request(raw), timeout_s)
        except (ConnectionError, TimeoutError):
            return 599
        finally:
            conn.transport.close()

    async def webhooks(self, raws: list[bytes], connections: int = 4) -> dict[int, int]:
        """POST every request (``connections`` at a time); status → count."""
        from mtdesk.benchmarks.rawhttp import Connection

        loop = asyncio.get_running_loop()
        counts: dict[int, int] = {}
        todo = list(reversed(raws))

        async def worker() -> None:
            _t, conn = await loop.create_connection(Connection, "127.0.0.1", self.port)
            try:
                while todo:
                    status = await conn.request(todo.pop())
                    counts[status] = counts.get(status, 0) + 1
            finally:
                conn.transport.close()

        await asyncio.gather(*(worker() for _ in range(max(1, min(connections, len(raws))))))
        return counts

    def message(self, n: int, prefix: str, *, users: int | None = None,
                timestamp_ms: int | None = None) -> bytes:
        """The signed webhook carrying message ``prefix``/``n`` (from the load's customers,
        or from ``users`` of another numbering)."""
        from mtdesk.benchmarks.e2e_load import build_request

        return build_request(n, prefix=prefix, run_id=self.run_id,
                             users=users or self.cfg.users, accounts=self.accounts,
                             secret=APP_SECRET, timestamp_ms=timestamp_ms)

    async def fake(self, root: str, path: str, body: dict[str, Any]) -> Any:
        """POST a control request to a fake server (``/_fake/...``)."""
        async with self.session.post(f"{root}{path}", json=body) as resp:
            resp.raise_for_status()
            return await resp.json(content_type=None)

    async def admin(self, method: str, path: str, token: str | None = None,
                    body: dict[str, Any] | None = None) -> Any:
        """Call ``/admin/api/v1{path}`` with the tenant's key (or ``token``)."""
        headers = {"Authorization": f"Bearer {token or self.tenant_key}"}
        async with self.session.request(method, f"{self.base}/admin/api/v1{path}",
                                        headers=headers, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} answered {resp.status}: {data}")
            return data

    async def wait_replies(self, done: Any, timeout_s: float) -> bool:
        """Poll the fake Graph API's sends until ``done()`` or ``timeout_s``."""
        assert self.replies is not None
        deadline = time.monotonic() + timeout_s
        while True:
            await self.replies.poll(self.session)
            if done():
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def wait_accepting(self, timeout_s: float = 120.0) -> float | None:
        """Seconds until the gateway acknowledges a webhook again (an empty, signed batch:
        it goes through the signature check and the Redis write path), None on timeout."""
        from mtdesk.fakes.meta import sign

        body = b'{"object":"page","entry":[]}'
        raw = (b"POST /webhooks/meta HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json"
               b"\r\nX-Hub-Signature-256: " + sign(body, APP_SECRET).encode()
               + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await self.readyz() and await self.webhook(raw, 2.0) == 200:
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.1)
        return None

    async def readyz(self) -> bool:
        try:
            async with self.session.get(f"{self.base}/readyz") as resp:
                return bool(resp.status == 200)
        except Exception:  # noqa: BLE001 - not up (yet)
            return False


def first_reply_after(replies: Replies, t: float) -> float | None:
    """The time of the first reply the fake Graph API accepted after wall time ``t``."""
    times = [when for sent in replies.to.values() for when, _ in sent if when > t]
    return min(times) if times else None


def answered_after(replies: Replies, t: float | None) -> tuple[float | None, float | None]:
    """Seconds from wall time ``t`` (a restart, a failover) to the first reply sent after
    it, and to the last of the load's messages being answered (None: none after ``t``)."""
    if t is None:
        return None, None
    first = first_reply_after(replies, t)
    last = max((when for (prefix, _n), when in replies.first.items() if prefix == "tk"),
               default=None)
    return (round(first - t, 2) if first is not None else None,
            round(last - t, 2) if last is not None and last > t else None)


class Drill:
    """One drill: its name, its forms and its hooks (see the module docstring)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def __init__(self, short: bool, rate: float | None = None) -> None:
        self.short = short
        self.rate = rate  # --rate: the form's load at this rate instead of its own

    # --- hooks ----------------------------------------------------------------------
    def config(self) -> BenchConfig:
        raise NotImplementedError

    def redis(self, workdir: str) -> contextlib.AbstractContextManager[str] | None:
        return None

    def tune(self, env: dict[str, str], stack: contextlib.ExitStack) -> None:
        pass

    async def provision(self, rig: Rig) -> None:
        pass

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        """The drill's own command-line options (read back in :meth:`apply`)."""

    def apply(self, args: argparse.Namespace) -> None:
        pass

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        pass

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        pass

    # --- running --------------------------------------------------------------------
    def run(self, log: Log) -> dict[str, Any]:
        from mtdesk.benchmarks import e2e_run

        report = e2e_run.run(self.form(), log, self)
        return self.result(report)

    def form(self) -> BenchConfig:
        """The form's bench configuration, at ``--rate`` when one was given."""
        cfg = self.config()
        return cfg if self.rate is None else dataclasses.replace(cfg, rate=self.rate)

    def result(self, report: dict[str, Any]) -> dict[str, Any]:
        figures = dict(report.get("drill", {}))
        return {
            "drill": self.name, "short": self.short, "rate": report.get("offered_rate"),
            "in": report["messages"], "answered_once": report["replied_once"],
            "lost": report["lost"], "duplicated": report["duplicated"],
            "recovery_s": figures.pop("recovery_s", None),
            "not_acknowledged": report.get("not_acknowledged", 0),
            **figures, "e2e": report,
        }

    def passed(self, result: dict[str, Any]) -> bool:
        return bool(result["lost"] == 0 and result["duplicated"] == 0)

    def summary(self, r: dict[str, Any]) -> str:
        recovery = "" if r.get("recovery_s") is None else f"; recovery {r['recovery_s']} s"
        return (f"{self.name}: {r['in']} messages in, {r['answered_once']} answered once, "
                f"{r['lost']} lost, {r['duplicated']} duplicated{recovery}")

    # --- the command ------------------------------------------------------------------
    @classmethod
    def register(cls, sub: Any) -> None:
        doc = sys.modules[cls.__module__].__doc__ or ""
        p = sub.add_parser(cls.name, help=cls.help,
                           description=doc.split("\n\n")[1] if "\n\n" in doc else None)
        p.add_argument("--short", action="store_true", help="the short form (seconds, not minutes)")
        p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
        p.add_argument("--rate", type=float, metavar="MSGS_PER_S",
                       help="offer the load at this rate instead of the form's own (e.g. "
                            "the full form on a machine that does not sustain 300 msgs/s); "
                            "the seconds and the moments of the blow stay the form's")
        cls.add_options(p)
        p.set_defaults(handler=cls._handle)

    @classmethod
    def _handle(cls, args: argparse.Namespace) -> int:
        if args.rate is not None and not args.rate > 0:
            print("mtdesk: error: --rate: must be above 0 msgs/s", file=sys.stderr)
            return 2
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        drill = cls(args.short, args.rate)
        drill.apply(args)
        started = time.monotonic()
        result = drill.run(log=lambda line: print(f"drill {cls.name}: {line}", file=sys.stderr,
                                                  flush=True))
        result["wall_s"] = round(time.monotonic() - started, 1)
        ok = drill.passed(result)
        result["passed"] = ok
        print(drill.summary(result))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
        return 0 if ok else 1


@contextlib.contextmanager
def stopped_on_exit(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Terminate ``proc`` (then kill it) when the block exits."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


__all__ = ["ADMIN_TOKEN", "Drill", "Rig", "answered_after", "first_reply_after",
           "stopped_on_exit"]
