"""Every kind of Meta message becomes what a person would expect: each real-format
fixture of ``tests/fixtures/meta/kinds`` decodes to the events it stands for."""

from __future__ import annotations

import json
import time

from aiohttp.test_utils import TestClient, TestServer
from gateway_support import FIXTURE_ACCOUNTS, make_settings, route, signed, stream_entries
from meta_kinds import BSUID, IG_ID, PAGE, PHONE_ID, PSID, WA, load, names

from mtdesk.channels.webhook import parse_webhook
from mtdesk.cli.compose import build_app
from mtdesk.core import keys
from mtdesk.core.events import (
    MENTIONS_USER,
    Comment,
    ContactCard,
    Edit,
    Event,
    FormField,
    Mention,
    Message,
    Order,
    OrderItem,
    Postback,
    Pricing,
    Referral,
    Status,
    Unsend,
    Unsupported,
    decode_event,
    encode_event,
)
from mtdesk.core.redis import Redis


def events(name: str, now: float | None = None) -> list[Event]:
    parsed = parse_webhook(load(name, now))
    assert parsed.malformed == 0, name
    return parsed.events


def test_every_kind_fixture_decodes_without_unknowns_and_survives_the_stream() -> None:
    for name in names():
        parsed = parse_webhook(load(name))
        assert parsed.events, name
        assert parsed.unknown == [], (name, parsed.unknown)
        for ev in parsed.events:
            assert decode_event(encode_event(ev)) == ev


def test_fixtures_carry_the_current_time() -> None:
    now = time.time()
    for name in names():
        for ev in parse_webhook(load(name, now)).events:
            assert ev.timestamp_ms == int(now) * 1000 or ev.timestamp_ms == int(now * 1000), name


def test_whatsapp_revoke_unsends_the_original_like_a_deleted_status() -> None:
    [ev] = events("whatsapp_revoke")
    original = "wamid.HBgLMTY1MDUwNzY1MjAVAgASGBQzQTI4QUM3MTlEQkE5RjE0NUNBNQA="
    assert isinstance(ev, Unsend)
    assert ev.target_id == original and ev.user_id == BSUID and ev.account_id == PHONE_ID
    # One event id for a revoke and a "deleted" status of the same message: one unsend.
    deleted = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"metadata": {"phone_number_id": PHONE_ID},
                                       "statuses": [{"id": original, "status": "deleted",
                                                     "timestamp": "1", "recipient_id": WA}]}}]}]}
    [status_unsend] = parse_webhook(json.dumps(deleted).encode()).events
    assert isinstance(status_unsend, Unsend) and status_unsend.event_id == ev.event_id


def test_a_submitted_flow_form_is_a_message_with_its_answers() -> None:
    [ev] = events("whatsapp_nfm_reply")
    assert isinstance(ev, Message) and ev.type == "interactive"
    assert ev.form == (
        FormField("screen_0_First_name_0", "Sheena"),
        FormField("screen_0_Party_size_1", "4"),
        FormField("screen_1_Date_0", "2026-12-24"),
        FormField("screen_1_Dietary_needs_1", '["vegetarian","nut allergy"]'),
    )
    # The bot and the inbox read it in words; the flow token is not an answer.
    assert ev.text == ("Form submitted:\nFirst name: Sheena\nParty size: 4\nDate: 2026-12-24\n"
                       'Dietary needs: ["vegetarian","nut allergy"]')
    assert "booking-7f3a" not in (ev.text or "")
    assert ev.reply_to == "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBJGRjQ0RTc4MzYzMzNFNUVGMTQA"


def test_shared_contacts_are_a_readable_message() -> None:
    [ev] = events("whatsapp_contacts")
    assert isinstance(ev, Message) and ev.type == "contacts"
    assert ev.contacts == (ContactCard(
        name="Barbara J. Johnson", phones=("+1 (415) 555-0001",),
        emails=("barbara.johnson@example.com",), organization="Lucky Shrub",
        urls=("https://www.luckyshrub.example",),
    ),)
    assert ev.text == ("Shared a contact:\nBarbara J. Johnson, Lucky Shrub, +1 (415) 555-0001, "
                       "barbara.johnson@example.com, https://www.luckyshrub.example")
    # The sender is still the person who wrote, not the contact they shared.
    assert ev.user_id == BSUID and ev.user_name == "Sheena Nelson"


def test_an_order_is_a_readable_message_with_its_items() -> None:
    [ev] = events("whatsapp_order")
    assert isinstance(ev, Message) and ev.type == "order"
    assert ev.order == Order(catalog_id="194836987003835", note="Please gift-wrap the succulent", items=(
        OrderItem(product_id="di9ozbzfi4", quantity=2, price=30.0, currency="USD"),
        OrderItem(product_id="nqryix03ez", quantity=1, price=25.5, currency="USD"),
    ))
    assert ev.text == ("Sent an order:\n2 × di9ozbzfi4 at 30 USD\n1 × nqryix03ez at 25.5 USD\n"
                       "Note: Please gift-wrap the succulent")


