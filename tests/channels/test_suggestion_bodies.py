"""Suggested replies rendered within Meta's limits, whatever the suggestions say: the
fake Graph API's checks (the limits Meta documents) accept every body, the text is never
changed, and a tap reads back the whole suggestion."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.channels.outbound import render_parts, split_text
from mtdesk.channels.suggestions import suggestion_of, title_for
from mtdesk.core.ports import OutboundMessage
from mtdesk.fakes.graph import FakeGraphAPI

GRAPH = FakeGraphAPI()
for account, channel in (("P1", "messenger"), ("I1", "instagram"), ("W1", "whatsapp")):
    GRAPH.register(account, "t", channel=channel)
ACCOUNT = {"messenger": "P1", "instagram": "I1", "whatsapp": "W1"}

_suggestion = st.text(min_size=1, max_size=120).filter(lambda s: s.strip())
_suggestions = st.lists(_suggestion, min_size=0, max_size=5,
                        unique_by=lambda s: " ".join(s.split()))


def message(channel: str, text: str, suggestions: list[str]) -> OutboundMessage:
    return OutboundMessage(tenant_id="t", channel=channel, account_id=ACCOUNT[channel],  # type: ignore[arg-type]
                           user_id="U1", text=text, reply_key="m.1",
                           suggestions=tuple(" ".join(s.split()) for s in suggestions))


@given(st.sampled_from(["messenger", "instagram", "whatsapp"]),
       st.text(min_size=1, max_size=5000).filter(lambda t: t.strip()), _suggestions)
def test_every_body_keeps_the_text_and_meta_s_limits(
    channel: str, text: str, suggestions: list[str]
) -> None:
    msg = message(channel, text, suggestions)
    bodies = [json.loads(b) for b in render_parts(msg)]
    parts = split_text(msg.channel, text)
    assert len(bodies) == len(parts)
    for body, part in zip(bodies, parts, strict=True):
        assert GRAPH.refusal(ACCOUNT[channel], body) is None
        if channel == "whatsapp":
            said = (body["interactive"]["body"]["text"] if body["type"] == "interactive"
                    else body["text"]["body"])
        else:
            said = body["message"]["text"]
        assert said == part
    offered = _offered(channel, bodies[-1])
    for earlier in bodies[:-1]:
        assert _offered(channel, earlier) == []
    if offered:  # every tap reads back a suggestion whole (or cut to the payload's room)
        for payload in offered:
            found = suggestion_of(payload)
            assert found is not None and any(s.startswith(found) for s in msg.suggestions)


def _offered(channel: str, body: dict[str, object]) -> list[str]:
    if channel != "whatsapp":
        return [q["payload"] for q in body["message"].get("quick_replies", [])]  # type: ignore[union-attr]
    if body["type"] != "interactive":
        return []
    action = body["interactive"]["action"]  # type: ignore[index]
    if "buttons" in action:
        return [b["reply"]["id"] for b in action["buttons"]]
    return [r["id"] for s in action["sections"] for r in s["rows"]]


def test_whatsapp_shows_short_suggestions_as_buttons_and_long_ones_as_a_list() -> None:
    short = json.loads(render_parts(message("whatsapp", "Hi", ["Prices", "Opening hours"]))[0])
    assert short["interactive"]["type"] == "button"
    assert [b["reply"]["title"] for b in short["interactive"]["action"]["buttons"]] == [
        "Prices", "Opening hours"]
    long = json.loads(render_parts(message(
        "whatsapp", "Hi", ["Do you deliver to the Canary Islands?"]))[0])
    [row] = long["interactive"]["action"]["sections"][0]["rows"]
    assert row["title"] == "Do you deliver to the…"
    assert row["description"] == "Do you deliver to the Canary Islands?"
    # Over 1,024 characters an interactive body cannot hold the text: plain text.
    plain = json.loads(render_parts(message("whatsapp", "x " * 600, ["Prices"]))[0])
    assert plain["type"] == "text"


def test_titles_are_cut_at_a_word() -> None:
    assert title_for("How much does shipping cost?", 20) == "How much does…"
    assert title_for("Supercalifragilisticexpialidocious", 20) == "Supercalifragilisti…"
    assert title_for("  Opening   hours ", 20) == "Opening hours"
