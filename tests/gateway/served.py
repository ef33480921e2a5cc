"""A real ``mtdesk serve --no-actors`` in a subprocess, for tests that drive the running
server over sockets (slow clients, attacks)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet
from gateway_support import APP_SECRET, VERIFY_TOKEN

ADMIN_TOKEN = "operator-token-of-the-running-server-0123456789"
REDIS_URL = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


@contextlib.contextmanager
def running_serve(cwd: Path, redis_url: str = REDIS_URL, **extra: str) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    env.update(
        MTDESK_REDIS_URL=redis_url, MTDESK_META_APP_SECRET=APP_SECRET,
        MTDESK_META_VERIFY_TOKEN=VERIFY_TOKEN, MTDESK_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        MTDESK_ADMIN_TOKEN=ADMIN_TOKEN, MTDESK_DATA_DIR=str(cwd / "data"),
        MTDESK_KB_EMBEDDER="lexical", **extra,
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtdesk", "serve", "--port", str(port), "--no-actors"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    served = Served(port, proc)
    reader = threading.Thread(
        target=lambda: served.lines.extend(
            line.decode(errors="replace") for line in iter(proc.stdout.readline, b"")  # type: ignore[union-attr]
        ),
        daemon=True,
    )
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{served.base}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {served.lines}")
            time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
