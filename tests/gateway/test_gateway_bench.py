"""`mtdesk bench ingest` runs end to end (tiny durations: a smoke test, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_ingest_reports_its_figures_and_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "bench", "ingest", "--seconds", "0.5", "--rounds", "1",
         "--connections", "4", "--redis-url", redis_url, "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    for key in ("events_per_s", "baseline_events_per_s", "ratio", "ack_p50_ms", "ack_p99_ms"):
        assert report[key] > 0, key
    assert report["errors"]["max"] == [{}] and report["errors"]["half"] == {}
    assert report["events_in_streams"] == report["events_acknowledged"] > 0


def test_bench_ingest_on_a_cluster_counts_every_master_and_loses_nothing(tmp_path: Path) -> None:
    """``--cluster``: the gateway on a cluster of the bench's own; the events in the
    streams of every master are those acknowledged, and Redis' CPU is counted."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "bench", "ingest", "--cluster", "--seconds", "0.5",
         "--rounds", "1", "--connections", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["cluster"] is True and report["ratio"] > 0
    assert report["cpu_us_per_event"]["max"]["redis"] > 0
    assert report["events_in_streams"] == report["events_acknowledged"] > 0


def test_bench_ingest_on_a_cluster_refuses_fsync_by_name(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "bench", "ingest", "--cluster", "--durability", "fsync"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2 and "--cluster" in proc.stderr and "fsync" in proc.stderr
