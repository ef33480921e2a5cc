"""LLM answers through the openai SDK, with the bot's fallback chain.

Callers rely on:

- :class:`ProviderChatModel` implements :class:`mtdesk.core.ports.ChatModel` for every
  OpenAI-compatible provider in ``settings.providers``. It tries ``bot.provider`` /
  ``bot.model`` and then each ``bot.fallback`` item (``"provider:model"``) in order, moving
  on when a call times out (``settings.llm_timeout_s``), cannot connect, answers 429 or
  5xx, or answers something unreadable or empty. Any other refusal (400, 401, …) stops at
  once. When nothing answers it raises :class:`ProviderError` (``from`` the last SDK error)
  naming every attempt. The :class:`Completion` says which provider and model answered.
- :func:`build_messages` — the exact prompt: one system message (the bot's prompt, the
  grounding rule of :mod:`mtdesk.retrieval.prompt` and the numbered passages scoring at
  least ``bot.min_score``, ``[n] (source: NAME) text``), then ``messages``. See
  docs/retrieval.md, "When the knowledge has nothing".
- :class:`ModelRouter` sends bots with ``provider == "extractive"`` to the offline model
  it is given, others to the providers; a bot whose fallback chain names ``extractive``
  gets the offline answer when every provider failed.

One SDK client per provider, made on first use in the running event loop (aiohttp
transport when installed), closed by :meth:`ProviderChatModel.aclose`. No SDK retries:
the fallback chain is the retry.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Final

import msgspec
import openai
from prometheus_client import CollectorRegistry, Counter, Histogram

from mtdesk.actors.stats import PerRegistry
from mtdesk.core.errors import ConfigError, ProviderError, ValidationError
from mtdesk.core.ports import BotConfig, ChatMessage, ChatModel, Completion, Passage
from mtdesk.core.settings import Settings
from mtdesk.retrieval.extractive import is_extractive
from mtdesk.retrieval.prompt import fit_prompt, render_passage, shown_passages

log = logging.getLogger(__name__)


# What is read of an OpenAI-compatible chat completion (the rest is ignored).
class _WireMessage(msgspec.Struct, gc=False):
    content: str | None = None


class _WireChoice(msgspec.Struct, gc=False):
    message: _WireMessage = msgspec.field(default_factory=_WireMessage)


class _WireUsage(msgspec.Struct, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _WireChatResponse(msgspec.Struct, gc=False):
    choices: list[_WireChoice] = []
    model: str | None = None
    usage: _WireUsage | None = None


_chat_response = msgspec.json.Decoder(_WireChatResponse)

EXTRACTIVE: Final = "extractive"

class LLMMetrics(PerRegistry):
    """Prometheus collectors of the LLM client; one set per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "mtdesk_llm_calls_total", "LLM calls by provider and outcome",
            ["provider", "outcome"], registry=registry)
        self.latency = Histogram(
            "mtdesk_llm_seconds", "LLM call latency (one provider attempt)", ["provider"],
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0))
        self.fallbacks = Counter(
            "mtdesk_llm_fallbacks_total", "Answers that came from a fallback, not the first choice",
            ["provider"], registry=registry)


def parse_fallback(item: str) -> tuple[str, str]:
    """``"provider:model"`` → (provider, model); the model may itself contain colons."""
    provider, sep, model = item.partition(":")
    provider = provider.strip().lower()
    if not sep or not provider:
        raise ValidationError("fallback", f"items look like 'provider:model', got {item!r}")
    return provider, model.strip()


def chain_of(bot: BotConfig) -> list[tuple[str, str]]:
    """The (provider, model) pairs to try, in order."""
    chain = [(bot.provider.strip().lower(), bot.model)]
    chain.extend(parse_fallback(item) for item in bot.fallback)
    return chain


def passages_block(passages: list[Passage]) -> str:
    """Numbered passages, one per line: ``[n] (source: NAME) text``."""
    return "\n".join(render_passage(n, p) for n, p in enumerate(passages, start=1))


