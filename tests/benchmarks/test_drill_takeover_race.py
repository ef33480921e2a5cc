"""`mtdesk drill takeover-race --short`: a person answers from Meta's inbox while the bot's
answer is being generated; no bot message reaches that customer afterwards, and the
rest of the load is answered exactly once."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_no_bot_message_after_a_person_takes_over_mid_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r, stdout = run_drill("takeover-race", tmp_path)
    assert r["races"] == 5 and r["races_not_started"] == 0
    assert r["bot_messages_after_takeover"] == 0
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert "0 bot messages after the takeover" in stdout
