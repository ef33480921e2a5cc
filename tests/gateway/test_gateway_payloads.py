"""Each Meta payload decodes to the normalized events it holds, for all three channels."""

from __future__ import annotations

import json
from typing import Any

from mtdesk.channels.webhook import UndecodableBody, parse_webhook
from mtdesk.core.events import (
    Attachment,
    Comment,
    Echo,
    Edit,
    Location,
    Message,
    Postback,
    Pricing,
    Reaction,
    Receipt,
    Status,
    StatusError,
    Unsend,
    Unsupported,
    decode_event,
    encode_event,
)

PAGE = "112233445566778"
PSID = "6543210987654321"
IG = "17841400000000001"
IGSID = "1234567890123456"
PHONE_ID = "106540352242922"
WA = "16505551234"
BSUID = "US.10293847561029384756"


def body(obj: dict[str, Any]) -> bytes:
    # Meta's own compact form, "/" escaped as it does.
    return json.dumps(obj, separators=(",", ":")).replace("/", "\\/").encode()


def messenger(*items: dict[str, Any], obj: str = "page", account: str = PAGE) -> bytes:
    return body({"object": obj, "entry": [{"id": account, "time": 1717171717171, "messaging": list(items)}]})


def item(user: str = PSID, account: str = PAGE, ts: int = 1717171716990, **kind: Any) -> dict[str, Any]:
    return {"sender": {"id": user}, "recipient": {"id": account}, "timestamp": ts, **kind}


def whatsapp(value: dict[str, Any], field: str = "messages") -> bytes:
    v = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_ID},
        **value,
    }
    return body(
        {"object": "whatsapp_business_account",
         "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": v}]}]}
    )


CONTACT = {"profile": {"name": "Sheena Nelson"}, "wa_id": WA, "user_id": BSUID}


def wa_msg(mtype: str, **content: Any) -> dict[str, Any]:
    return {"from": WA, "from_user_id": BSUID, "id": f"wamid.{mtype}", "timestamp": "1749416383",
            "type": mtype, **content}


def one(raw: bytes) -> Any:
    parsed = parse_webhook(raw)
    assert len(parsed.events) == 1, parsed
    return parsed.events[0]


# --- the shared fixtures ------------------------------------------------------------------


def test_fixtures_decode_to_their_events(fixture_bodies: dict[str, bytes]) -> None:
    got = {name: parse_webhook(b).events for name, b in fixture_bodies.items()}
    assert got["messenger_text"] == [
        Message(event_id="m_dGhpcyBpcyBhIG1pZA-AbCdEf123", channel="messenger", account_id=PAGE,
                user_id=PSID, timestamp_ms=1717171716990, text="Hi! Do you ship to Canada?")
    ]
    assert got["instagram_text"] == [
        Message(event_id="aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAw", channel="instagram",
                account_id=IG, user_id=IGSID, timestamp_ms=1717172100555,
                text="is this still available?")
    ]
    (img,) = got["messenger_image"]
    assert isinstance(img, Message) and img.text is None and img.type == "image"
    assert img.attachments == (Attachment(
        type="image",
        url="https://scontent.xx.fbcdn.net/v/t1.15752-9/4483_n.jpg?_nc_cat=1&oh=00_AfB&oe=6A1C2022"),)
    assert got["messenger_echo"] == [
        Echo(event_id="m_ZWNoby1taWQ-Qw12", channel="messenger", account_id=PAGE, user_id=PSID,
             timestamp_ms=1717171900800, app_id="1517776481860111", metadata="gw:reply:7f3c",
             text="Yes, we ship to Canada in 3-5 days.")
    ]
    assert got["messenger_postback"] == [
        Postback(event_id="m_cG9zdGJhY2s-Pb77", channel="messenger", account_id=PAGE, user_id=PSID,
                 timestamp_ms=1717172000321, title="Get Started", payload="GET_STARTED")
    ]
    delivered, read = got["messenger_delivery_read"]
    assert isinstance(delivered, Receipt) and delivered.receipt == "delivered"
    assert delivered.message_ids == ("m_ZWNoby1taWQ-Qw12",) and delivered.watermark_ms == 1717172048000
    assert isinstance(read, Receipt) and read.receipt == "read" and read.watermark_ms == 1717172049000
    assert delivered.event_id != read.event_id

    (wt,) = got["whatsapp_text"]
    assert wt == Message(
        event_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", channel="whatsapp",
        account_id=PHONE_ID, user_id=BSUID, wa_id=WA, user_name="Sheena Nelson",
        timestamp_ms=1749416383000, text="Does it come in another color?")
    (wi,) = got["whatsapp_image"]
    assert isinstance(wi, Message) and wi.user_id == BSUID and wi.text == "This one?"
    assert wi.attachments == (Attachment(type="image", media_id="1013859600285441",
                                         mime_type="image/jpeg", caption="This one?"),)
    (sd,) = got["whatsapp_status_delivered"]
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUQ2MjA4NEYyRkExNjMyREUA"
    assert sd == Status(event_id=f"status:{wamid}:delivered", channel="whatsapp", account_id=PHONE_ID,
                        user_id=BSUID, wa_id=WA, timestamp_ms=1751142850000, message_id=wamid,
                        status="delivered",
                        pricing=Pricing(category="service", billable=True, model="PMP", type="regular"))
    (sf,) = got["whatsapp_status_failed"]
    assert isinstance(sf, Status) and sf.status == "failed"
    assert sf.errors[0].code == 131047 and "24 hours" in (sf.errors[0].details or "")


