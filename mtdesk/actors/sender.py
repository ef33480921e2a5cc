"""The Graph API sender: one reply out, split per channel, rate limited, retried per the table.

Callers rely on (see docs/delivery.md for the whole contract):

- ``async for index, message_id in sender.deliver(message, parts, start=k, permits=p)``
  renders the already split ``parts`` of ``message.text``, skips the first ``k``, sends
  the rest in order and yields each part Meta accepted; the next part is sent only when
  the caller asks for it, so what the caller records after each part is recorded before
  the next goes out. Pass the stored parts and the stored count on a resume so nothing
  already accepted is sent again. Before every attempt a send permit is taken from
  ``permits`` (default: the sender's own rate limiter).
- ``await sender.send(message)`` is the whole reply at once: split (deterministically:
  the same text always gives the same parts), sent, the ids returned.
- Retriable errors (the table in :mod:`mtdesk.actors.graph_errors`, network errors and
  timeouts) are retried with exponential backoff and jitter, at most ``max_attempts``
  times per part; then, or at once for the rest, :class:`GraphError` is raised with the
  parts sent so far in ``exc.parts_sent``. Error 190 first marks the channel disconnected.
- ``await sender.signal(channel, account_id, bodies)`` posts read marks / typing
  (:func:`mtdesk.channels.outbound.render_signals`) best effort: no permit, no retry, a
  short timeout; it never raises and says whether every body was accepted.
- The access token is fetched (decrypted) per call and read only into the header.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Final
from urllib.parse import quote

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram

from mtdesk.actors.graph_errors import classify, graph_error_from_response
from mtdesk.actors.ratelimit import SendPermits, SendRateLimiter
from mtdesk.actors.stats import PerRegistry
from mtdesk.channels.outbound import render_attachment, render_body, split_text
from mtdesk.core.errors import GraphError, ValidationError
from mtdesk.core.events import Channel
from mtdesk.core.ports import (
    ChannelCredentials,
    CredentialSource,
    OutboundMessage,
    SendResult,
    SourceAttachment,
)
from mtdesk.core.settings import Settings

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
MAX_MEDIA_BYTES: Final = 100 * 1024 * 1024  # WhatsApp's largest media (documents)


class SenderMetrics(PerRegistry):
    """Prometheus collectors of the sender; one set per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.graph_errors = Counter(
            "mtdesk_graph_errors_total", "Graph API error answers by code",
            ["channel", "code"], registry=registry)
        self.sends = Counter(
            "mtdesk_sends_total", "Message parts by outcome (sent, retried, failed)",
            ["channel", "outcome"], registry=registry)
        self.latency = Histogram(
            "mtdesk_send_seconds", "Graph API send call latency (one part, one attempt)",
            ["channel"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.signals = Counter(
            "mtdesk_signals_total", "Read marks and typing indicators by outcome (sent, failed)",
            ["channel", "outcome"], registry=registry)
        self.disconnects = Counter(
            "mtdesk_channel_disconnects_total", "Channels marked disconnected (error 190)",
            ["channel"], registry=registry)


class _Sent(msgspec.Struct):
    id: str


class _SendAnswer(msgspec.Struct):
    message_id: str | None = None  # Messenger / Instagram
    messages: list[_Sent] = msgspec.field(default_factory=list)  # WhatsApp


class _MediaInfo(msgspec.Struct):
    url: str
    mime_type: str | None = None


_answer_decoder = msgspec.json.Decoder(_SendAnswer)
_media_decoder = msgspec.json.Decoder(_MediaInfo)


def parse_media_info(payload: bytes) -> tuple[str, str | None]:
    """The download URL and MIME type of a ``GET /{media-id}`` answer; :class:`GraphError`
    (code 0, not retriable) for anything else, whatever the bytes."""
    try:
        info = _media_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise GraphError(0, "media answer without a url", http_status=200) from exc
    if not info.url.startswith(("https://", "http://")):
        raise GraphError(0, "media answer without a url", http_status=200)
    return info.url, info.mime_type


def _bearer(credentials: ChannelCredentials) -> str:
    token = credentials.access_token
    value = token.reveal() if hasattr(token, "reveal") else str(token)
    return f"Bearer {value}"


class GraphSender:
    """Implements :class:`mtdesk.core.ports.Sender` over the Graph API with aiohttp."""

    def __init__(
        self,
        settings: Settings,
        credentials: CredentialSource,
        limiter: SendRateLimiter | None,
        session: aiohttp.ClientSession,
        *,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 5,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        request_timeout_s: float = 20.0,
        rng: random.Random | None = None,
        metrics: SenderMetrics | None = None,
    ) -> None:
        self._base = settings.graph_api_base.rstrip("/")
        self._credentials = credentials
        self._limiter = limiter
        self._session = session
        self._sleep = sleep
        self._max_attempts = max(1, max_attempts)
        self._base_delay = base_delay_s
        self._max_delay = max_delay_s
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._signal_timeout = aiohttp.ClientTimeout(total=min(5.0, request_timeout_s))
        self._rng = rng or random.Random()
        self._metrics = metrics or SenderMetrics.for_registry()

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): exponential, capped, half of it jitter."""
        ceiling = min(self._max_delay, self._base_delay * (2 ** (attempt - 1)))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def send(self, message: OutboundMessage) -> SendResult:
        """Send every part of ``message`` (split per the channel). Raises GraphError."""
        sent: list[str] = []
        async with aclosing(self.deliver(message, split_text(message.channel, message.text))
                            ) as accepted:
            async for _index, message_id in accepted:
                sent.append(message_id)
        return SendResult(message_ids=tuple(sent))

    async def deliver(
        self, message: OutboundMessage, parts: Sequence[str], *, start: int = 0,
        permits: SendPermits | None = None,
    ) -> AsyncGenerator[tuple[int, str], None]:
        """Send ``parts`` from index ``start`` on, yielding ``(index, message id)`` of each
        part Meta accepted. Raises GraphError (``parts_sent``: the parts accepted before,
        ``start`` included)."""
        if not parts:
            raise ValidationError("text", "is empty: nothing to send")
        url = f"{self._base}/{quote(message.account_id, safe='')}/messages"
        source = permits if permits is not None else self._limiter
        start = max(0, start)
        for index in range(start, len(parts)):
            body = render_body(message, parts[index], index, last=index == len(parts) - 1)
            try:
                message_id = await self._send_part(message, url, body, source)
            except GraphError as exc:
                exc.parts_sent = index
                raise
            yield index, message_id
        log.info("sent reply=%s channel=%s parts=%d/%d", message.reply_key, message.channel,
                 max(0, len(parts) - start), len(parts))

    async def send_attachment(
        self, message: OutboundMessage, attachment: SourceAttachment, part: int
    ) -> str:
        """Send ``attachment`` by its URL as part ``part`` of ``message`` (a rate permit
        first, retried like a text part); its Graph message id. Raises GraphError."""
        url = f"{self._base}/{quote(message.account_id, safe='')}/messages"
        body = render_attachment(message, attachment, part)
        return await self._send_part(message, url, body, self._limiter)

    async def _send_part(
        self, message: OutboundMessage, url: str, body: bytes, permits: SendPermits | None
    ) -> str:
        channel = message.channel
        for attempt in range(1, self._max_attempts + 1):
            if permits is not None:
                await permits.acquire(channel, message.account_id)
            credentials = await self._credentials.credentials(channel, message.account_id)
            try:
                return await self._post(channel, url, body, credentials)
            except GraphError as exc:
                self._metrics.graph_errors.labels(channel, str(exc.code)).inc()
                policy = classify(exc.code, exc.http_status)
                if policy.disconnect:
                    self._metrics.disconnects.labels(channel).inc()
                    await self._credentials.mark_disconnected(
                        channel, message.account_id, f"graph error {exc.code}: token invalid")
                if not exc.retriable or attempt == self._max_attempts:
                    self._metrics.sends.labels(channel, "failed").inc()
                    log.warning("send failed reply=%s account=%s code=%s subcode=%s attempt=%d",
                                message.reply_key, message.account_id, exc.code, exc.subcode,
                                attempt)
                    raise
                self._metrics.sends.labels(channel, "retried").inc()
                delay = self.backoff(attempt)
                log.info("send retry reply=%s code=%s in %.3fs", message.reply_key, exc.code,
                         delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(
        self, channel: str, url: str, body: bytes, credentials: ChannelCredentials
    ) -> str:
        headers = {"Authorization": _bearer(credentials), "Content-Type": "application/json"}
        started = time.perf_counter()
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          timeout=self._timeout) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request may or may not have reached Meta; retrying risks a duplicate
            # part, not retrying loses the reply. We retry (see docs/delivery.md).
            raise GraphError(0, f"network error: {type(exc).__name__}", retriable=True) from exc
        finally:
            self._metrics.latency.labels(channel).observe(time.perf_counter() - started)
        if status != 200:
            raise graph_error_from_response(status, payload)
        try:
            answer = _answer_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise GraphError(0, "accepted but the answer was unreadable", http_status=status) from exc
        message_id = answer.message_id or (answer.messages[0].id if answer.messages else None)
        if not message_id:
            raise GraphError(0, "accepted without a message id", http_status=status)
        self._metrics.sends.labels(channel, "sent").inc()
        return message_id

    async def signal(self, channel: Channel, account_id: str, bodies: Sequence[bytes]) -> bool:
        """Post each of ``bodies`` (read marks, typing) to the account's messages
        endpoint, in order, stopping at the first failure. Never raises: these are
        courtesies, a failure must not touch the reply."""
        if not bodies:
            return True
        url = f"{self._base}/{quote(account_id, safe='')}/messages"
        try:
            credentials = await self._credentials.credentials(channel, account_id)
            headers = {"Authorization": _bearer(credentials),
                       "Content-Type": "application/json"}
            for body in bodies:
                async with self._session.post(url, data=body, headers=headers,
                                              timeout=self._signal_timeout) as response:
                    payload = await response.read()
                    if response.status != 200:
                        error = graph_error_from_response(response.status, payload)
                        log.info("signal refused account=%s code=%s", account_id, error.code)
                        self._metrics.signals.labels(channel, "failed").inc()
                        return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # network, timeout, no credentials: best effort
            log.info("signal failed account=%s error=%s", account_id, type(exc).__name__)
            self._metrics.signals.labels(channel, "failed").inc()
            return False
        self._metrics.signals.labels(channel, "sent").inc(len(bodies))
        return True

    async def profile(self, channel: Channel, account_id: str, user_id: str,
                      fields: str) -> dict[str, object] | None:
        """The person's Graph profile (``GET /{user-id}?fields=…`` with the account's
        token), or None when Meta gives none (an error, a person who blocked it); never
        raises for Meta's or the network's failures. Nothing of it is logged."""
        url = f"{self._base}/{quote(user_id, safe='')}"
        try:
            credentials = await self._credentials.credentials(channel, account_id)
            async with self._session.get(url, params={"fields": fields},
                                         headers={"Authorization": _bearer(credentials)},
                                         timeout=self._signal_timeout) as response:
                payload = await response.read()
                if response.status != 200:
                    return None
            found = msgspec.json.decode(payload)
        except asyncio.CancelledError:
            raise
        except Exception:  # network, timeout, no credentials, not JSON: best effort
            return None
        return found if isinstance(found, dict) else None

    async def mention(self, account_id: str, fields: str) -> dict[str, object] | None:
        """What an Instagram @mention of ``account_id`` says (``GET /{ig-user-id}?fields=
        mentioned_comment…`` / ``mentioned_media…``, :mod:`mtdesk.actors.mentions`), or
        None when Meta gives nothing; never raises for Meta's or the network's failures.
        Nothing of it is logged."""
        return await self.profile("instagram", account_id, account_id, fields)

    async def fetch_media(
        self, credentials: ChannelCredentials, media_id: str, *, max_bytes: int = MAX_MEDIA_BYTES
    ) -> bytes:
        """Download WhatsApp media: ``GET /{media-id}`` then its URL, Bearer both times."""
        content, _mime = await self.download(credentials, media_id=media_id, max_bytes=max_bytes)
        return content

    async def download(
        self, credentials: ChannelCredentials | None, *, media_id: str | None = None,
        url: str | None = None, max_bytes: int = MAX_MEDIA_BYTES,
    ) -> tuple[bytes, str | None]:
        """An attachment's bytes and MIME type: WhatsApp's ``media_id`` (``GET
        /{media-id}`` for its URL, then the URL, the token as Bearer both times), or a
        Messenger/Instagram CDN ``url`` (fetched without the token: the signed address
        is the credential, and the token must not go to another host). Raises
        :class:`GraphError`: retriable for network errors, timeouts and 5xx; code 0
        with ``too large`` over ``max_bytes``. ``credentials`` may be None for a CDN
        ``url`` (a person's profile picture)."""
        headers = {"Authorization": _bearer(credentials)} if credentials is not None else {}
        mime: str | None = None
        try:
            if media_id is not None:
                if credentials is None:
                    raise GraphError(100, "a media id needs the channel's credentials")
                async with self._session.get(f"{self._base}/{quote(media_id, safe='')}",
                                             headers=headers, timeout=self._timeout) as response:
                    payload = await response.read()
                    if response.status != 200:
                        raise graph_error_from_response(response.status, payload)
                url, mime = parse_media_info(payload)
            elif url is None:
                raise GraphError(100, "an attachment needs a media id or a URL")
            else:
                headers = {}
            async with self._session.get(url, headers=headers,
                                         timeout=self._timeout) as response:
                if response.status != 200:
                    body = await response.read()
                    if media_id is None:  # a CDN answer, not the Graph API's JSON
                        raise GraphError(0, f"download answered HTTP {response.status}",
                                         http_status=response.status,
                                         retriable=response.status >= 500 or response.status == 429)
                    raise graph_error_from_response(response.status, body)
                mime = mime or response.headers.get("Content-Type")
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > max_bytes:
                        raise GraphError(0, f"media too large (over {max_bytes} bytes)",
                                         http_status=200)
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GraphError(0, f"network error: {type(exc).__name__}", retriable=True) from exc
        except GraphError as exc:
            if credentials is not None and classify(exc.code, exc.http_status).disconnect:
                self._metrics.disconnects.labels(credentials.channel).inc()
                await self._credentials.mark_disconnected(
                    credentials.channel, credentials.account_id,
                    f"graph error {exc.code}: token invalid")
            raise
        return b"".join(chunks), mime
