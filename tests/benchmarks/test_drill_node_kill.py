"""`mtdesk drill node-kill --short`: on a two-node Ray cluster (in a process of its own,
beside the session's Ray instance) the conversation shards are spread over both nodes; a
node holding shards is killed under load, its shards come back on the surviving node and
every message is answered exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_killed_node_s_shards_come_back_on_the_live_node_and_answer_every_message_once(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "node-kill.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "drill", "node-kill", "--short", "--json", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    r = json.loads(out.read_text())
    before, after = r["placement_before"], r["placement_after"]
    assert sorted(before) == sorted(after) == ["mtdesk-shard-0", "mtdesk-shard-1"]
    assert len(set(before.values())) == 2  # spread: one shard on each node
    assert r["killed_node_shards"] and r["killed_node"] not in after.values()
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["e2e"]["redeliveries"] > 0  # Meta's retries were played across the kill too
    assert "0 lost, 0 duplicated" in proc.stdout
