"""`mtdesk drill redelivery-storm --short`: every message delivered three times within a
second is answered once; a day's backlog replayed afterwards (the load again, and
messages older than MTDESK_MAX_EVENT_AGE_S) gets no reply at all."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_triple_deliveries_and_a_replayed_backlog_get_no_second_and_no_stale_reply(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("redelivery-storm", tmp_path)
    assert r["e2e"]["redeliveries"] == 2 * r["in"] > 0  # two more copies of each
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["backlog_statuses"] == {"200": r["backlog"]}  # acknowledged, as Meta needs
    assert r["gateway_stale"] >= 100  # the never-seen old ones at least
    assert r["gateway_stale"] + r["gateway_duplicate_in_backlog"] == r["backlog"]
    assert r["replies_to_backlog"] == 0 and r["stale_answered"] == 0
    assert "0 replies to it" in stdout