def test_every_event_survives_the_stream_encoding(fixture_bodies: dict[str, bytes]) -> None:
    for b in fixture_bodies.values():
        for ev in parse_webhook(b).events:
            assert decode_event(encode_event(ev)) == ev


def test_a_batch_of_many_entries_and_items_yields_every_event() -> None:
    entries = [
        {"id": PAGE, "time": 1, "messaging": [
            item(user=f"user{e}", message={"mid": f"m_{e}_{i}", "text": f"hello {e} {i}"})
            for i in range(7)
        ]}
        for e in range(5)
    ]
    parsed = parse_webhook(body({"object": "page", "entry": entries}))
    assert [ev.event_id for ev in parsed.events] == [f"m_{e}_{i}" for e in range(5) for i in range(7)]
    assert {ev.user_id for ev in parsed.events} == {f"user{e}" for e in range(5)}


def test_a_whatsapp_batch_with_many_changes_messages_and_statuses() -> None:
    value = {"contacts": [CONTACT, {"wa_id": "4915100000000", "profile": {"name": "Jo"}}],
             "messages": [wa_msg("text", text={"body": "a"}),
                          {"from": "4915100000000", "id": "wamid.jo", "timestamp": "1749416384",
                           "type": "text", "text": {"body": "b"}}],
             "statuses": [{"id": "wamid.out1", "status": "sent", "timestamp": "1749416385",
                           "recipient_id": WA}]}
    v = json.loads(whatsapp(value))
    v["entry"].append(v["entry"][0])
    v["entry"][1] = {"id": "2", "changes": [v["entry"][0]["changes"][0]] * 2}
    events = parse_webhook(body(v)).events
    assert len(events) == 9
    jo = events[1]
    assert jo.user_id == "4915100000000" and jo.wa_id == "4915100000000" and jo.user_name == "Jo"
    assert events[2].user_id == BSUID  # status recipient resolved through contacts


# --- Messenger ------------------------------------------------------------------------------


def test_messenger_quick_reply_and_reply_to() -> None:
    ev = one(messenger(item(message={"mid": "m_q", "text": "Red", "quick_reply": {"payload": "COLOR_RED"},
                                     "reply_to": {"mid": "m_prev"}})))
    assert isinstance(ev, Message) and ev.quick_reply == "COLOR_RED" and ev.reply_to == "m_prev"


