"""`mtdesk drill redis-restart --short`: the drill's own Redis (AOF, everysec then always)
is killed -9 under load and restarted: the gateway answers 503 while it is down, accepts
again once it is back, and nothing it had acknowledged is lost or answered twice."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_redis_killed_and_restarted_under_load_loses_no_acknowledged_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("redis-restart", tmp_path)
    assert sorted(r["modes"]) == ["always", "everysec"]
    for mode, m in r["modes"].items():
        assert set(m["answers_while_down"]) == {"503"}, mode  # never a 200 while down
        assert m["recovery_s"] is not None and m["first_reply_after_restart_s"] is not None
        assert m["in"] > 0 and m["answered_once"] == m["in"], mode
        assert m["lost"] == 0 and m["duplicated"] == 0, mode
        assert m["e2e"]["statuses"].get("503", 0) > 0  # the load met the outage too
    assert stdout.count("0 lost, 0 duplicated") == 2
