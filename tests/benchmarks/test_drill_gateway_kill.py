"""`mtdesk drill gateway-kill --short`: one of `serve --workers 2`'s workers is killed -9
under load; the serve stops for its supervisor (the drill) to start it again, Meta's
retries bring what was not acknowledged, and every message is answered exactly once."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_killed_gateway_worker_loses_nothing_it_acknowledged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("gateway-kill", tmp_path)
    assert r["workers_before"] == 2 and r["killed_worker"]
    assert r["serve_exit_code"] != 0  # a dead worker stops the serve for its supervisor
    assert r["workers_after"] == 2 and r["recovery_s"] is not None
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["not_acknowledged"] == 0
    assert "0 lost, 0 duplicated" in stdout