def test_messenger_attachments_of_every_kind() -> None:
    atts = [{"type": t, "payload": {"url": f"https://cdn.example/{t}"}} for t in ("audio", "video", "file")]
    atts.append({"type": "image", "payload": {"url": "https://cdn.example/like.png", "sticker_id": 369239263222822}})
    ev = one(messenger(item(message={"mid": "m_a", "attachments": atts})))
    assert [a.type for a in ev.attachments] == ["audio", "video", "file", "sticker"]
    assert ev.attachments[3].sticker_id == "369239263222822"
    assert ev.attachments[0].url == "https://cdn.example/audio"


def test_messenger_location() -> None:
    ev = one(messenger(item(message={"mid": "m_l", "attachments": [
        {"type": "location", "title": "Pin", "payload": {"coordinates": {"lat": 48.85, "long": 2.35}}}]})))
    assert ev.location == Location(latitude=48.85, longitude=2.35) and ev.attachments == ()


def test_messenger_reaction_and_unreaction_have_distinct_stable_ids() -> None:
    react = messenger(item(reaction={"mid": "m_t", "action": "react", "reaction": "love", "emoji": "\u2764"}))
    unreact = messenger(item(ts=1717171716999, reaction={"mid": "m_t", "action": "unreact"}))
    a, b = one(react), one(unreact)
    assert isinstance(a, Reaction) and a.target_id == "m_t" and a.emoji == "\u2764" and a.action == "react"
    assert isinstance(b, Reaction) and b.action == "unreact"
    assert a.event_id != b.event_id and one(react).event_id == a.event_id


def test_messenger_unsent_message_is_an_unsend() -> None:
    ev = one(messenger(item(message={"mid": "m_gone", "is_deleted": True})))
    assert isinstance(ev, Unsend) and ev.target_id == "m_gone"


def test_messenger_edit_and_unsupported_are_recorded_not_answered() -> None:
    edit = one(messenger(item(message_edit={"mid": "m_e", "text": "fixed", "num_edit": 1})))
    assert isinstance(edit, Edit) and (edit.target_id, edit.text, edit.version) == ("m_e", "fixed", 1)
    uns = one(messenger(item(message={"mid": "m_u", "is_unsupported": True})))
    assert isinstance(uns, Unsupported) and uns.event_id == "m_u"
    optin = one(messenger(item(optin={"type": "notification_messages", "payload": "x"})))
    assert isinstance(optin, Unsupported) and optin.type == "optin"


def test_messenger_unknown_item_kind_is_counted_not_an_error() -> None:
    parsed = parse_webhook(messenger(item(game_play={"game_id": "1"})))
    assert parsed.events == [] and parsed.unknown == ["messenger:messaging"]


def test_echo_from_a_human_agent_has_no_app_id() -> None:
    ev = one(messenger({"sender": {"id": PAGE}, "recipient": {"id": PSID}, "timestamp": 5,
                        "message": {"mid": "m_h", "is_echo": True, "text": "Hi, Anna here"}}))
    assert isinstance(ev, Echo) and ev.app_id is None and ev.user_id == PSID and ev.account_id == PAGE


# --- Instagram ------------------------------------------------------------------------------


def ig(*items: dict[str, Any]) -> bytes:
    return messenger(*items, obj="instagram", account=IG)


def test_instagram_story_reply_and_story_mention() -> None:
    reply = one(ig(item(user=IGSID, account=IG, message={
        "mid": "ig_r", "text": "love it", "reply_to": {"story": {"url": "https://lookaside.example/s", "id": "1799"}}})))
    assert reply.channel == "instagram" and reply.story_id == "1799" and reply.story_url == "https://lookaside.example/s"
    mention = one(ig(item(user=IGSID, account=IG, message={
        "mid": "ig_m", "attachments": [{"type": "story_mention", "payload": {"url": "https://lookaside.example/m"}}]})))
    assert mention.type == "story_mention" and mention.attachments[0].type == "story_mention"


