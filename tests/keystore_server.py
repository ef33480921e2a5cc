"""A redis-server of a test's own, used as the key store (``MTDESK_KEYSTORE_URL``): on a
free port, its append-only file on, stopped and started again by the test (a key store
that is down), never the shared Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from mtdesk.cli.localredis import free_port


class KeyStoreServer:
    def __init__(self, directory: Path, *extra: str) -> None:
        self.directory = directory
        self.extra = extra  # more redis-server options, e.g. a renamed command
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, "the key store's redis-server did not start"
                time.sleep(0.05)
        raise AssertionError("the key store's redis-server did not listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
