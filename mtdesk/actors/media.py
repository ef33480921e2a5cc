"""Media in: the attachments of the messages being answered, fetched, kept, heard, shown.

:meth:`MediaDesk.prepare` runs in a conversation's answer, after admission (the message
is stored and its reply claimed, so de-duplication never waits for a download) and while
the person sees typing. Per message of the burst, every attachment the Graph API has
bytes for (:data:`~mtdesk.core.media.FETCHABLE`) is downloaded with the channel's
credentials (:meth:`~mtdesk.actors.sender.GraphSender.download`: WhatsApp media id → URL
→ bytes; Messenger/Instagram CDN URLs, which expire, at once), stored
(:class:`~mtdesk.core.media.MediaStore`), and recorded in the history as one ``media``
entry naming the message (``reply_to``) with the references and a voice note's
transcript. The whole step waits at most ``settings.media_fetch_timeout_s``: what is not
in by then is described as not downloaded, the message is answered anyway, and the
download is retried in the background (exponential back-off, ``settings.media_retries``
attempts; a success records a further ``media`` entry). Each retry is listed in the
tenant's retry index (:meth:`~mtdesk.core.media.MediaStore.note_retry`) with the
attempts made, so a restarted shard takes up those of its partitions
(:meth:`MediaDesk.resume`) within what is left of the budget. Whoever unlists a
download records it, so a file is recorded once even if two shards fetched it. A retry
stops when the conversation was erased (its index fields go with it) or the message
unsent meanwhile.

What the model gets instead of a placeholder: a voice note's transcript (through
``MTDESK_TRANSCRIBER``) as if typed; a picture as an image content part when the bot
says its model takes images (``vision``), with its description; anything else its
description (:func:`~mtdesk.core.media.describe`). A burst of nothing but voice notes
that could not be heard is answered once per conversation with the bot's
``voice_reply`` (no model); later ones go to the model described.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

from mtdesk.core.errors import GraphError, MTDeskError, ProviderError, TenantErased
from mtdesk.core.events import Attachment, Event, Message, Postback, partition_of
from mtdesk.core.history import MEDIA_KIND, MessageStore, StoredMessage
from mtdesk.core.media import FETCHABLE, MediaRecord, MediaStore, describe
from mtdesk.core.ports import BotConfig, ChannelCredentials, CredentialSource

if TYPE_CHECKING:
    from mtdesk.actors.conversation import Conversation

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
VOICE_ASKED = "_voice_reply_sent"  # context bot_state flag: the voice reply went once
MAX_VISION_BYTES = 8 * 1024 * 1024  # larger pictures are described, not shown


class MediaSource(Protocol):
    """Downloads an attachment (:meth:`mtdesk.actors.sender.GraphSender.download`)."""

    async def download(
        self, credentials: ChannelCredentials, *, media_id: str | None = None,
        url: str | None = None, max_bytes: int = ...,
    ) -> tuple[bytes, str | None]: ...


class VoiceTranscriber(Protocol):
    """Voice notes to text (:class:`mtdesk.actors.llm.Transcriber`)."""

    async def transcribe(self, content: bytes, mime_type: str | None) -> str: ...


class Owner(Protocol):
    """The conversation a download belongs to (a :class:`Conversation`, or
    :class:`_Listed` for one taken up from the retry index)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def forgotten(self) -> bool: ...
    def now_ms(self) -> int: ...


@dataclass
class _Listed:
    tenant_id: str
    key: str
    forgotten: bool = False

    def now_ms(self) -> int:
        return int(time.time() * 1000)


class _Pending(msgspec.Struct, frozen=True):
    """A listed download: the message (only the attachment retried) and tries made."""

    event: Message
    attempts: int = 0


_pending_decoder = msgspec.msgpack.Decoder(_Pending)
_encoder = msgspec.msgpack.Encoder()


@dataclass
class Prepared:
    """What a burst's messages say once their media is in."""

    said: dict[str, str] = field(default_factory=dict)  # event id → text for the model
    images: list[str] = field(default_factory=list)  # data: URLs, for a vision bot
    voice_reply: bool = False  # answer with the bot's voice_reply, no model


