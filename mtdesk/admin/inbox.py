"""Inbox routes: a person answers a customer, takes the conversation from the bot and
gives it back, assigns it, closes and reopens it.

``POST /admin/api/v1/conversations/{key}/reply`` ``{text}`` (or, WhatsApp,
``{template: {name, language, parameters}}``) → 202 ``{"id", "conversation", "tag"}``:
the bot is silent in the conversation from that moment (an answer being generated is
dropped at its send permit) and the reply is queued to the conversation's shard, which
sends it through the same exactly-once sender as the bot's (docs/admin.md, "Inbox").
Outside Meta's 24 h window a Messenger/Instagram reply goes tagged ``HUMAN_AGENT``
(up to 7 days after the person's last message), a WhatsApp one only as a template;
otherwise 409 naming why. ``…/handback``, ``…/assign`` ``{user_id}``, ``…/close``,
``…/reopen``, ``…/read`` answer 200 with the conversation's card.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp
from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes, vault_of
from mtdesk.admin.auth import principal, tenant_scope
from mtdesk.admin.bodies import Assignment, ConversationAction, HumanReply
from mtdesk.admin.decode import read_body, read_optional_body
from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS, cipher_of
from mtdesk.core.clock import now_ms
from mtdesk.core.errors import Conflict, GraphError, NotFound, ValidationError
from mtdesk.core.events import TemplateSend
from mtdesk.core.history import decode_message
from mtdesk.core.http import error_response, json_response
from mtdesk.core.inbox import Card, Inbox, agent_reply
from mtdesk.core.redis import Redis, as_bytes, as_entries
from mtdesk.core.tenants import CONNECTED, channel_token_aad
from mtdesk.policy.meta_accounts import approved_templates

HOUR_MS: Final = 3_600_000
WINDOW_MS: Final = 24 * HOUR_MS
HUMAN_AGENT_MS: Final = 7 * 24 * HOUR_MS


async def conversation_card(request: web.Request, tenant_id: str) -> Card:
    """The card of the conversation ``{key}`` names (404 when the tenant has none)."""
    conv = request.match_info["key"]
    card = await Inbox(request.config_dict[REDIS], cipher_of(request.config_dict)).card(
        tenant_id, conv)
    if card is None:
        raise NotFound(f"conversation {conv!r} not found")
    return card


async def _last_inbound_ms(redis: Redis, tenant_id: str, card: Card, scan: int = 200) -> int:
    """When the person last wrote: the card's, or (a card older than it) the history's."""
    if card.last_in_ms:
        return card.last_in_ms
    entries = as_entries(await redis.xrevrange(keys.history(tenant_id, card.conversation),
                                               count=scan))
    for _entry, fields in entries:
        message = decode_message(fields[b"m"])
        if message.direction == "in" and message.kind in ("message", "postback"):
            return message.timestamp_ms
    return 0


async def _require_connected(redis: Redis, tenant_id: str, card: Card) -> None:
    owner, cid = await redis.hmget(keys.account(card.channel, card.account_id), "tenant",
                                   "channel_id")
    status = (await redis.hget(keys.channel(tenant_id, as_bytes(cid).decode()), "status")
              if owner == tenant_id.encode() and cid else None)
    if status != CONNECTED.encode():
        raise Conflict("conversation", f"its {card.channel} account {card.account_id} is not "
                                       "connected: reconnect the channel to reply")


def reply_tag(card: Card, since_ms: int, *, template: bool) -> str | None:
    """The tag a person's reply goes with ``since_ms`` after the person last wrote
    (None: a plain answer); Conflict when nothing may go."""
    if template:
        if card.channel != "whatsapp":
            raise ValidationError("template", "only WhatsApp sends templates; send text")
        return None
    if since_ms < WINDOW_MS:
        return None
    if card.channel == "whatsapp":
        raise Conflict("text", "outside WhatsApp's 24 h window: only an approved template "
                               "can be sent now (GET …/templates lists them; send "
                               "{\"template\": {name, language, parameters}})")
    if since_ms < HUMAN_AGENT_MS:
        return "HUMAN_AGENT"
    days = since_ms // (24 * HOUR_MS)
    raise Conflict("text", f"outside Meta's 7-day human agent window: the person last wrote "
                           f"{days} days ago; {card.channel} allows no reply until they write "
                           "again")


async def reply(request: web.Request) -> web.Response:
    body = await read_body(request, HumanReply)
    tid = tenant_scope(request, body)
    text = body.text.strip() if body.text is not None else None
    if body.template is None and not text:
        raise ValidationError("text", "is required (or, on WhatsApp, a template)")
    if body.template is not None and body.text is not None:
        raise ValidationError("template", "send either text or a template, not both")
    cfg = request.config_dict
    redis = cfg[REDIS]
    card = await conversation_card(request, tid)
    await _require_connected(redis, tid, card)
    now = now_ms(cfg[CLOCK])
    last_in = await _last_inbound_ms(redis, tid, card)
    tag = reply_tag(card, now - last_in if last_in else WINDOW_MS * 1000,
                    template=body.template is not None)
    template = (TemplateSend(name=body.template.name, language=body.template.language,
                             parameters=tuple(body.template.parameters))
                if body.template is not None else None)
    who = principal(request)
    event = agent_reply(card.conversation, text=text, author=who.user_id or "api", tag=tag,
                        template=template)
    settings = cfg[SETTINGS]
    await Inbox(redis).queue_reply(tid, event, pause_s=settings.handoff_pause_s,
                                   partitions=settings.partitions, now_ms=now,
                                   handoff=card.status != "human")
    return json_response({"id": event.event_id, "conversation": card.conversation,
                          "tag": tag, "status": "queued"}, status=202)


async def _acted(request: web.Request, tid: str) -> web.Response:
    return json_response(await conversation_card(request, tid))


async def hand_back(request: web.Request) -> web.Response:
    tid = tenant_scope(request, await read_optional_body(request, ConversationAction))
    card = await conversation_card(request, tid)
    await Inbox(request.config_dict[REDIS]).hand_back(tid, card.conversation)
    return await _acted(request, tid)


async def assign(request: web.Request) -> web.Response:
    body = await read_body(request, Assignment)
    tid = tenant_scope(request, body)
    card = await conversation_card(request, tid)
    redis = request.config_dict[REDIS]
    if body.user_id is not None and not await redis.sismember(keys.users(tid), body.user_id):
        raise ValidationError("user_id", "is not a member of this team")
    await Inbox(redis).assign(tid, card.conversation, body.user_id)
    return await _acted(request, tid)


async def _card_action(
    request: web.Request, action: Callable[[Inbox, str, str], Awaitable[object]]
) -> web.Response:
    """Close, reopen or mark read: the same steps, one Inbox method each."""
    tid = tenant_scope(request, await read_optional_body(request, ConversationAction))
    card = await conversation_card(request, tid)
    await action(Inbox(request.config_dict[REDIS]), tid, card.conversation)
    return await _acted(request, tid)


async def close(request: web.Request) -> web.Response:
    return await _card_action(request, Inbox.close)


async def reopen(request: web.Request) -> web.Response:
    return await _card_action(request, Inbox.reopen)


async def mark_read(request: web.Request) -> web.Response:
    return await _card_action(request, Inbox.mark_read)


async def templates(request: web.Request) -> web.Response:
    """The number's approved WhatsApp templates, from Meta (``GET /{waba-id}/
    message_templates``): what a reply outside the 24 h window may send."""
    tid = tenant_scope(request)
    card = await conversation_card(request, tid)
    if card.channel != "whatsapp":
        raise ValidationError("conversation", "templates are WhatsApp's; Messenger and "
                                              "Instagram replies are text")
    redis = request.config_dict[REDIS]
    await _require_connected(redis, tid, card)
    cid = as_bytes(await redis.hget(keys.account(card.channel, card.account_id),
                                    "channel_id") or b"").decode()
    waba, cipher = await redis.hmget(keys.channel(tid, cid), "subscription_id", "token")
    if not waba or not cipher:
        raise Conflict("conversation", "the WhatsApp Business Account of this number is not "
                                       "known: connect the number through Meta's signup "
                                       "(GET /admin/connect/whatsapp) to list its templates")
    token = vault_of(request).decrypt(as_bytes(cipher).decode(), channel_token_aad(tid, cid))
    try:
        async with aiohttp.ClientSession() as http:
            found = await approved_templates(http, request.config_dict[SETTINGS],
                                             as_bytes(waba).decode(), token)
    except GraphError as exc:
        return error_response(502, "templates", f"Meta answered error {exc.code}; retry")
    return json_response({"conversation": card.conversation, "templates": found})


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    base = f"{API_BASE}/conversations/{{key}}"
    r.add_post(f"{base}/reply", reply)
    r.add_post(f"{base}/handback", hand_back)
    r.add_post(f"{base}/assign", assign)
    r.add_post(f"{base}/close", close)
    r.add_post(f"{base}/reopen", reopen)
    r.add_post(f"{base}/read", mark_read)
    r.add_get(f"{base}/templates", templates)
