"""`mtdesk drill reshard --short`: the running deployment is asked through the operator API
for 3 conversation shards, then for 1, while the load runs; both handovers finish and
every message is answered exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_shards_handed_over_two_to_three_to_one_under_load_answer_every_message_once(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "reshard.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "drill", "reshard", "--short", "--json", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    r = json.loads(out.read_text())
    grow, shrink = r["handovers"]
    assert grow["to"] == 3 and shrink["to"] == 1 and grow["done"] and shrink["done"]
    assert grow["partitions_moved"] == 4  # 12 partitions: 6 + 6 → 4 + 4 + 4
    assert shrink["partitions_moved"] == 8
    assert shrink["epoch_after"] == grow["epoch_after"] + 8 > grow["epoch_before"]
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["handover_messages"] > 0  # messages were flowing while partitions moved
    assert "0 lost, 0 duplicated" in proc.stdout
