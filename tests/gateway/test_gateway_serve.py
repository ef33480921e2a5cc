"""`mtdesk serve`: refuses to start without its settings; --workers N share one port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from cryptography.fernet import Fernet
from gateway_support import APP_SECRET, VERIFY_TOKEN, signed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    env.update(
        MTDESK_REDIS_URL=redis_url,
        MTDESK_META_APP_SECRET=APP_SECRET,
        MTDESK_META_VERIFY_TOKEN=VERIFY_TOKEN,
        MTDESK_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        **extra,
    )
    return env


def test_missing_setting_stops_serve_with_its_name(redis_url: str, tmp_path) -> None:
    env = serve_env(redis_url)
    del env["MTDESK_META_VERIFY_TOKEN"]
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "serve"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "MTDESK_META_VERIFY_TOKEN" in proc.stderr


def start_two_workers(
    redis_url: str, port: int, cwd
) -> tuple[subprocess.Popen[bytes], list[str], threading.Thread]:
    """`mtdesk serve --workers 2 --no-actors`, returned once both workers serve; its
    output lines keep arriving in the list."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtdesk", "serve", "--port", str(port), "--workers", "2",
         "--no-actors"],
        env=serve_env(redis_url), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode() for line in iter(proc.stdout.readline, b"")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + 60
    while sum("mtdesk: serving on" in line for line in lines) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"serve did not start: {lines}")
        time.sleep(0.1)
    return proc, lines, reader


def test_two_workers_serve_one_port_and_stop_together(redis_url: str, tmp_path) -> None:
    port = free_port()
    proc, lines, reader = start_two_workers(redis_url, port, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        body = b'{"object":"page","entry":[]}'
        for _ in range(6):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/webhooks/meta", data=body, headers=signed(body)
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        # Aggregated over both workers, whichever answered each request.
        assert 'mtdesk_gateway_requests_total{status="200"} 6.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(10)
    assert proc.returncode == 0
    with socket.socket() as s:  # the workers are gone: the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_dead_worker_stops_the_whole_serve_for_its_supervisor(redis_url: str, tmp_path) -> None:
    port = free_port()
    proc, lines, reader = start_two_workers(redis_url, port, tmp_path)
    try:
        worker_pid = int(next(line for line in lines if "serving on" in line)
                         .rsplit("pid ", 1)[1].rstrip(")\n"))
        os.kill(worker_pid, signal.SIGKILL)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    assert code != 0, lines
    assert any("a gateway worker exited" in line for line in lines), lines