def build_messages(
    bot: BotConfig, messages: list[ChatMessage], passages: list[Passage], *,
    model: str | None = None, language: str | None = None,
) -> list[dict[str, Any]]:
    """The prompt sent to the provider for ``model`` (default ``bot.model``): one system
    message, then ``messages`` (oldest turns dropped first when they do not fit).

    The system message is the bot's prompt, then its grounding rule, then the passages
    scoring at least ``bot.min_score`` (weaker ones are never shown). With no such
    passage a ``general`` bot keeps its rule (and is told nothing relevant was found); a
    ``knowledge_only`` bot gets the no-knowledge rule instead: no business facts, the
    fallback message for questions about the business. (The conversation answers
    ``fallback_message`` itself, without a model, when the tenant has knowledge and none
    of it scores; so this prompt is for a tenant without a knowledge base yet, or one
    that could not be read.) With ``language`` (the customer's, ISO 639-1) the system
    message ends with the instruction to answer in it. Everything fits the model's
    context window (:func:`mtdesk.retrieval.prompt.fit_prompt`).

    A message with ``images`` (a vision bot's picture) is sent as OpenAI content parts:
    one ``text`` part, then one ``image_url`` part per picture (a ``data:`` URL)."""
    fitted = fit_prompt(bot, messages, shown_passages(bot, passages), model=model,
                        language=language)
    return [_wire_message(m) for m in fitted]


def _wire_message(m: ChatMessage) -> dict[str, Any]:
    if not m.images:
        return {"role": m.role, "content": m.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in m.images)
    return {"role": m.role, "content": parts}


def _fallback_worthy(exc: Exception) -> bool:
    """Timeouts, connection failures, 429, 5xx and unreadable answers move to the next."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIResponseValidationError | ValueError)


class ProviderChatModel:
    """The tenant's OpenAI-compatible providers, with fallback. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float | None = None,
        aiohttp_transport: bool = True,
        metrics: LLMMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._timeout = timeout_s if timeout_s is not None else settings.llm_timeout_s
        self._aiohttp = aiohttp_transport
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        self._metrics = metrics or LLMMetrics.for_registry()

    def _client(self, provider: str) -> openai.AsyncOpenAI:
        client = self._clients.get(provider)
        if client is not None:
            return client
        try:
            config = self._settings.provider(provider)
        except ConfigError as exc:
            raise ProviderError(provider, "is not a configured provider") from exc
        kwargs: dict[str, Any] = dict(
            base_url=config.base_url,
            # Local OpenAI-compatible servers take no key; the SDK insists on one.
            api_key=config.api_key.reveal() if config.api_key else "unset",
            timeout=self._timeout,
            max_retries=0,
        )
        if self._aiohttp:
            try:
                kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=self._timeout)
            except RuntimeError:  # the aiohttp extra is missing: the default transport works
                pass
        client = self._clients[provider] = openai.AsyncOpenAI(**kwargs)
        return client

    def warm(self) -> None:
        """Make the client of every provider with an API key now (in the running loop),
        so a shard's first answer does not pay for it."""
        for name, config in self._settings.providers.items():
            if config.api_key is not None:
                with contextlib.suppress(ProviderError):
                    self._client(name)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def complete(
        self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage], *,
        language: str | None = None,
    ) -> Completion:
        chain = [(p, m) for p, m in chain_of(bot) if p != EXTRACTIVE]
        if not chain:
            raise ProviderError(bot.provider, "no LLM provider in the bot's chain")
        failures: list[str] = []
        last: ProviderError | None = None
        for position, (provider, model) in enumerate(chain):
            try:
                client = self._client(provider)
            except ProviderError as exc:  # a misconfigured item must not sink the others
                failures.append(f"{provider}:{model}: {exc}")
                last = exc
                continue
            # Each model gets the prompt that fits its own context window.
            prompt = build_messages(bot, messages, passages, model=model, language=language)
            try:
                completion = await self._call(client, provider, model, bot, prompt)
            except ProviderError as exc:
                failures.append(f"{provider}:{model}: {exc}")
                last = exc
                if not exc.retriable:
                    break
                continue
            if position > 0:
                self._metrics.fallbacks.labels(provider).inc()
            return completion
        first = chain[0][0]
        error = ProviderError(first, "no provider answered (" + "; ".join(failures) + ")",
                              retriable=bool(last and last.retriable))
        raise error from last

    async def _call(
        self,
        client: openai.AsyncOpenAI,
        provider: str,
        model: str,
        bot: BotConfig,
        prompt: list[dict[str, Any]],
    ) -> Completion:
        started = time.perf_counter()
        try:
            # The SDK's own request path (auth, timeout, retries, error types), but not
            # ``chat.completions.create``: its parameter transform walks every prompt
            # message through typing introspection, ~1.7 ms of CPU per call with ten turns
            # (measured by `mtdesk bench e2e`: the largest cost of a shard). The body here
            # is already in the wire shape. The answer is read with msgspec rather than
            # into the SDK's pydantic models (~0.15-0.25 ms of CPU less per call here).
            raw = await client.post(
                "/chat/completions",
                cast_to=bytes,
                body={"model": model, "messages": prompt, "temperature": bot.temperature,
                      "max_tokens": bot.max_tokens},
            )
            response = _chat_response.decode(raw)  # DecodeError is a ValueError
        except (openai.OpenAIError, ValueError) as exc:
            retriable = _fallback_worthy(exc)
            outcome = "timeout" if isinstance(exc, openai.APITimeoutError) else (
                str(exc.status_code) if isinstance(exc, openai.APIStatusError) else "error")
            self._metrics.calls.labels(provider, outcome).inc()
            log.warning("llm call failed provider=%s model=%s outcome=%s", provider, model, outcome)
            raise ProviderError(provider, f"{type(exc).__name__} ({outcome})",
                                retriable=retriable) from exc
        finally:
            self._metrics.latency.labels(provider).observe(time.perf_counter() - started)
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "").strip() if choice is not None else ""
        if not text:
            self._metrics.calls.labels(provider, "empty").inc()
            raise ProviderError(provider, "answered with no text", retriable=True)
        self._metrics.calls.labels(provider, "ok").inc()
        usage = response.usage
        return Completion(
            text=text,
            provider=provider,
            model=response.model or model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )


