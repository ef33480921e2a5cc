"""Long replies are split per channel within Meta's limits, and bodies match the Send API."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mtdesk.channels.outbound import (
    INSTAGRAM_MAX_BYTES,
    MESSENGER_MAX_CHARS,
    WHATSAPP_MAX_CHARS,
    is_our_metadata,
    metadata_for,
    one_message,
    render_parts,
    split_text,
    within_limit,
)
from mtdesk.core.ports import OutboundMessage

_WS = re.compile(r"\s+")


def _fits(channel: str, part: str) -> bool:
    if channel == "instagram":
        return len(part.encode("utf-8")) <= INSTAGRAM_MAX_BYTES
    return len(part) <= (MESSENGER_MAX_CHARS if channel == "messenger" else WHATSAPP_MAX_CHARS)


def _assert_good_split(channel: str, text: str, parts: list[str]) -> None:
    assert all(parts), "no empty parts"
    assert all(_fits(channel, p) for p in parts), "every part within the limit"
    # Parts are consecutive pieces of the text: only whitespace was dropped between them.
    pos = 0
    for part in parts:
        found = text.find(part, pos)
        assert found >= 0 and text[pos:found].strip() == ""
        pos = found + len(part)
    assert text[pos:].strip() == ""
    assert _WS.sub("", "".join(parts)) == _WS.sub("", text)


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
sentence = st.lists(words, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + ".")
prose = st.lists(sentence, min_size=0, max_size=400).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(channel=st.sampled_from(["messenger", "instagram", "whatsapp"]),
       text=st.one_of(prose, st.text(max_size=9000)))
def test_any_text_splits_within_the_limit_and_rejoins(channel: str, text: str) -> None:
    _assert_good_split(channel, text, split_text(channel, text))  # type: ignore[arg-type]


def test_short_text_is_one_part_unchanged() -> None:
    assert split_text("messenger", "  Hello!  ") == ["Hello!"]
    assert split_text("whatsapp", "   ") == []


def test_messenger_cuts_at_a_sentence_end() -> None:
    sentence_a = "A" * 1500 + "."
    sentence_b = "Then " + "b" * 800 + "."
    parts = split_text("messenger", f"{sentence_a} {sentence_b}")
    assert parts == [sentence_a, sentence_b]


def test_instagram_counts_bytes_not_characters() -> None:
    text = " ".join(["ça coûte cher"] * 200)  # ~2,800 bytes, ~2,600 characters
    parts = split_text("instagram", text)
    assert len(parts) >= 3
    assert all(len(p.encode()) <= 1000 for p in parts)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)
    assert not within_limit("instagram", "é" * 501) and within_limit("messenger", "é" * 501)


def test_whatsapp_allows_4096_characters_and_cuts_words_when_no_sentence() -> None:
    assert split_text("whatsapp", "x" * 4096) == ["x" * 4096]
    parts = split_text("whatsapp", " ".join(["word"] * 2000))  # 9,999 chars, no full stop
    assert len(parts) == 3 and all(p.startswith("word") and p.endswith("word") for p in parts)


def test_text_without_spaces_is_cut_hard() -> None:
    parts = split_text("messenger", "y" * 5000)
    assert [len(p) for p in parts] == [1999, 1999, 1002]


def _msg(**kw: object) -> OutboundMessage:
    base = dict(tenant_id="t1", channel="messenger", account_id="P1", user_id="U1",
                text="Hi there.", reply_key="mid.1")
    base.update(kw)
    return OutboundMessage(**base)  # type: ignore[arg-type]


def test_messenger_body_is_a_response_with_our_metadata() -> None:
    [body] = render_parts(_msg())
    assert json.loads(body) == {"recipient": {"id": "U1"}, "messaging_type": "RESPONSE",
                                "message": {"text": "Hi there.", "metadata": "mtdesk:mid.1#0"}}


def test_whatsapp_parts_carry_our_mark_within_512_characters() -> None:
    """Meta returns ``biz_opaque_callback_data`` in the message's statuses; it takes 512."""
    long_key = "wamid." + "A" * 600
    bodies = render_parts(_msg(channel="whatsapp", wa_id="4471", reply_key=long_key,
                               text="x " * 3000))
    marks = [json.loads(b)["biz_opaque_callback_data"] for b in bodies]
    assert len(marks) == 2 and all(len(m) <= 512 for m in marks)
    assert marks[0].startswith("mtdesk:h:") and marks[0].endswith("#0") and marks[1].endswith("#1")


def test_whatsapp_body_addresses_wa_id_or_business_scoped_user() -> None:
    [by_phone] = render_parts(_msg(channel="whatsapp", user_id="US.77", wa_id="4471", reply_to="wamid.X"))
    assert json.loads(by_phone) == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "4471",
        "type": "text", "text": {"body": "Hi there.", "preview_url": False},
        "context": {"message_id": "wamid.X"}, "biz_opaque_callback_data": "mtdesk:mid.1#0"}
    [by_user] = render_parts(_msg(channel="whatsapp", user_id="US.77"))
    decoded = json.loads(by_user)
    assert decoded["recipient"] == "US.77" and "to" not in decoded


def test_only_the_first_whatsapp_part_quotes_the_user_message() -> None:
    bodies = [json.loads(b) for b in render_parts(
        _msg(channel="whatsapp", wa_id="1", text="z" * 5000, reply_to="wamid.Q"))]
    assert "context" in bodies[0] and "context" not in bodies[1]


def test_metadata_is_capped_and_recognized() -> None:
    long_key = "k" * 2000
    assert len(metadata_for(long_key, 3)) <= 1000
    assert metadata_for(long_key, 3) != metadata_for(long_key + "x", 3)
    assert is_our_metadata(metadata_for("m", 0)) and not is_our_metadata("agent note")
    assert not is_our_metadata(None)


def test_a_private_reply_is_addressed_to_the_comment() -> None:
    message = OutboundMessage(tenant_id="t", channel="instagram", account_id="IG1",
                              user_id="7310492856614412", text="Yes, we ship there.",
                              reply_key="17865799348089039", comment_id="17865799348089039")
    [body] = render_parts(message)
    assert json.loads(body) == {
        "recipient": {"comment_id": "17865799348089039"}, "messaging_type": "RESPONSE",
        "message": {"text": "Yes, we ship there.", "metadata": "mtdesk:17865799348089039#0"}}


@settings(max_examples=60, deadline=None)
@given(channel=st.sampled_from(["messenger", "instagram", "whatsapp"]),
       text=st.one_of(prose, st.text(max_size=9000)))
def test_one_message_is_whole_or_its_first_part_with_an_ellipsis(channel: str, text: str) -> None:
    one = one_message(channel, text)  # type: ignore[arg-type]
    assert within_limit(channel, one)  # type: ignore[arg-type]
    parts = split_text(channel, text)  # type: ignore[arg-type]
    if len(parts) <= 1:
        assert one == (parts[0] if parts else "")
    else:
        assert one.endswith(" …") and parts[0].startswith(one[:-2].rstrip())
