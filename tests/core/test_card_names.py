"""A customer's name that comes with the message (WhatsApp's contact name, anything a
person typed into their profile) goes on the inbox card in the script that stores the
message: whatever the name, the card reads it back as given (cut at 200 characters),
sealed with the tenant's key or in the clear, and the message's own line beside it."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdesk.actors.replies import ReplyStore
from mtdesk.core.events import Message
from mtdesk.core.history import CARD_LINE_CHARS, inbound_message
from mtdesk.core.inbox import Inbox
from mtdesk.core.redis import connect
from mtdesk.core.sealing import KeyRing, TenantCipher
from mtdesk.core.secret import Secret
from mtdesk.policy.vault import generate_key

RING = KeyRing([Secret(generate_key())])


async def _store_and_read(redis_url: str, name: str, text: str, sealed: bool) -> None:
    n = uuid.uuid4().hex[:12]
    redis = connect(redis_url)
    cipher = TenantCipher(redis, RING) if sealed else TenantCipher.disabled()
    try:
        event = Message(event_id=f"wamid.{n}", channel="whatsapp", account_id="1003",
                        user_id=f"1555{int(n, 16)}", timestamp_ms=1_000, text=text,
                        user_name=name)
        tid = f"t_{n}"
        replies = ReplyStore(redis, ttl_s=60, history_ttl_s=60, cipher=cipher)
        await replies.store_inbound(tid, event.event_id, inbound_message(event),
                                    now_ms=2_000, name=name)
        card = await Inbox(redis, cipher).card(tid, event.conversation)
        assert card is not None
        assert card.name == (name[:200] or None)
        assert card.unread == 1
        assert card.last_text == text[:CARD_LINE_CHARS]
    finally:
        await cipher.aclose()
        await redis.aclose()


@given(name=st.text(max_size=260), text=st.text(min_size=1, max_size=80),
       sealed=st.booleans())
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_name_comes_back_from_the_card_as_given(
    redis_url: str, name: str, text: str, sealed: bool
) -> None:
    asyncio.run(_store_and_read(redis_url, name, text, sealed))


def test_a_message_without_a_name_leaves_the_card_without_one(redis_url: str) -> None:
    asyncio.run(_store_and_read(redis_url, "", "hello", True))