class ModelRouter:
    """A ChatModel choosing between the LLM providers and the offline (extractive) model."""

    def __init__(self, providers: ProviderChatModel, offline: ChatModel) -> None:
        self._providers = providers
        self._offline = offline

    async def complete(
        self, bot: BotConfig, messages: list[ChatMessage], passages: list[Passage], *,
        language: str | None = None,
    ) -> Completion:
        # The offline model quotes the knowledge as written: it is told no language.
        if is_extractive(bot):
            return await self._offline.complete(bot, messages, passages)
        try:
            return await self._providers.complete(bot, messages, passages, language=language)
        except ProviderError:
            if any(p == EXTRACTIVE for p, _ in chain_of(bot)[1:]):
                return await self._offline.complete(bot, messages, passages)
            raise

    def warm(self) -> None:
        self._providers.warm()

    async def aclose(self) -> None:
        await self._providers.aclose()


# The file name tells an OpenAI-compatible server the audio's format.
_AUDIO_EXTENSIONS = {
    "audio/ogg": "ogg", "audio/opus": "ogg", "audio/mpeg": "mp3", "audio/mp3": "mp3",
    "audio/mp4": "m4a", "audio/m4a": "m4a", "audio/x-m4a": "m4a", "audio/aac": "aac",
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/webm": "webm", "audio/amr": "amr",
    "audio/flac": "flac", "video/mp4": "mp4",
}


def audio_filename(mime_type: str | None) -> str:
    base = (mime_type or "").split(";")[0].strip().lower()
    return f"voice.{_AUDIO_EXTENSIONS.get(base, 'ogg')}"


class Transcriber:
    """Voice notes to text: ``POST {provider}/audio/transcriptions`` (multipart ``file``
    and ``model``) through the openai SDK, for ``MTDESK_TRANSCRIBER=<provider>:<model>``
    (the provider resolved like the chat providers: ``MTDESK_<PROVIDER>_BASE_URL`` and
    ``_API_KEY``). :meth:`transcribe` raises :class:`ProviderError` (retriable for
    timeouts, connection errors, 429 and 5xx) and never returns an empty text."""

    def __init__(self, settings: Settings, spec: str, *, timeout_s: float | None = None) -> None:
        provider, _, model = spec.partition(":")
        self.provider = provider
        self.model = model
        self._config = settings.provider(provider)
        self._timeout = timeout_s if timeout_s is not None else settings.llm_timeout_s
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Transcriber | None:
        return cls(settings, settings.transcriber) if settings.transcriber else None

    def __repr__(self) -> str:
        return f"Transcriber({self.provider}:{self.model})"

    async def transcribe(self, content: bytes, mime_type: str | None) -> str:
        if self._client is None:
            key = self._config.api_key
            kwargs: dict[str, Any] = {}
            try:  # the aiohttp transport, as for chat: far less CPU per call than httpx
                kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=self._timeout)
            except RuntimeError:
                pass
            self._client = openai.AsyncOpenAI(
                base_url=self._config.base_url, api_key=key.reveal() if key else "unset",
                timeout=self._timeout, max_retries=0, **kwargs)
        name = audio_filename(mime_type)
        try:
            answer = await self._client.audio.transcriptions.create(
                model=self.model, file=(name, content, mime_type or "audio/ogg"))
        except openai.OpenAIError as exc:
            status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
            log.warning("transcription failed provider=%s status=%s", self.provider, status)
            raise ProviderError(self.provider, f"transcription failed: {type(exc).__name__}",
                                retriable=_fallback_worthy(exc)) from exc
        text = (getattr(answer, "text", "") or "").strip()
        if not text:
            raise ProviderError(self.provider, "transcription has no text", retriable=False)
        return text

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
