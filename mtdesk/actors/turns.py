"""What a conversation remembers and what the model is shown of it.

:class:`ConversationContext` is persisted as msgpack at ``keys.context(tenant, conv)``:
``turns`` (the last ``settings.history_turns`` user/assistant messages), ``bot_state``
(free-form, for bot flows), ``last_inbound_ms``, ``window_until_ms`` (when Meta's
customer service window ends: :mod:`mtdesk.actors.window`), ``paused_until_ms`` and ``replied``
(anything was sent to the person: the conversation is no longer new, no greeting),
``thread_owner`` / ``thread_owner_ms`` (who owns the thread: :mod:`mtdesk.policy.threads`)
and ``language`` (the customer's, which answers are made in).
:func:`build_prompt` is the default prompt builder (recent turns, then the new user
message(s)); the ChatModel adds the system prompt and the passages itself. The context
keeps one user turn per answered inbound message and one assistant turn per reply, so
each turn maps to one history entry (the retention sweep relies on it).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from mtdesk.channels.suggestions import suggestion_of
from mtdesk.core.events import Message, Postback
from mtdesk.core.ports import BotConfig, ChatMessage, Passage
from mtdesk.core.sealing import CONTEXT_FAMILY, TenantKey
from mtdesk.policy.threads import ThreadControl


class ConversationContext(msgspec.Struct, kw_only=True):
    turns: list[ChatMessage] = msgspec.field(default_factory=list)
    bot_state: dict[str, str] = msgspec.field(default_factory=dict)
    last_inbound_ms: int = 0
    window_until_ms: int = 0  # 0: not kept yet (24 h from last_inbound_ms)
    paused_until_ms: int = 0
    # Something reached the person here (a reply part, a human agent's message): with
    # ``turns`` (which may be kept empty: history_turns 0) it says the conversation is
    # not new, so no greeting.
    replied: bool = False
    # The customer's language (ISO 639-1) as last clearly detected; "" not known yet.
    # A short message ("ok") does not change it (mtdesk.retrieval.language).
    language: str = ""
    # ``turns`` and ``bot_state`` sealed with the tenant's data key (family
    # :data:`CONTEXT_FAMILY`, id: the conversation key) as msgpack ``[turns, bot_state]``;
    # both are empty in the stored form then. Only ever set in Redis, never in memory.
    sealed: bytes | None = None
    # Who owns the thread (Messenger/Instagram handover protocol; mtdesk.policy.threads):
    # "" this app, else the owning app's id; and when that was said.
    thread_owner: str = ""
    thread_owner_ms: int = 0

    @property
    def thread(self) -> ThreadControl:
        return ThreadControl(thread_owner=self.thread_owner, thread_owner_ms=self.thread_owner_ms)

    def set_thread(self, control: ThreadControl) -> None:
        self.thread_owner = control.thread_owner
        self.thread_owner_ms = control.thread_owner_ms

    @property
    def new(self) -> bool:
        """Nobody has written to the person in this conversation (as far as it is kept)."""
        return not self.turns and not self.replied


context_encoder = msgspec.msgpack.Encoder()
context_decoder = msgspec.msgpack.Decoder(ConversationContext)
_private_decoder = msgspec.msgpack.Decoder(tuple[list[ChatMessage], dict[str, str]])


def encode_context(context: ConversationContext, key: TenantKey, conversation: str) -> bytes:
    """The stored form: what the person and the bot said sealed when ``key`` seals."""
    if key.enabled and (context.turns or context.bot_state):
        private = context_encoder.encode((context.turns, context.bot_state))
        context = msgspec.structs.replace(
            context, turns=[], bot_state={},
            sealed=key.seal(CONTEXT_FAMILY, conversation, private))
    return context_encoder.encode(context)


def decode_context(raw: bytes, key: TenantKey, conversation: str) -> ConversationContext:
    """A stored context, opened (one stored before sealing reads as it is). Raises
    msgspec.DecodeError or DecryptionError when it cannot be read."""
    context = context_decoder.decode(raw)
    if context.sealed is not None:
        turns, bot_state = _private_decoder.decode(
            key.open(CONTEXT_FAMILY, conversation, context.sealed))
        context = msgspec.structs.replace(context, turns=turns, bot_state=bot_state, sealed=None)
    return context

PromptBuilder = Callable[[BotConfig, list[ChatMessage], list[str], list[Passage]], list[ChatMessage]]


def build_prompt(
    bot: BotConfig, turns: list[ChatMessage], texts: list[str], passages: list[Passage]
) -> list[ChatMessage]:
    """Recent turns, then the new message(s) as ONE user message (a burst joined by
    newlines, so a model answering the last user message sees all of it). The system
    prompt and the passages are the ChatModel's to add (it gets ``bot`` and
    ``passages``)."""
    return [*turns, ChatMessage("user", "\n".join(texts))]


_SENT_NOTE = "(The customer sent: "


def describe_attachments(message: Message) -> str:
    """What the model is told about an attachment-only message."""
    kinds = ", ".join(a.type for a in message.attachments) or message.type
    captions = " ".join(a.caption for a in message.attachments if a.caption)
    text = f"{_SENT_NOTE}{kinds}"
    if message.location is not None:
        text += f", location {message.location.name or ''} {message.location.address or ''}".rstrip()
    return text + (f", with the caption: {captions})" if captions else ")")


def user_text(event: Message | Postback) -> str:
    """What the person said: a tapped suggestion says its whole text (its title may be
    cut), anything else its text, payload or attachments."""
    if isinstance(event, Postback):
        return event.title or event.payload or ""
    tapped = suggestion_of(event.quick_reply) or suggestion_of(event.interactive_id)
    if tapped is not None:
        return tapped
    return event.text or event.quick_reply or event.interactive_id or describe_attachments(event)


def customer_words(texts: list[str]) -> list[str]:
    """``texts`` without our own notes about attachments (the customer's words only: what
    their language is read from)."""
    return [t for t in texts if not t.startswith(_SENT_NOTE)]


def bounded(turns: list[ChatMessage], limit: int) -> list[ChatMessage]:
    """The last ``limit`` turns (none when ``limit`` is 0)."""
    return turns[-limit:] if limit else []


def without_texts(turns: list[ChatMessage], texts: list[str], *,
                  role: str = "user") -> list[ChatMessage]:
    """``turns`` without the ``role``'s turn of each of ``texts`` (the person's by
    default; the latest one that says it: an unsent message is a recent one; an older
    turn with the same words stays)."""
    kept = list(turns)
    for text in texts:
        for i in range(len(kept) - 1, -1, -1):
            if kept[i].role == role and kept[i].content == text:
                del kept[i]
                break
    return kept


def with_text_edited(turns: list[ChatMessage], old: str, new: str, *,
                     role: str = "assistant") -> list[ChatMessage]:
    """``turns`` with the latest ``role`` turn saying ``old`` saying ``new`` instead."""
    edited = list(turns)
    for i in range(len(edited) - 1, -1, -1):
        if edited[i].role == role and edited[i].content == old:
            edited[i] = ChatMessage(role, new)
            break
    return edited
