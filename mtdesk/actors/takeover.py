"""A person's reply from the console, sent by the conversation's shard like the bot's.

The admin API queues an :class:`~mtdesk.core.events.AgentReply` on the conversation's
partition stream after setting the pause marker (:mod:`mtdesk.core.inbox`), so the
bot is silent from that moment (admission skips, and every send permit of a reply
under way refuses: :class:`~mtdesk.actors.replies.TakenOver`). Here the reply goes
through the same reply record (keyed by the event id: a redelivery never sends it
twice, a send cut short resumes from the parts Meta accepted), the same sender and
the same history as the bot's, stored as kind ``agent`` with its author.

Its window: inside Meta's 24 h window it is a plain answer; a ``HUMAN_AGENT``-tagged
one (Messenger/Instagram) may go up to 7 days after the person's last message; a
WhatsApp template has no window. Outside them nothing is sent and the reply ends
``failed`` with the reason, shown on the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mtdesk.actors.answering import send_reply
from mtdesk.actors.replies import OutgoingReply
from mtdesk.actors.window import human_agent_until_ms, open_until
from mtdesk.core.events import AgentReply, TemplateSend
from mtdesk.core.replystate import on_delivery

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation
    from mtdesk.actors.work import WorkItem

NO_WINDOW: Final = 1 << 62  # a template may open a conversation at any time


def template_text(template: TemplateSend) -> str:
    """How a sent template reads in the history (its name, language and parameters)."""
    params = ", ".join(template.parameters)
    return f"[template {template.name} ({template.language})" + (f": {params}]" if params
                                                                else "]")


def reply_window(conv: Conversation, event: AgentReply) -> int:
    """Until when (epoch ms) this person's reply may still go."""
    ctx = conv.context
    if event.template is not None:
        return NO_WINDOW
    if event.tag == "HUMAN_AGENT":
        return max(open_until(ctx.window_until_ms, ctx.last_inbound_ms),
                   human_agent_until_ms(ctx.last_inbound_ms))
    return open_until(ctx.window_until_ms, ctx.last_inbound_ms)


async def send_agent_reply(conv: Conversation, item: WorkItem, event: AgentReply) -> None:
    """Send the person's reply once (hands the item back itself, like ``answer``)."""
    s = conv.services
    tid = item.tenant_id
    record = await s.replies.load(tid, event.event_id)
    move = on_delivery(record.phase)
    window = reply_window(conv, event)
    if move == "done":
        s.metrics.outcome("duplicate")
        s.ledger.done(item)
        return
    if move == "resume":
        reply = OutgoingReply.of_agent(tid, event, record.text)
        await send_reply(conv, [item], reply, start=record.parts_sent, window=window,
                         outcome="human")
        return
    if move == "answer" and await s.replies.claim(tid, event.event_id, [],
                                                  now_ms=conv.now_ms()) is None:
        return  # claimed elsewhere meanwhile: looked at again on redelivery
    text = template_text(event.template) if event.template is not None else (event.text or "")
    reply = OutgoingReply.of_agent(tid, event, text)
    await send_reply(conv, [item], reply, start=0, window=window, outcome="human", begin=True)
