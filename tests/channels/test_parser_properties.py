"""Property tests for the channel parsers: whatever the internet sends, they never raise,
and one bad item never costs its neighbours."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mtdesk.channels.messenger.inbound import timestamp_ms
from mtdesk.channels.webhook import UndecodableBody, parse_webhook
from mtdesk.channels.whatsapp.inbound import WAFormReply, form_fields, form_text
from mtdesk.core.events import Comment, Mention, Message

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.text())
def test_form_answers_of_any_string_never_raise(response_json: str) -> None:
    fields = form_fields(response_json)
    assert all(isinstance(f.name, str) and isinstance(f.value, str) for f in fields)
    assert form_text(WAFormReply(name="flow", body="Sent", response_json=response_json), fields)


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=8))
def test_form_answers_are_every_field_but_the_token_in_order(answers: dict[str, str]) -> None:
    fields = form_fields(json.dumps({"flow_token": "t", **answers}))
    assert [(f.name, f.value) for f in fields] == [(k, v) for k, v in answers.items() if k != "flow_token"]
    text = form_text(WAFormReply(name="flow"), fields)
    assert all(v in text for v in answers.values())


@given(st.one_of(st.integers(min_value=0, max_value=1 << 62), st.text(), st.none()))
def test_any_timestamp_reads_as_milliseconds_or_zero(ts: int | str | None) -> None:
    ms = timestamp_ms(ts)
    assert isinstance(ms, int)
    if isinstance(ts, int):
        assert ms == ts  # Meta's numbers are milliseconds already


@given(st.integers(min_value=1, max_value=99_999_999_999))
def test_a_string_of_seconds_is_read_as_seconds(seconds: int) -> None:
    assert timestamp_ms(str(seconds)) == seconds * 1000


def _text(i: int) -> dict[str, Any]:
    return {"from": "16505551234", "id": f"wamid.good{i}", "timestamp": "1749416383",
            "type": "text", "text": {"body": f"hello {i}"}}


@given(st.lists(st.one_of(st.integers(min_value=0, max_value=50).map(_text), JSON), max_size=8))
def test_whatsapp_items_are_decoded_one_by_one(items: list[Any]) -> None:
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "106540352242922"},
                                        "messages": items}}]}]}).encode()
    parsed = parse_webhook(body)
    good = [i for i in items if isinstance(i, dict) and str(i.get("id", "")).startswith("wamid.good")]
    texts = [e.text for e in parsed.events if isinstance(e, Message) and e.event_id.startswith("wamid.good")]
    # Every good message arrives, in order, whatever its neighbours are.
    assert texts == [i["text"]["body"] for i in good]


@given(JSON)
def test_any_instagram_change_value_never_raises(value: Any) -> None:
    body = json.dumps({"object": "instagram", "entry": [
        {"id": "0", "changes": [{"field": "messages", "value": value}]}]}).encode()
    try:
        parse_webhook(body)
    except UndecodableBody:
        pass


ids = st.one_of(st.text(alphabet="0123456789", min_size=1, max_size=18),
                st.integers(min_value=1, max_value=10**18))


@given(field=st.sampled_from(["comments", "live_comments", "mentions"]), value=JSON,
       time=st.one_of(JSON, st.integers(min_value=0, max_value=1 << 62)))
def test_any_comment_or_mention_value_never_raises(field: str, value: Any, time: Any) -> None:
    body = json.dumps({"object": "instagram", "entry": [
        {"id": "17841400000000001", "time": time, "changes": [{"field": field, "value": value}]}]})
    try:
        parsed = parse_webhook(body.encode())
    except UndecodableBody:
        return
    kind = Mention if field == "mentions" else Comment
    assert all(isinstance(e, kind) and e.timestamp_ms >= 0 for e in parsed.events)


@given(cid=ids, author=ids, text=st.text(max_size=300), parent=st.none() | ids,
       media=ids, neighbours=st.lists(JSON, max_size=3))
def test_a_comment_keeps_its_ids_and_text_whatever_its_neighbours(
    cid: Any, author: Any, text: str, parent: Any, media: Any, neighbours: list[Any],
) -> None:
    value = {"id": cid, "from": {"id": author, "username": "ana"}, "text": text,
             "media": {"id": media, "media_product_type": "FEED"}, "parent_id": parent}
    changes = [{"field": "comments", "value": v} for v in neighbours]
    changes.insert(len(changes) // 2, {"field": "comments", "value": value})
    body = json.dumps({"object": "instagram", "entry": [
        {"id": "17841400000000001", "time": 1796179105, "changes": changes}]}).encode()
    mine = [e for e in parse_webhook(body).events
            if isinstance(e, Comment) and e.event_id == str(cid) and e.text == text]
    assert mine and mine[0].user_id == str(author) and mine[0].media_id == str(media)
    assert mine[0].parent_id == (None if parent is None else str(parent))
    assert mine[0].timestamp_ms == 1796179105000
