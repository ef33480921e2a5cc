"""`mtdesk bench scale --report`: e2e runs at each shard count, every message answered
once in each, and a report plotting throughput and p99 against the shard count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_bench_scale_runs_each_shard_count_and_plots_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "bench", "scale", "--shards", "1,2", "--nodes", "1",
         "--seconds", "2", "--rate", "10", "--users", "12", "--llm-latency-ms", "50",
         "--report", str(tmp_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads((tmp_path / "scale.json").read_text())["figures"]
    assert [(r["nodes"], r["shards"]) for r in result["runs"]] == [(1, 1), (1, 2)]
    for run in result["runs"]:
        assert run["e2e"]["messages"] == 20 and run["e2e"]["replied_once"] == 20
    table = (tmp_path / "scale.md").read_text()
    assert table.count("| one node |") == 2
    for plot in ("throughput", "p99"):
        assert (tmp_path / f"scale-{plot}.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_scale_rejects_a_bad_shard_list_naming_the_option(capsys) -> None:  # type: ignore[no-untyped-def]
    from mtdesk.cli.main import main

    with pytest.raises(SystemExit):
        main(["bench", "scale", "--shards", "1,two"])
    assert "--shards" in capsys.readouterr().err