def test_instagram_share_reel_and_seen() -> None:
    share = one(ig(item(user=IGSID, account=IG, message={
        "mid": "ig_s", "attachments": [{"type": "ig_reel", "payload": {"reel_video_id": "9", "title": "t", "url": "https://x/y"}}]})))
    assert share.attachments[0].type == "ig_reel"
    seen = one(ig(item(user=IGSID, account=IG, read={"mid": "ig_ours"})))
    assert isinstance(seen, Receipt) and seen.receipt == "read" and seen.message_ids == ("ig_ours",)
    assert seen.event_id == f"read:{IG}:{IGSID}:ig_ours"


def test_instagram_deleted_and_echo() -> None:
    gone = one(ig(item(user=IGSID, account=IG, message={"mid": "ig_d", "is_deleted": True})))
    assert isinstance(gone, Unsend) and gone.channel == "instagram"
    echo = one(ig({"sender": {"id": IG}, "recipient": {"id": IGSID}, "timestamp": 7,
                   "message": {"mid": "ig_e", "is_echo": True, "text": "ok", "app_id": "1517776481860111"}}))
    assert isinstance(echo, Echo) and echo.user_id == IGSID and echo.account_id == IG


def test_instagram_comments_are_events_and_other_changes_are_counted() -> None:
    b = body({"object": "instagram", "entry": [{"id": IG, "time": 1, "changes": [
        {"field": "comments", "value": {"id": "c1", "text": "nice", "from": {"id": "u"}}},
        {"field": "comments", "value": {"id": "c2", "text": "no author"}},
        {"field": "comments", "value": {"id": ["not", "an", "id"]}},
        {"field": "story_insights", "value": {"media_id": "m1", "reach": 17}}]}]})
    parsed = parse_webhook(b)
    [comment] = parsed.events
    assert isinstance(comment, Comment) and (comment.event_id, comment.user_id, comment.text) == (
        "c1", "u", "nice")
    assert comment.timestamp_ms == 1000  # the entry's time, in seconds
    assert parsed.unknown == ["instagram:comments:incomplete", "instagram:field:story_insights"]
    assert parsed.malformed == 1


# --- WhatsApp -------------------------------------------------------------------------------


def wa_one(msg: dict[str, Any], contacts: list[dict[str, Any]] | None = None) -> Any:
    return one(whatsapp({"contacts": contacts if contacts is not None else [CONTACT], "messages": [msg]}))


def test_whatsapp_media_of_every_kind() -> None:
    for t in ("audio", "video", "sticker"):
        ev = wa_one(wa_msg(t, **{t: {"id": f"media-{t}", "mime_type": "x/y"}}))
        assert ev.attachments == (Attachment(type=t, media_id=f"media-{t}", mime_type="x/y"),)
    doc = wa_one(wa_msg("document", document={"id": "media-doc", "filename": "invoice.pdf",
                                                "mime_type": "application/pdf", "caption": "my invoice"}))
    assert doc.attachments[0].filename == "invoice.pdf" and doc.text == "my invoice"