class MediaDesk:
    """Fetches, stores, transcribes and describes the media of messages being answered."""

    def __init__(
        self, source: MediaSource, credentials: CredentialSource, store: MediaStore,
        history: MessageStore, *, transcriber: VoiceTranscriber | None = None,
        max_bytes: int = 25 * 1024 * 1024, timeout_s: float = 15.0, retries: int = 5,
        retry_base_s: float = 2.0, sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.credentials = credentials
        self.store = store
        self.history = history
        self.transcriber = transcriber
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_base_s = retry_base_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._retrying: set[asyncio.Task[None]] = set()
        self._listed: set[str] = set()  # retry index fields this process is retrying

    @property
    def retrying(self) -> int:
        """Downloads being retried in the background right now."""
        return len(self._retrying)

    async def aclose(self) -> None:
        tasks, self._retrying = list(self._retrying), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the answer's step --------------------------------------------------------------
    async def prepare(self, conv: Conversation, bot: BotConfig,
                      events: Sequence[Event]) -> Prepared:
        """What each message of the burst with media says, in words (by event id; the
        others keep their :func:`~mtdesk.actors.turns.user_text`); pictures for a
        vision bot; whether the answer is the bot's voice reply."""
        out = Prepared()
        unheard_voice = 0
        messages = sum(1 for e in events if isinstance(e, Message | Postback))
        for event in events:
            if not isinstance(event, Message):
                continue
            wanted = [(n, a) for n, a in enumerate(event.attachments) if a.type in FETCHABLE]
            if not wanted:
                continue
            records, contents = await self._fetch_message(conv, event, wanted)
            words = [event.text] if event.text else []
            for record in records:
                if record.type == "audio" and record.transcript:
                    words.append(record.transcript)
                    continue
                if record.type == "audio" and not event.text and len(records) == 1:
                    unheard_voice += 1
                shown = record if record.caption != event.text else msgspec.structs.replace(
                    record, caption=None)
                words.append(describe(shown))
                content = contents.get(record.index)
                if (bot.vision and content is not None and len(content) <= MAX_VISION_BYTES
                        and (record.mime_type or "").startswith("image/")):
                    mime = (record.mime_type or "image/jpeg").split(";")[0].strip()
                    out.images.append(
                        f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}")
            out.said[event.event_id] = "\n".join(w for w in words if w)
        if unheard_voice and unheard_voice == messages and VOICE_ASKED not in conv.context.bot_state:
            conv.context.bot_state[VOICE_ASKED] = "1"
            out.voice_reply = True
        return out

    async def _fetch_message(
        self, conv: Conversation, event: Message, wanted: list[tuple[int, Attachment]],
    ) -> tuple[list[MediaRecord], dict[int, bytes]]:
        """Each wanted attachment fetched (within the timeout), stored, transcribed;
        the history's media entry appended; failed ones retried in the background."""
        try:
            creds: ChannelCredentials | None = await self.credentials.credentials(
                event.channel, event.account_id)
        except MTDeskError as exc:
            log.warning("media not fetched: no credentials",
                        extra={"tenant": conv.tenant_id, "error": type(exc).__name__})
            creds = None
        tasks = {n: asyncio.ensure_future(self._one(conv, creds, event, n, a))
                 for n, a in wanted}
        done, pending = await asyncio.wait(tasks.values(), timeout=self.timeout_s)
        records: list[MediaRecord] = []
        contents: dict[int, bytes] = {}
        for n, attachment in wanted:
            task = tasks[n]
            if task in done and task.exception() is None:
                record, content = task.result()
                if content is not None:
                    contents[n] = content
            else:
                if task in pending:
                    task.cancel()
                elif task.exception() is not None:
                    log.warning("media step failed",
                                extra={"tenant": conv.tenant_id,
                                       "error": type(task.exception()).__name__})
                record = _record(n, attachment, status="failed", reason="timed out"
                                 if task in pending else "error")
            records.append(record)
            if record.status == "failed" and creds is not None and self.retries > 0:
                self._retry_later(conv, creds, event, n, attachment)
        await self._record(conv, event, records)
        return records, contents

    async def _one(
        self, conv: Owner, creds: ChannelCredentials | None, event: Message, index: int,
        attachment: Attachment,
    ) -> tuple[MediaRecord, bytes | None]:
        if creds is None:
            return _record(index, attachment, status="failed", reason="channel not connected"), None
        try:
            content, mime = await self.source.download(
                creds, media_id=attachment.media_id if attachment.url is None else None,
                url=attachment.url, max_bytes=self.max_bytes)
        except GraphError as exc:
            too_large = "too large" in str(exc)
            return _record(index, attachment, status="too_large" if too_large else "failed",
                           reason=f"graph error {exc.code}" if exc.code else str(exc)[:80]), None
        return await self._keep(conv, event, index, attachment, content, mime), content

    async def _keep(
        self, conv: Owner, event: Message, index: int, attachment: Attachment,
        content: bytes, mime: str | None,
    ) -> MediaRecord:
        mime_type = attachment.mime_type or mime or "application/octet-stream"
        stored = await self.store.put(conv.tenant_id, conv.key, event.event_id, index, content,
                                      mime_type, now_ms=conv.now_ms())
        record = _record(index, attachment, status="stored", mime_type=mime_type,
                         size=stored.size, sha256=stored.sha256, ref=stored.ref)
        if attachment.type == "audio" and self.transcriber is not None:
            try:
                transcript = await self.transcriber.transcribe(content, mime_type)
            except ProviderError as exc:
                log.warning("voice note not transcribed",
                            extra={"tenant": conv.tenant_id, "error": str(exc)[:120]})
            else:
                record = msgspec.structs.replace(record, transcript=transcript)
        return record

    async def _record(self, conv: Owner, event: Message,
                      records: list[MediaRecord]) -> None:
        if conv.forgotten or not records:
            return
        transcripts = [r.transcript for r in records if r.transcript]
        entry = StoredMessage(
            direction="in", message_id=f"media:{event.event_id}", kind=MEDIA_KIND,
            channel=event.channel, account_id=event.account_id, user_id=event.user_id,
            timestamp_ms=event.timestamp_ms, text="\n".join(transcripts) or None,
            reply_to=event.event_id, status="recorded", media=tuple(records))
        await self.history.append(conv.tenant_id, entry, now_ms=conv.now_ms())

    # --- background retries ---------------------------------------------------------------
    def _retry_later(self, conv: Owner, creds: ChannelCredentials | None, event: Message,
                     index: int, attachment: Attachment, *, attempts: int = 0,
                     listed: bool = False) -> None:
        field = self.store.retry_field(conv.key, event.event_id, index)
        if field in self._listed:
            return
        self._listed.add(field)
        task = asyncio.create_task(
            self._retry(conv, creds, event, index, attachment, attempts, listed),
            name=f"media-retry:{event.event_id}:{index}")
        self._retrying.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._retrying.discard(done)
            self._listed.discard(field)
        task.add_done_callback(finished)

    async def _list(self, conv: Owner, event: Message, index: int, attachment: Attachment,
                    attempts: int) -> bool:
        """The download listed with ``attempts`` made; True when it was not listed."""
        pending = _Pending(msgspec.structs.replace(event, text=None, attachments=(attachment,)),
                           attempts)
        return await self.store.note_retry(conv.tenant_id, conv.key, event.event_id, index,
                                           _encoder.encode(pending))

    async def _retry(self, conv: Owner, creds: ChannelCredentials | None, event: Message,
                     index: int, attachment: Attachment, first: int, listed: bool) -> None:
        tenant, key = conv.tenant_id, conv.key
        try:
            if not listed:
                await self._list(conv, event, index, attachment, first)
                listed = True
        except Exception as exc:  # noqa: BLE001 - retried in this process regardless
            log.warning("media retry not listed", extra={"tenant": tenant,
                                                         "error": type(exc).__name__})
        for attempt in range(first, self.retries):
            delay = self.retry_base_s * (2 ** attempt)
            await self._sleep(delay * (0.5 + self._rng.random() / 2))
            if conv.forgotten:  # erased meanwhile: nothing of it may be written again
                return
            try:
                # Listed again with this try counted: a field found gone was erased
                # (or the message unsent) meanwhile.
                if listed and await self._list(conv, event, index, attachment, attempt + 1):
                    await self.store.retry_done(tenant, key, event.event_id, index)
                    return
                if creds is None:
                    creds = await self.credentials.credentials(event.channel, event.account_id)
                record, _content = await self._one(conv, creds, event, index, attachment)
            except TenantErased:
                return
            except Exception as exc:  # noqa: BLE001 - a background retry must not die loud
                log.warning("media retry failed", extra={"tenant": tenant,
                                                         "error": type(exc).__name__})
                continue
            if record.status == "failed":
                continue
            # Whoever unlists the download records it: once, even if two shards got it.
            won = not listed or await self.store.retry_done(tenant, key, event.event_id, index)
            if conv.forgotten or not won:
                if record.ref:
                    await self.store.delete(tenant, key, [record.ref])
                return
            await self._record(conv, event, [record])
            return
        log.warning("media not downloaded after retries",
                    extra={"tenant": tenant, "attempts": self.retries})
        if listed:
            await self.store.retry_done(tenant, key, event.event_id, index)

    async def resume(self, tenants: Iterable[str], partitions: Iterable[int],
                     partition_count: int) -> int:
        """Take up the listed downloads of the conversations on ``partitions`` (after a
        restart or a handover) with the tries they have left; returns how many."""
        owned = set(partitions)
        taken = 0
        for tenant in await self.store.listing(list(tenants)):
            for conversation, message_id, index, value in await self.store.retries(tenant):
                if partition_of(conversation, partition_count) not in owned:
                    continue
                field = self.store.retry_field(conversation, message_id, index)
                if field in self._listed:
                    continue
                try:
                    pending = _pending_decoder.decode(value)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    await self.store.retry_done(tenant, conversation, message_id, index)
                    continue
                event, attachments = pending.event, pending.event.attachments
                if (pending.attempts >= self.retries or not attachments
                        or await self.store.has(tenant, conversation, message_id, index)):
                    # Out of tries, or the process before got it (and recorded it).
                    await self.store.retry_done(tenant, conversation, message_id, index)
                    continue
                self._retry_later(_Listed(tenant, conversation), None, event, index,
                                  attachments[0], attempts=pending.attempts, listed=True)
                taken += 1
        return taken


def _record(index: int, attachment: Attachment, *, status: str, reason: str = "",
            mime_type: str | None = None, size: int = 0, sha256: str = "",
            ref: str = "") -> MediaRecord:
    return MediaRecord(index=index, type=attachment.type,
                       mime_type=mime_type or attachment.mime_type, size=size, sha256=sha256,
                       ref=ref, status=status, reason=reason, filename=attachment.filename,
                       caption=attachment.caption)
