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


def _cluster_ports(count: int) -> list[int]:
    """``count`` free ports below 55535 whose cluster-bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port >= 55535 or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def cluster_ok(port: int) -> bool:
    """Whether the node on ``port`` reports ``cluster_state:ok``."""
    import redis

    try:
        info = redis.Redis(port=port, socket_connect_timeout=1).execute_command("CLUSTER INFO")
    except Exception:
        return False
    if isinstance(info, dict):  # redis-py parses the reply into its fields
        state = info.get("cluster_state", info.get(b"cluster_state"))
        return state in ("ok", b"ok")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def start_cluster_node(workdir: str, port: int, *, node_timeout_ms: int = 2000,
                       who: str = "mtdesk") -> int:
    """Start (or restart, with its nodes file) the cluster node on ``port`` whose files
    are in ``workdir``, daemonized; its pid once it answers."""
    pidfile = os.path.join(workdir, f"redis-{port}.pid")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled",
         "yes", "--cluster-config-file", os.path.join(workdir, f"nodes-{port}.conf"),
         "--cluster-node-timeout", str(node_timeout_ms), "--dir", workdir,
         "--save", "", "--appendonly", "no", "--daemonize", "yes",
         "--repl-diskless-sync-delay", "0",
         "--pidfile", pidfile, "--logfile", os.path.join(workdir, f"redis-{port}.log")],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(pidfile) or not redis_answers(f"redis://127.0.0.1:{port}"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{who}: redis-server on port {port} did not start")
        time.sleep(0.05)
    with open(pidfile) as f:
        return int(f.read().strip())


@contextlib.contextmanager
def local_cluster(
    workdir: str, *, masters: int = 3, replicas: int = 1, who: str = "mtdesk",
    pid_out: list[int] | None = None, node_timeout_ms: int = 2000,
) -> Iterator[tuple[str, list[int]]]:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on free
    ports, no persistence, for the block: yields (the URL of one node, every node's
    port). Each server runs daemonized with its pid file in ``workdir``; all are stopped
    by pid when the block exits. ``pid_out`` receives their pids."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise SystemExit(f"{who}: a Redis Cluster needs redis-server and redis-cli "
                         "(Debian: apt-get install redis-server redis-tools)")
    ports = _cluster_ports(masters * (1 + replicas))
    pids: list[int] = []
    try:
        for port in ports:
            pids.append(start_cluster_node(workdir, port, node_timeout_ms=node_timeout_ms,
                                           who=who))
        if pid_out is not None:
            pid_out.extend(pids)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        deadline = time.monotonic() + 30
        while not all(cluster_ok(p) for p in ports):
            if time.monotonic() > deadline:
                raise SystemExit(f"{who}: the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0", ports
    finally:
        stop_pids(pids)


def stop_pids(pids: list[int], timeout_s: float = 10.0) -> None:
    """SIGTERM each of ``pids`` (daemonized redis-servers), then wait up to ``timeout_s``
    for all to be gone: they write their files on exit, before the caller removes them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


@contextlib.contextmanager
def local_redis_for_durability(workdir: str, mode: str, *, who: str = "mtdesk") -> Iterator[str]:
    """A fresh Redis URL that can give acknowledgement durability ``mode`` (see
    :mod:`mtdesk.core.durability`): for ``fsync`` a server with ``appendonly yes`` and
    ``appendfsync always``; for ``replica`` a master with one replica in sync; for
    ``memory`` a plain server. Stopped when the block exits."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit(f"{who}: needs redis-server (Debian: apt-get install redis-server)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *extra: str) -> int:
        port = free_port()
        folder = os.path.join(workdir, f"{name}-{port}")
        os.makedirs(folder, exist_ok=True)
        procs.append(subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder,
             "--repl-diskless-sync-delay", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while not redis_answers(f"redis://127.0.0.1:{port}"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{who}: redis-server did not start")
            time.sleep(0.05)
        return port

    try:
        if mode == "fsync":
            port = start("aof", "--appendonly", "yes", "--appendfsync", "always")
        else:
            port = start("master", "--appendonly", "no")
        if mode == "replica":
            import redis

            start("replica", "--appendonly", "no", "--replicaof", "127.0.0.1", str(port))
            master = redis.Redis(port=port)
            deadline = time.monotonic() + 30
            while (master.info("replication").get("slave0") or {}).get("state") != "online":
                if time.monotonic() > deadline:
                    raise SystemExit(f"{who}: the replica did not get in sync")
                time.sleep(0.05)
            master.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
