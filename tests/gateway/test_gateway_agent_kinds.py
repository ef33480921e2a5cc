"""Meta's own agents and the WhatsApp Business app, as the gateway reads them: each
real-format fixture of ``tests/fixtures/meta/kinds`` (standby, handovers, Business-app
echoes and history, user id changes) decodes to the events it stands for; whatever shape
such an item takes, parsing never raises."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from meta_kinds import BSUID, PAGE, PHONE_ID, PSID, WA, load

from mtdesk.channels.webhook import UndecodableBody, parse_webhook
from mtdesk.core.events import (
    Echo,
    Edit,
    Event,
    Handover,
    Imported,
    Message,
    Unsend,
    UserChanged,
)

ECHOED = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJFQ0hPRUNITzEyMzQ1Njc4OQA="  # the echo fixture's id


def events(name: str) -> list[Event]:
    parsed = parse_webhook(load(name))
    assert parsed.malformed == 0 and parsed.unknown == [], name
    return parsed.events


def test_standby_messages_are_marked_so_nobody_answers_them() -> None:
    message, echo = events("messenger_standby")
    assert isinstance(message, Message) and message.standby
    assert message.text == "Is anyone there? I asked about my order"
    assert (message.account_id, message.user_id) == (PAGE, PSID)
    # The Page inbox's reply on standby: another app's echo, to the person.
    assert isinstance(echo, Echo) and echo.standby and echo.user_id == PSID
    assert echo.app_id == "263902037430900"


def test_handovers_name_the_owners_and_the_step() -> None:
    take, give, ask = events("messenger_handovers")
    assert isinstance(take, Handover) and isinstance(give, Handover) and isinstance(ask, Handover)
    assert (take.action, take.new_owner_app_id, take.previous_owner_app_id) == (
        "take", "263902037430900", "APP1")
    assert (give.action, give.new_owner_app_id) == ("pass", "APP1")
    # A numeric app id (as some of Meta's samples send it) reads as the same string.
    assert (ask.action, ask.requested_owner_app_id) == ("request", "263902037430900")
    assert len({take.event_id, give.event_id, ask.event_id}) == 3
    assert all(h.user_id == PSID and h.account_id == PAGE for h in (take, give, ask))


def test_business_app_echoes_are_the_business_writing_to_the_person() -> None:
    [echo] = events("whatsapp_smb_message_echoes")
    assert isinstance(echo, Echo) and echo.channel == "whatsapp"
    assert (echo.account_id, echo.user_id, echo.wa_id) == (PHONE_ID, BSUID, WA)
    assert echo.app_id is None and echo.metadata is None  # never taken for our own send
    assert echo.text == "Here's the info you requested! https://www.example.com/quest-3/"


def test_business_app_edits_and_deletes_name_the_business_message_they_change() -> None:
    [edit] = events("whatsapp_smb_echo_edit")
    assert isinstance(edit, Edit) and edit.by_business
    assert (edit.account_id, edit.user_id, edit.wa_id, edit.target_id) == (
        PHONE_ID, BSUID, WA, ECHOED)
    assert edit.text == "Here's the info you requested! https://www.example.com/quest-3s/"
    [unsend] = events("whatsapp_smb_echo_revoke")
    assert isinstance(unsend, Unsend) and unsend.by_business
    assert (unsend.user_id, unsend.target_id, unsend.event_id) == (BSUID, ECHOED,
                                                                  f"unsend:{ECHOED}")


def test_a_live_message_names_both_the_number_and_the_business_scoped_id() -> None:
    [message] = events("whatsapp_text_bsuid")
    assert isinstance(message, Message)
    assert (message.user_id, message.wa_id) == (BSUID, WA)  # what imported history joins by


def test_imported_history_says_who_wrote_each_message() -> None:
    asked, answered = events("whatsapp_history")
    assert isinstance(asked, Imported) and isinstance(answered, Imported)
    assert (asked.direction, asked.user_id, asked.text) == (
        "in", WA, "Do you have the blue one in size M?")
    assert (answered.direction, answered.user_id, answered.text, answered.status) == (
        "out", WA, "Yes, we have two left.", "delivered")


def test_a_changed_number_names_the_old_and_the_new_id() -> None:
    [changed] = events("whatsapp_user_changed_number")
    assert isinstance(changed, UserChanged) and changed.change == "user_changed_number"
    assert (changed.user_id, changed.new_user_id, changed.new_wa_id) == (
        WA, "12195555358", "12195555358")


def test_a_changed_business_scoped_id_moves_from_the_old_one() -> None:
    [changed] = events("whatsapp_user_changed_user_id")
    assert isinstance(changed, UserChanged) and changed.change == "user_changed_user_id"
    assert (changed.user_id, changed.new_user_id) == (BSUID, "US.99887766554433221100")


def test_a_number_change_keyed_on_a_business_scoped_id_keeps_it() -> None:
    body = json.loads(load("whatsapp_user_changed_number"))
    body["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"] = BSUID
    [changed] = parse_webhook(json.dumps(body).encode()).events
    assert isinstance(changed, UserChanged)
    assert changed.user_id == changed.new_user_id == BSUID  # nothing to move


def test_business_app_contact_sync_is_counted() -> None:
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "smb_app_state_sync", "value": {"messaging_product": "whatsapp", "metadata": {
            "phone_number_id": PHONE_ID}, "state_sync": [{"type": "contact", "action": "add",
            "contact": {"full_name": "Sheena Nelson", "phone_number": WA}}]}}]}]}).encode()
    parsed = parse_webhook(body)
    assert parsed.events == [] and parsed.unknown == ["whatsapp:field:smb_app_state_sync"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
FIELDS = st.sampled_from(["smb_message_echoes", "history", "smb_app_state_sync", "messages"])


def _parse(body: dict[str, Any]) -> None:
    try:
        parse_webhook(json.dumps(body).encode())
    except UndecodableBody:
        pass


@given(FIELDS, JSON, JSON)
def test_any_coexistence_value_never_raises(field: str, items: Any, meta: Any) -> None:
    value = {"metadata": meta, "message_echoes": items, "history": items,
             "messages": [{"type": "system", "system": items, "from": "1", "id": "w"}]}
    _parse({"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [{"field": field, "value": value}]}]})


@given(st.sampled_from(["pass_thread_control", "take_thread_control", "request_thread_control"]),
       JSON, st.booleans())
def test_any_handover_or_standby_item_never_raises(name: str, control: Any, standby: bool) -> None:
    item = {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1, name: control}
    entry = {"id": "P", "standby" if standby else "messaging": [item]}
    for obj in ("page", "instagram"):
        _parse({"object": obj, "entry": [entry]})


@given(st.one_of(st.integers(min_value=0, max_value=1 << 40), st.text(max_size=12)),
       st.one_of(st.none(), st.text(max_size=12)))
def test_well_formed_handovers_always_make_one_event(app_id: int | str, metadata: str | None) -> None:
    item = {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1,
            "take_thread_control": {"new_owner_app_id": app_id, "metadata": metadata}}
    [ev] = parse_webhook(json.dumps({"object": "page", "entry": [
        {"id": "P", "messaging": [item]}]}).encode()).events
    assert isinstance(ev, Handover) and ev.action == "take"
    assert ev.new_owner_app_id == (None if app_id == "" else str(app_id))
