"""`mtdesk drill master-kill --short`: on a Redis Cluster of the drill's own, with the
gateway acknowledging only what a replica has (MTDESK_ACK_DURABILITY=replica), a master
is killed under load; its replica takes over, the webhooks caught by the failover are
refused and retried, and every message the gateway acknowledged is answered exactly
once."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_killed_cluster_master_loses_no_acknowledged_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("master-kill", tmp_path)
    assert r["failover_s"] is not None  # the replica was elected
    assert r["replica_again_s"] is not None  # the dead node rejoined as a linked replica
    assert r["replica_again_s"] >= r["failover_s"]  # the dead node back only after that
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["not_acknowledged"] == 0  # Meta's retries got every message in
    assert r["first_reply_after_failover_s"] is not None  # answering went on after it
    assert r["e2e"]["statuses"].get("200", 0) > 0
    assert r["e2e"]["statuses"].get("503", 0) > 0  # the failover caught the load: refused
    assert "0 lost, 0 duplicated" in stdout
