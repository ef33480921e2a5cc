"""A Redis of one's own for ``mtdesk demo`` and ``mtdesk bench``: never mix their data
with a real deployment's.

:func:`local_redis` yields a Redis URL: with ``prefer_own`` (the default) and
``redis-server`` installed, a fresh server on a free port, no persistence, stopped when
the block exits; otherwise ``MTDESK_REDIS_URL`` (or the default URL) when it answers.
An explicit ``MTDESK_REDIS_URL`` wins unless ``prefer_own`` is ``"always"``.
:func:`free_port` is a free TCP port on 127.0.0.1 (racy by nature; fine for local tools).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Literal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


@contextlib.contextmanager
def local_redis(
    workdir: str, *, who: str = "mtdesk", prefer_own: bool | Literal["always"] = True,
    pid_out: list[int] | None = None,
) -> Iterator[str]:
    """A Redis URL for the duration of the block (see the module docstring).

    ``who`` names the tool in error messages; ``pid_out`` receives the server's pid when
    one was started here (a benchmark measures its CPU)."""
    explicit = os.environ.get("MTDESK_REDIS_URL")
    server = shutil.which("redis-server")
    if (explicit and prefer_own != "always") or server is None or not prefer_own:
        url = explicit or "redis://127.0.0.1:6379/0"
        if not redis_answers(url):
            raise SystemExit(
                f"{who}: no Redis answers at {url} and redis-server is not installed "
                "(Debian: apt-get install redis-server)")
        yield url
        return
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if pid_out is not None:
        pid_out.append(proc.pid)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{who}: redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
