"""``mtdesk drill redis-restart``: Redis killed (-9) and restarted under load, with AOF.

The drill starts a Redis of its own (a port in 6600-6699 and a temporary directory, never
another Redis) with ``appendonly yes`` and runs the load twice: ``appendfsync
everysec``, then ``always``. Each time, some seconds into the load, Redis is killed with
SIGKILL, left down for a few seconds, and started again on the same port and files. While
it is down the gateway answers 503 (Meta retries; the load generator does as Meta does,
with back-off); the shards' reads and writes fail and are retried. Figures per mode: the
gateway's answers while down, the recovery time (restart → the gateway acknowledging
webhooks again, and → the first reply sent), and what was lost: messages the gateway had
acknowledged (200) that never got an answer, and duplicates.

A kill -9 of the process is not a machine crash: what Redis had written to its AOF is in
the kernel's page cache and survives either way (Redis writes the AOF before it answers);
``everysec`` can lose up to a second of acknowledged writes only when the machine itself
goes down. The drill measures what the process kill costs.

``--short``: 20 msgs/s for 7 s from 40 customers per mode, the kill after 2 s, down 3 s.
The full form: 300 msgs/s for 30 s from 3,000 customers, the kill after 10 s, down 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig, answered_after
from mtdesk.benchmarks.e2e_run import BenchConfig, Log

NAME = "redis-restart"
MODES = ("everysec", "always")
PORTS = range(6600, 6700)


def _free_port_in(ports: range) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} for the drill's Redis")


def _answers(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - not up (yet)
        return False


class RedisRestart(Drill):
    name = NAME
    help = "kill -9 and restart Redis under load, AOF everysec then always"

    def __init__(self, short: bool, rate: float | None = None, mode: str = "everysec") -> None:
        super().__init__(short, rate)
        self.mode = mode
        self.port = 0
        self.args: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=7, rate=20, users=40, llm_latency_ms=50, shards=1,
                               duplicate_fraction=0.1, drain_timeout_s=240, connections=8,
                               warmup_messages=10, retry_rejected=True, kill_node_after_s=2.0,
                               meta_webhooks=True)
        return BenchConfig(seconds=30, rate=300, users=3000, shards=2, drain_timeout_s=300,
                           retry_rejected=True, kill_node_after_s=10.0, meta_webhooks=True)

    @property
    def down_s(self) -> float:
        return 3.0 if self.short else 10.0

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _answers(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the drill's redis-server did not start")
            time.sleep(0.05)

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)

    @contextlib.contextmanager
    def _own_redis(self, workdir: str) -> Iterator[str]:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("mtdesk drill redis-restart: redis-server is not installed "
                             "(Debian: apt-get install redis-server)")
        data = os.path.join(workdir, f"redis-{self.mode}")
        os.makedirs(data, exist_ok=True)
        self.port = _free_port_in(PORTS)
        self.args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", data,
                     "--save", "", "--appendonly", "yes", "--appendfsync", self.mode]
        self._start()
        try:
            yield f"redis://127.0.0.1:{self.port}/0"
        finally:
            self._stop()

    def redis(self, workdir: str) -> contextlib.AbstractContextManager[str]:
        return self._own_redis(workdir)

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.cfg.kill_node_after_s is not None and self.proc is not None
        await asyncio.sleep(rig.cfg.kill_node_after_s)
        rig.log(f"appendfsync {self.mode}: killing Redis (pid {self.proc.pid}, port "
                f"{self.port})…")
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        killed_at = time.monotonic()
        down: dict[int, int] = {}
        probe = rig.message(0, "down", users=1_000_000)
        while time.monotonic() - killed_at < self.down_s:
            status = await rig.webhook(probe, 5.0)
            down[status] = down.get(status, 0) + 1
            await asyncio.sleep(0.2)
        out["down_s"] = round(time.monotonic() - killed_at, 2)
        out["answers_while_down"] = {str(k): v for k, v in sorted(down.items())}
        await asyncio.to_thread(self._start)
        restarted_wall = time.time()
        rig.log(f"Redis is back after {out['down_s']} s down; the gateway answered "
                f"{out['answers_while_down']} meanwhile")
        accepting = await rig.wait_accepting()
        out["recovery_s"] = accepting
        out["_restarted_wall"] = restarted_wall
        rig.log(f"the gateway acknowledges webhooks again {accepting} s after the restart")

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.replies is not None
        # every message answered (those caught by the outage included), after the restart
        (out["first_reply_after_restart_s"],
         out["all_answered_after_restart_s"]) = answered_after(
            rig.replies, out.pop("_restarted_wall", None))

    def run(self, log: Log) -> dict[str, Any]:
        from mtdesk.benchmarks import e2e_run

        modes: dict[str, Any] = {}
        for mode in MODES:
            drill = RedisRestart(self.short, self.rate, mode)
            result = drill.result(e2e_run.run(drill.form(), log, drill))
            result.pop("drill"), result.pop("short")
            modes[mode] = result
        total = {k: sum(m[k] for m in modes.values())
                 for k in ("in", "answered_once", "lost", "duplicated", "not_acknowledged")}
        return {"drill": self.name, "short": self.short, **total,
                "recovery_s": max((m["recovery_s"] or 0.0) for m in modes.values()),
                "modes": modes}

    def passed(self, result: dict[str, Any]) -> bool:
        modes = result["modes"]
        return all(m["duplicated"] == 0 and m["lost"] == 0 and m["recovery_s"] is not None
                   and "503" in m["answers_while_down"] for m in modes.values())

    def summary(self, r: dict[str, Any]) -> str:
        lines = []
        for mode, m in r["modes"].items():
            lines.append(
                f"{NAME} (appendfsync {mode}): {m['in']} messages in, {m['answered_once']} "
                f"answered once, {m['lost']} lost, {m['duplicated']} duplicated; while down "
                f"{m['down_s']} s the gateway answered {m['answers_while_down']}; accepting "
                f"again {m['recovery_s']} s after the restart, first reply after "
                f"{m['first_reply_after_restart_s']} s, all answered after "
                f"{m['all_answered_after_restart_s']} s")
        return "\n".join(lines)


register_drill = RedisRestart.register