def test_status_pricing_is_kept_for_cost_metering() -> None:
    [ev] = events("whatsapp_status_pricing")
    assert isinstance(ev, Status) and ev.status == "sent"
    assert ev.pricing == Pricing(category="marketing", billable=True, model="PMP", type="regular")


def test_a_malformed_whatsapp_item_keeps_its_good_neighbour() -> None:
    parsed = parse_webhook(load("whatsapp_malformed_neighbour"))
    # The good text is returned; the bad location is counted (the body is dead-lettered
    # for a look, but nothing of the good item is lost).
    assert parsed.malformed == 1
    [ev] = parsed.events
    assert isinstance(ev, Message) and ev.text == "Are you open on Sunday?"
    assert ev.user_id == BSUID and ev.user_name == "Sheena Nelson"


def test_a_whatsapp_ad_referral_is_kept_whole() -> None:
    [ev] = events("whatsapp_ad_referral")
    assert isinstance(ev, Message) and ev.text == "Hi! I saw your ad for the spring sale"
    assert ev.referral == "120226305854810726"
    assert ev.origin == Referral(
        source="ad", ad_id="120226305854810726", url="https://fb.me/3cr4Wqqkv",
        headline="Lucky Shrub", body="Spring sale: 30% off every succulent",
        ctwa_clid="Afc7Ybbs-oeHCR9h0nWqV3ZRqH5KwYaXcl9pHfnXyg9x",
    )


def test_a_messenger_shared_link_says_its_title_and_address() -> None:
    [ev] = events("messenger_fallback")
    assert isinstance(ev, Message) and ev.type == "fallback"
    url = "https://l.facebook.com/l.php?u=https%3A%2F%2Fluckyshrub.example%2Fcare%2Fwinter&h=AT0x"
    assert ev.text == f"Care guide: watering succulents in winter {url}"
    assert ev.attachments[0].url == url


def test_a_messenger_sticker_is_typed_sticker() -> None:
    [ev] = events("messenger_sticker")
    assert isinstance(ev, Message) and ev.type == "sticker"
    assert ev.attachments[0].type == "sticker" and ev.attachments[0].sticker_id == "369239263222822"


def test_a_messenger_referral_is_recorded_with_where_from() -> None:
    [ev] = events("messenger_referral")
    assert isinstance(ev, Unsupported) and ev.type == "referral" and ev.user_id == PSID
    assert ev.origin == Referral(source="SHORTLINK", type="OPEN_THREAD", ref="winter-care-qr")


def test_a_postback_referral_keeps_the_ad() -> None:
    [ev] = events("messenger_postback_referral")
    assert isinstance(ev, Postback) and ev.payload == "GET_STARTED"
    assert ev.origin == Referral(
        source="ADS", type="OPEN_THREAD", ref="spring-sale", ad_id="120226305854810726",
        headline="Spring sale: 30% off every succulent",
    )


def test_checkbox_opt_ins_get_a_conversation_each() -> None:
    [ev] = events("messenger_optin_user_ref")
    assert isinstance(ev, Unsupported) and ev.type == "optin"
    assert ev.user_id == "user_ref:ur-5f1e0c2b9a7d4e31" and ev.account_id == PAGE
    assert ev.origin == Referral(source="optin", type="checkbox", ref="checkout-page")
    other = load("messenger_optin_user_ref").replace(b"ur-5f1e0c2b9a7d4e31", b"ur-0000")
    [ev2] = parse_webhook(other).events
    assert ev2.conversation != ev.conversation


def test_instagram_dashboard_test_sample_is_a_message() -> None:
    now = time.time()
    [ev] = events("instagram_dashboard_test", now)
    assert isinstance(ev, Message) and ev.channel == "instagram"
    assert (ev.event_id, ev.text, ev.user_id, ev.account_id) == ("random_mid", "random_text", "12334", "23245")
    assert ev.timestamp_ms == int(now) * 1000  # seconds in a string, read as seconds
    # Meta's own sample, timestamp and all, is accepted too.
    meta_sample = load("instagram_dashboard_test").replace(str(int(now)).encode(), b"1527459824")
    [old] = parse_webhook(meta_sample).events
    assert old.timestamp_ms == 1_527_459_824_000


