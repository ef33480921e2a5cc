"""`mtdesk drill graph-storm --short`: the Graph API answers 503, 613 and 130429 to every
send for longer than the sender's own retries; once it is over every message has been
answered, exactly once."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_after_a_graph_error_storm_everything_is_delivered_nothing_twice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("graph-storm", tmp_path)
    assert r["storm_error_codes"] == [0, 613, 130429]
    assert r["messages_refused_during_storm"] > 0
    # Backed off: a message met the storm more often than the sender tries one part (5)...
    assert r["most_attempts_for_one_message"] > 5
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert "0 lost, 0 duplicated" in stdout
