"""`mtdesk drill takeover-race --short`: a person answers from Meta's inbox while the bot's
answer is being generated; no bot message reaches that customer afterwards, and the
rest of the load is answered exactly once."""

from __future__ import annotations

import pytest
from drillkit import run_drill


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_no_bot_message_after_a_person_takes_over_mid_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # --rate: the form's load at another rate (its own is 10 msgs/s for 6 s)
    r, stdout = run_drill("takeover-race", tmp_path, extra=("--rate", "8"))
    assert r["rate"] == 8 and r["e2e"]["messages"] == 48
    assert r["races"] == 5 and r["races_not_started"] == 0
    assert r["bot_messages_after_takeover"] == 0
    assert r["in"] > 0 and r["answered_once"] == r["in"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert "0 bot messages after the takeover" in stdout


def test_a_drill_refuses_a_rate_of_nothing_naming_it(capsys) -> None:  # type: ignore[no-untyped-def]
    from mtdesk.cli.main import main

    assert main(["drill", "takeover-race", "--short", "--rate", "0"]) == 2
    assert "--rate" in capsys.readouterr().err
