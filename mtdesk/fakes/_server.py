"""What every fake shares: serve an aiohttp app on 127.0.0.1 port 0, in this process or another.

In-process (tests)::

    async with SomeFake() as fake:     # listening once entered
        fake.base_url                  # http://127.0.0.1:PORT/...

In another process (benchmarks, demo)::

    proc = spawn_fake("mtdesk.fakes.graph", "--latency-ms", "5")
    proc.root_url                      # http://127.0.0.1:PORT
    proc.stop()

A fake run as a process prints one line ``LISTENING <root url>`` on stdout once it
listens; :func:`spawn_fake` waits for that line, so the caller never races the bind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from types import TracebackType
from typing import IO, Self, cast

from aiohttp import web

READY_PREFIX = "LISTENING "


class FakeServer:
    """Base of the fakes: owns one ``web.Application`` and its runner."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.latency_s = latency_s  # delays every answer; settable at any time
        self._runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:  # pragma: no cover - overridden
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - overridden
        """Forget what was recorded and any failure queued."""
        raise NotImplementedError

    def add_control_routes(self, app: web.Application) -> None:
        """``POST /_fake/latency {"ms": N}`` and ``POST /_fake/reset``: the knobs a fake
        running as a process is turned with."""
        app.router.add_post("/_fake/latency", self._h_latency)
        app.router.add_post("/_fake/reset", self._h_reset)

    async def _h_latency(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.latency_s = float(data["ms"]) / 1000.0
        return web.json_response({"ok": True})

    async def _h_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    @property
    def root_url(self) -> str:
        """``http://host:port`` (no path); valid once started."""
        if self._runner is None:
            raise RuntimeError("fake server is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, shutdown_timeout=0.5)
        await site.start()
        self._runner = runner
        # aiohttp keeps the bound socket here; port 0 needs it. Typed AbstractServer, it is
        # the loop's server (asyncio's or uvloop's), which has ``sockets``.
        server = cast("asyncio.Server | None", site._server)
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT (used by ``python -m mtdesk.fakes.<name>``)."""
        await self.start()
        print(f"{READY_PREFIX}{self.root_url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()


def process_arguments(description: str) -> argparse.ArgumentParser:
    """The options every fake process takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    return parser


class FakeProcess:
    """A fake running in a child process. ``stop()`` (or ``with``) terminates it."""

    def __init__(self, popen: subprocess.Popen[str], root_url: str) -> None:
        self.popen = popen
        self.root_url = root_url

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_fake(module: str, *args: str, timeout: float = 20.0,
               env: dict[str, str] | None = None) -> FakeProcess:
    """Start ``python -m <module> --port 0 <args>`` and wait until it listens (``env``:
    variables added to this process's environment for it)."""
    popen = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    root = _read_ready_line(popen.stdout, popen, timeout)
    return FakeProcess(popen, root)


def _read_ready_line(stream: IO[str] | None, popen: subprocess.Popen[str], timeout: float) -> str:
    """The root URL from the child's ``LISTENING`` line; kills the child after ``timeout``."""
    assert stream is not None
    found: list[str] = []

    def read() -> None:  # readline blocks: do it in a thread so the deadline holds
        for line in stream:
            if line.startswith(READY_PREFIX):
                found.append(line[len(READY_PREFIX):].strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if found:
        return found[0]
    popen.kill()
    popen.wait()
    raise RuntimeError(f"fake process did not start listening (exit code {popen.returncode})")
