"""`mtdesk demo` and `mtdesk serve` stop cleanly on the signals a supervisor sends:
every process they started (their Redis, Ray's processes, the actors) is gone after,
also when the parent started them with SIGINT ignored. Ray's own start-up lines stay
out of the output; the product says once what Ray's authentication means."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

REDIS_URL = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` (pid → command name), from /proc."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry.name)] = int(fields[1])
        names[int(entry.name)] = name
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, ppid in parent.items():
            if ppid == current and child not in found:
                found[child] = names[child]
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Running:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, *, ignore_sigint: bool) -> None:
        def preexec() -> None:
            if ignore_sigint:  # what a non-interactive shell does to a background job
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mtdesk", *args], env=env, cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace"))

    def wait_for(self, text: str, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"never printed {text!r}: {''.join(self.lines)}")
            time.sleep(0.2)

    def stop_with(self, sig: int) -> dict[int, str]:
        """Send ``sig``; returns the processes that are still running after it exited."""
        children = descendants(self.proc.pid)
        assert children, "started no processes of its own?"
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"did not stop on signal {sig}: {''.join(self.lines[-20:])}") from None
        self._reader.join(timeout=10)
        assert code == 0, "".join(self.lines[-30:])
        deadline = time.monotonic() + 30  # a child may still be on its way out
        while time.monotonic() < deadline and any(alive(p) for p in children):
            time.sleep(0.2)
        left = {p: n for p, n in children.items() if alive(p)}
        for p in left:  # don't leave them behind for the next test either
            os.kill(p, signal.SIGKILL)
        return left


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MTDESK_", "RAY_"))}
    env.update(extra)
    return env


def assert_ray_said_once_in_our_words(lines: list[str]) -> None:
    out = "".join(lines)
    assert out.count("mtdesk: Ray: a local instance") == 1, out
    assert "Token authentication" not in out and "token-auth.html" not in out, out
    assert "worker.py" not in out and "Started a local Ray instance" not in out, out


@pytest.mark.ray
def test_demo_stopped_with_sigterm_leaves_none_of_its_processes_running(tmp_path: Path) -> None:
    demo = Running(["demo"], clean_env(MTDESK_KB_EMBEDDER="lexical"), tmp_path, ignore_sigint=False)
    demo.wait_for("operator token")
    names = set(descendants(demo.proc.pid).values())
    assert "redis-server" in names and any("raylet" in n or "gcs" in n for n in names), names
    assert demo.stop_with(signal.SIGTERM) == {}
    assert_ray_said_once_in_our_words(demo.lines)


@pytest.mark.ray
def test_serve_stops_on_sigint_even_when_its_parent_ignored_sigint(tmp_path: Path) -> None:
    env = clean_env(
        MTDESK_REDIS_URL=REDIS_URL, MTDESK_META_APP_SECRET="s", MTDESK_META_VERIFY_TOKEN="v",
        MTDESK_ENCRYPTION_KEYS=Fernet.generate_key().decode(), MTDESK_PORT="0",
        MTDESK_DATA_DIR=str(tmp_path / "data"), MTDESK_KB_EMBEDDER="lexical",
        MTDESK_SHARDS="1", MTDESK_PARTITIONS="4",
    )
    serve = Running(["serve"], env, tmp_path, ignore_sigint=True)
    serve.wait_for("mtdesk: serving on")
    assert serve.stop_with(signal.SIGINT) == {}
    assert_ray_said_once_in_our_words(serve.lines)
