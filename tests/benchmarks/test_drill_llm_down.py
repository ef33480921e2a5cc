"""`mtdesk drill llm-down --short`: the primary provider killed under load, the fallback
provider answers; then with every provider down new customers get the bot's fallback
message, once each, and their conversations are a person's (the inbox card's status,
one hand-off each in the analytics)."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_fallback_provider_answers_then_the_fallback_message_and_a_person(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("llm-down", tmp_path)
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["answered_by_primary"] > 0 and r["answered_by_fallback"] > 0
    assert r["answered_by_primary_after_kill"] == 0
    down = r["all_down"]
    assert down["in"] > 0 and down["fallback_message_once"] == down["in"]
    assert down["lost"] == 0 and down["duplicated"] == 0 and down["other_text"] == 0
    assert down["marked_for_a_person"] == down["in"] and down["handoffs"] == down["in"]