def test_edits_are_versions_of_their_message() -> None:
    [wa] = events("whatsapp_edit")
    assert isinstance(wa, Edit) and wa.user_id == BSUID
    assert wa.target_id == "wamid.HBgLMTY1MDUwNzY1MjAVAgASGBQzQTI4QUM3MTlEQkE5RjE0NUNBNQA="
    assert wa.text == "Does it come in green?"
    [fb] = events("messenger_message_edit")
    assert isinstance(fb, Edit) and fb.user_id == PSID
    assert (fb.target_id, fb.text, fb.version) == ("m_b3JpZ2luYWwtbWlk-Gh78", "Do you ship to Canada?", 1)


# --- through the real gateway, with the real clock -----------------------------------------


async def test_every_kind_posted_now_is_queued_fresh_for_its_tenant(redis: Redis, redis_url: str) -> None:
    # Default event age limit and the system clock: a fixture frozen in the past would be
    # queued "stale" (recorded, never answered); these are posted as Meta would post them now.
    settings = make_settings(redis_url, max_event_age_s=6 * 3600)
    for channel, account in (*FIXTURE_ACCOUNTS, ("instagram", "23245")):
        await route(redis, channel, account, tenant="tenant-1")
    expected = 0
    async with TestClient(TestServer(build_app(settings, redis=redis))) as client:
        for name in names():
            body = load(name)
            assert (await client.post("/webhooks/meta", data=body, headers=signed(body))).status == 200, name
            expected += len(parse_webhook(body).events)
        metrics = await (await client.get("/metrics")).text()
    entries = await stream_entries(redis, settings.partitions)
    assert len(entries) == expected
    for fields in entries:
        assert fields[b"t"] == b"tenant-1" and b"s" not in fields, decode_event(fields[b"e"])
    # The body with one malformed item is kept for a look; its good item is queued above.
    (dead,) = await redis.xrange(keys.DEAD_LETTERS)
    assert b"<LOCATION_LATITUDE>" in dead[1][b"b"]
    assert 'mtdesk_gateway_dead_letters_total{reason="malformed_item"} 1.0' in metrics
    texts = [getattr(decode_event(f[b"e"]), "text", None) for f in entries]
    assert "Are you open on Sunday?" in texts and "random_text" in texts


# --- Instagram comments and mentions -------------------------------------------------------


def test_instagram_comments_are_events_with_author_media_and_text() -> None:
    [c] = events("instagram_comment")
    assert isinstance(c, Comment) and c.conversation == f"instagram:{IG_ID}:7310492856614412"
    assert (c.event_id, c.user_name, c.text) == (
        "17865799348089039", "ana.surfs", "Do you ship this board to Switzerland?")
    assert (c.media_id, c.media_type, c.parent_id, c.live, c.by_business) == (
        "17918195224117851", "FEED", None, False, False)
    [reply] = events("instagram_comment_reply")
    assert isinstance(reply, Comment) and reply.parent_id == "17865799348089039"
    assert reply.media_type == "REELS"
    [ad] = events("instagram_ad_comment")
    assert isinstance(ad, Comment) and (ad.media_type, ad.ad_id) == ("AD", "23851234567890123")
    [live] = events("instagram_live_comment")
    assert isinstance(live, Comment) and live.live and live.media_type == "LIVE"


def test_the_business_own_comment_is_marked_as_its_own() -> None:
    [own] = events("instagram_own_comment")
    assert isinstance(own, Comment) and own.by_business and own.user_id == IG_ID
    assert own.parent_id == "17865799348089039"


def test_mentions_are_events_of_the_account_mentions_feed() -> None:
    [in_comment] = events("instagram_mention_comment")
    [in_caption] = events("instagram_mention_caption")
    assert isinstance(in_comment, Mention) and isinstance(in_caption, Mention)
    assert (in_comment.media_id, in_comment.comment_id) == ("17887498072083520", "17894227972186120")
    assert (in_caption.media_id, in_caption.comment_id) == ("17887498072083521", None)
    assert in_comment.user_id == in_caption.user_id == MENTIONS_USER
    assert in_comment.event_id == f"mention:{IG_ID}:17894227972186120"
    # Meta may deliver a notification again: the same mention has the same id.
    assert events("instagram_mention_comment")[0].event_id == in_comment.event_id


def test_a_whatsapp_status_carries_the_mark_our_send_put_on_it() -> None:
    """``biz_opaque_callback_data`` comes back in the statuses of the message it was sent
    with: the resumed reply reads it as Meta's confirmation of that part."""
    body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"metadata": {"phone_number_id": PHONE_ID},
                                       "statuses": [{"id": "wamid.S1", "status": "sent",
                                                     "timestamp": "1", "recipient_id": WA,
                                                     "biz_opaque_callback_data":
                                                         "mtdesk:wamid.IN#1"}]}}]}]}
    [status] = parse_webhook(json.dumps(body).encode()).events
    assert isinstance(status, Status)
    assert status.callback_data == "mtdesk:wamid.IN#1" and status.message_id == "wamid.S1"