def test_whatsapp_location_interactive_and_button() -> None:
    loc = wa_one(wa_msg("location", location={"latitude": 52.5, "longitude": 13.4, "name": "HQ", "address": "Street 1"}))
    assert loc.location == Location(latitude=52.5, longitude=13.4, name="HQ", address="Street 1")
    br = wa_one(wa_msg("interactive", interactive={"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}))
    assert br.interactive_id == "yes" and br.text == "Yes" and br.type == "interactive"
    lr = wa_one(wa_msg("interactive", interactive={"type": "list_reply", "list_reply": {"id": "r2", "title": "Blue", "description": "d"}}))
    assert lr.interactive_id == "r2"
    btn = wa_one(wa_msg("button", button={"text": "Stop promotions", "payload": "STOP"}))
    assert btn.quick_reply == "STOP" and btn.text == "Stop promotions"


def test_whatsapp_reply_context_and_reactions() -> None:
    reply = wa_one(wa_msg("text", text={"body": "this one"}, context={"from": "15550783881", "id": "wamid.ours"}))
    assert reply.reply_to == "wamid.ours"
    r = wa_one(wa_msg("reaction", reaction={"message_id": "wamid.ours", "emoji": "\U0001f44d"}))
    assert isinstance(r, Reaction) and r.target_id == "wamid.ours" and r.action == "react"
    un = wa_one(wa_msg("reaction", reaction={"message_id": "wamid.ours", "emoji": ""}))
    assert isinstance(un, Reaction) and un.action == "unreact" and un.emoji is None


def test_whatsapp_unsupported_with_errors() -> None:
    ev = wa_one(wa_msg("unsupported", errors=[{"code": 131051, "title": "Message type unknown"}],
                       unsupported={"type": "poll_creation"}))
    assert isinstance(ev, Unsupported) and ev.type == "poll_creation"
    odd = wa_one(wa_msg("hologram", hologram={"x": 1}))
    assert isinstance(odd, Unsupported) and odd.type == "hologram"


def test_whatsapp_user_with_only_a_business_scoped_id() -> None:
    msg = {"from_user_id": "US.777", "id": "wamid.u", "timestamp": "1749416383", "type": "text", "text": {"body": "hi"}}
    ev = wa_one(msg, contacts=[{"profile": {"name": "Kim"}, "user_id": "US.777"}])
    assert ev.user_id == "US.777" and ev.wa_id is None and ev.user_name == "Kim"


def test_whatsapp_user_without_business_scoped_id_is_keyed_on_wa_id() -> None:
    msg = {"from": WA, "id": "wamid.p", "timestamp": "1749416383", "type": "text", "text": {"body": "hi"}}
    ev = wa_one(msg, contacts=[{"profile": {"name": "Sheena"}, "wa_id": WA}])
    assert ev.user_id == WA and ev.wa_id == WA


def test_whatsapp_statuses_and_deleted_message() -> None:
    evs = parse_webhook(whatsapp({"statuses": [
        {"id": "wamid.o", "status": "read", "timestamp": "1749416390", "recipient_id": WA, "recipient_user_id": BSUID},
        {"id": "wamid.o", "status": "failed", "timestamp": "1749416391", "recipient_id": WA,
         "errors": [{"code": 131026, "title": "Message undeliverable"}]},
        {"id": "wamid.theirs", "status": "deleted", "timestamp": "1749416392", "recipient_id": WA},
    ]})).events
    read, failed, deleted = evs
    assert isinstance(read, Status) and read.user_id == BSUID and read.event_id == "status:wamid.o:read"
    assert read.timestamp_ms == 1749416390000
    assert isinstance(failed, Status) and failed.errors == (StatusError(code=131026, title="Message undeliverable"),)
    assert isinstance(deleted, Unsend) and deleted.target_id == "wamid.theirs"


def test_whatsapp_other_fields_are_counted() -> None:
    parsed = parse_webhook(whatsapp({"event": "APPROVED"}, field="message_template_status_update"))
    assert parsed.events == [] and parsed.unknown == ["whatsapp:field:message_template_status_update"]


# --- envelopes ------------------------------------------------------------------------------


def test_unknown_object_is_counted_not_an_error() -> None:
    parsed = parse_webhook(b'{"object":"user","entry":[{"id":"1","changes":[{"field":"email"}]}]}')
    assert parsed.events == [] and parsed.unknown == ["object"]


def test_a_malformed_item_keeps_its_neighbours() -> None:
    b = messenger(item(message={"mid": "m_ok", "text": "fine"}), {"sender": "not-an-object", "timestamp": 1})
    parsed = parse_webhook(b)
    assert [e.event_id for e in parsed.events] == ["m_ok"] and parsed.malformed == 1


def test_non_envelopes_are_undecodable() -> None:
    for raw in (b"", b"null", b"[]", b'{"entry":[]}', b'{"object":"page"}', b"\xff\xfe", b'{"object":1,"entry":[]}'):
        try:
            parse_webhook(raw)
        except UndecodableBody:
            continue
        raise AssertionError(f"{raw!r} decoded")
