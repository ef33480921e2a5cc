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
