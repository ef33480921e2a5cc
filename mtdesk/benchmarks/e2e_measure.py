"""Measuring the processes of ``mtdesk bench e2e``: CPU by component, py-spy profiles.

:class:`CpuMeter` reads utime + stime of this process and all its descendants from
/proc (Linux) and the machine's busy time from /proc/stat, and splits the difference
between two samples by named component (the rest of the descendants is Ray's).
:func:`start_profiles` runs ``py-spy record --format raw`` (collapsed stacks, 50 Hz,
idle threads left out) on each named process for the load's duration;
:func:`summarise` reads such a file back and says where the samples went, by the
categories that matter for a conversation shard, plus the hottest leaf frames.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from typing import Any

# First match wins, in this order: a Redis call made by the sender (rate limiter,
# credentials) counts as the send, one made by the model call as the model call.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("llm_call", ("ProviderChatModel",)),
    ("graph_send", ("GraphSender",)),
    ("redis", ("redis/",)),
    ("ray_core_worker", ("Worker.main_loop",)),
    ("stream_read_dispatch", ("_read_loop", "_dispatch", "_resume_own")),
    ("webhook", ("post_webhook", "parse_webhook")),
    ("ingest_batch", ("IngestBatcher",)),
)
_LINE = re.compile(r":\d+\)")


def _cpu_s(pid: int) -> float | None:
    """utime + stime of one process (Linux /proc), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (every process on the machine)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds by component between two :meth:`sample` calls."""

    def __init__(self, named: dict[str, list[int]]) -> None:
        self.named = named  # component → pids

    def sample(self) -> dict[str, Any]:
        # named processes need not be descendants (a daemonized Redis Cluster node)
        named = {p for pids in self.named.values() for p in pids}
        pids = {p: _cpu_s(p) for p in _descendants(os.getpid()) | {os.getpid()} | named}
        return {"at": time.monotonic(), "pids": pids, "machine": _machine_busy_s()}

    def between(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        def delta(pid: int) -> float:
            after = b["pids"].get(pid)
            if after is None:
                return 0.0
            return after - (a["pids"].get(pid) or 0.0)

        out: dict[str, float] = {}
        seen: set[int] = set()
        for name, pids in self.named.items():
            out[name] = round(sum(delta(p) for p in pids), 3)
            seen.update(pids)
        out["bench_driver"] = round(delta(os.getpid()), 3)
        seen.add(os.getpid())
        out["ray_other"] = round(sum(delta(p) for p in b["pids"] if p not in seen), 3)
        out["machine_all_processes"] = round(b["machine"] - a["machine"], 3)
        return out


def start_profiles(profile_dir: str, pids: dict[str, int], seconds: float) -> list[Any]:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(profile_dir, exist_ok=True)
    return [
        subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(int(seconds) + 1),
             "--rate", "50", "--format", "raw", "--nonblocking",
             "--output", os.path.join(profile_dir, f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items()
    ]


def summarise(path: str, top: int = 12) -> dict[str, Any]:
    """``{"samples", "categories": {name: share}, "top_self": [[frame, share], …]}``."""
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            leaves[_LINE.sub(")", stack.rsplit(";", 1)[-1])] += n
            for name, marks in CATEGORIES:
                if any(m in stack for m in marks):
                    cats[name] += n
                    break
            else:
                cats["other"] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "categories": {k: round(v / total, 3) for k, v in cats.most_common()},
        "top_self": [[k, round(v / total, 3)] for k, v in leaves.most_common(top)],
    }
