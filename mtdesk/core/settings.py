"""Settings: read from the environment (and an optional ``.env`` file) once, validated at start.

This is the only module that reads environment variables. A missing or malformed
variable raises :class:`ConfigError` naming it.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from mtdesk.core.errors import ConfigError
from mtdesk.core.secret import Secret

PROVIDERS: dict[str, str] = {
    "openrouter": "https://openrouter.ai/api/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "minimax": "https://api.minimax.io/v1",
    "moonshot": "https://api.moonshot.ai/v1",
    "openai": "https://api.openai.com/v1",
}


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    base_url: str
    api_key: Secret | None = None


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything configurable. Build with :meth:`from_env`, or directly in tests."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    meta_app_secrets: tuple[Secret, ...] = ()
    meta_verify_token: Secret | None = None
    meta_app_id: str | None = None
    graph_api_base: str = "https://graph.facebook.com/v25.0"
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    stripe_api_key: Secret | None = None
    stripe_webhook_secret: Secret | None = None
    stripe_api_base: str = "https://api.stripe.com"
    encryption_keys: tuple[Secret, ...] = ()
    admin_token: Secret | None = None
    ray_address: str | None = None
    # Where the actors go on a Ray cluster: "spread" over the nodes or "pack" them.
    ray_placement: str = "spread"
    data_dir: str = "./.mtdesk"
    log_level: str = "INFO"
    # The message path.
    partitions: int = 64
    shards: int = 2
    retrieval_shards: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    dedup_ttl_s: int = 8 * 24 * 3600
    max_event_age_s: int = 6 * 3600
    max_active_conversations: int = 10_000
    max_concurrent_conversations: int = 256  # working at once, per shard
    conversation_idle_s: float = 300.0
    burst_window_ms: int = 0
    handoff_pause_s: int = 30 * 60
    history_turns: int = 12
    llm_timeout_s: float = 30.0
    page_sends_per_s: int = 300
    whatsapp_mps: int = 80
    # Privacy.
    retention_days: int = 365
    # A deletion job waits at most this long for replies of the erased scope still being
    # generated or sent (LLM timeout + the sender's retries bound one), then sweeps again.
    deletion_settle_s: float = 300.0
    stop_words: tuple[str, ...] = ("STOP", "UNSUBSCRIBE")
    # Knowledge base.
    kb_embedder: str = ""  # "" = default (openrouter when keyed, else local, else lexical)
    kb_allow_private_urls: bool = False  # tests and closed networks only: turns off SSRF checks
    kb_max_file_bytes: int = 20 * 1024 * 1024
    kb_shard_chunks: int = 50_000  # a tenant's knowledge spreads to a next shard past this

    @property
    def billing_enabled(self) -> bool:
        return self.stripe_api_key is not None

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def provider(self, name: str) -> ProviderConfig:
        try:
            return self.providers[name]
        except KeyError:
            raise ConfigError(f"MTDESK_{name.upper()}_BASE_URL", "unknown provider") from None

    def require_webhooks(self) -> None:
        if not self.meta_app_secrets:
            raise ConfigError("MTDESK_META_APP_SECRET", "is required to receive webhooks")
        if self.meta_verify_token is None:
            raise ConfigError("MTDESK_META_VERIFY_TOKEN", "is required to receive webhooks")

    def require_serve(self) -> None:
        """What ``mtdesk serve`` refuses to start without."""
        self.require_webhooks()
        if not self.encryption_keys:
            raise ConfigError(
                "MTDESK_ENCRYPTION_KEYS",
                "is required (generate one: python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())')",
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, dotenv: str | Path | None = ".env"
    ) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``) over an optional .env file."""
        merged: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            merged.update(_read_dotenv(Path(dotenv)))
        merged.update(os.environ if env is None else env)
        return _build(merged)


def _read_dotenv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, low: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if value < low:
        raise ConfigError(name, f"must be at least {low}, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or default
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(name, f"must be a URL starting with {' or '.join(schemes)}://")
    return raw.rstrip("/")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default), case-insensitive."""
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, not {raw!r}")
    return raw


def _csv(env: Mapping[str, str], name: str) -> list[str]:
    return [part.strip() for part in env.get(name, "").split(",") if part.strip()]


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "").strip()
    return Secret(raw) if raw else None


def parse_encryption_key(raw: str, variable: str = "MTDESK_ENCRYPTION_KEYS") -> bytes:
    """A key is 32 random bytes in urlsafe base64 (what ``Fernet.generate_key()`` prints)."""
    try:
        key = base64.urlsafe_b64decode(raw.encode("ascii") + b"=" * (-len(raw) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigError(variable, "each key must be urlsafe base64") from None
    if len(key) != 32:
        raise ConfigError(variable, f"each key must decode to 32 bytes, one decodes to {len(key)}")
    return key


def _build(env: Mapping[str, str]) -> Settings:
    providers: dict[str, ProviderConfig] = {}
    for name, default_url in PROVIDERS.items():
        prefix = f"MTDESK_{name.upper()}"
        providers[name] = ProviderConfig(
            name=name,
            base_url=_url(env, f"{prefix}_BASE_URL", default_url, ("http", "https")),
            api_key=_secret(env, f"{prefix}_API_KEY"),
        )
    # Operators may add any OpenAI-compatible provider: MTDESK_PROVIDER_<NAME>_BASE_URL.
    for key in env:
        if key.startswith("MTDESK_PROVIDER_") and key.endswith("_BASE_URL"):
            name = key.removeprefix("MTDESK_PROVIDER_").removesuffix("_BASE_URL").lower()
            if name:
                providers[name] = ProviderConfig(
                    name=name,
                    base_url=_url(env, key, "", ("http", "https")),
                    api_key=_secret(env, f"MTDESK_PROVIDER_{name.upper()}_API_KEY"),
                )

    keys = _csv(env, "MTDESK_ENCRYPTION_KEYS")
    for k in keys:
        parse_encryption_key(k)

    stop_words = tuple(w.upper() for w in _csv(env, "MTDESK_STOP_WORDS")) or ("STOP", "UNSUBSCRIBE")
    fields: dict[str, Any] = dict(
        redis_url=_url(env, "MTDESK_REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix")),
        host=env.get("MTDESK_HOST", "").strip() or "127.0.0.1",
        port=_int(env, "MTDESK_PORT", 8080, low=0, high=65535),
        public_url=env.get("MTDESK_PUBLIC_URL", "").strip().rstrip("/"),
        meta_app_secrets=tuple(Secret(s) for s in _csv(env, "MTDESK_META_APP_SECRET")),
        meta_verify_token=_secret(env, "MTDESK_META_VERIFY_TOKEN"),
        meta_app_id=env.get("MTDESK_META_APP_ID", "").strip() or None,
        graph_api_base=_url(
            env, "MTDESK_GRAPH_API_BASE", "https://graph.facebook.com/v25.0", ("http", "https")
        ),
        providers=providers,
        stripe_api_key=_secret(env, "MTDESK_STRIPE_API_KEY"),
        stripe_webhook_secret=_secret(env, "MTDESK_STRIPE_WEBHOOK_SECRET"),
        stripe_api_base=_url(env, "MTDESK_STRIPE_API_BASE", "https://api.stripe.com", ("http", "https")),
        encryption_keys=tuple(Secret(k) for k in keys),
        admin_token=_secret(env, "MTDESK_ADMIN_TOKEN"),
        ray_address=env.get("MTDESK_RAY_ADDRESS", "").strip() or None,
        ray_placement=_choice(env, "MTDESK_RAY_PLACEMENT", ("spread", "pack")),
        data_dir=env.get("MTDESK_DATA_DIR", "").strip() or "./.mtdesk",
        log_level=(env.get("MTDESK_LOG_LEVEL", "").strip() or "INFO").upper(),
        partitions=_int(env, "MTDESK_PARTITIONS", 64, low=1, high=4096),
        shards=_int(env, "MTDESK_SHARDS", 2, low=1, high=1024),
        retrieval_shards=_int(env, "MTDESK_RETRIEVAL_SHARDS", 1, low=1, high=1024),
        max_body_bytes=_int(env, "MTDESK_MAX_BODY_BYTES", 10 * 1024 * 1024, low=1024, high=1 << 30),
        dedup_ttl_s=_int(env, "MTDESK_DEDUP_TTL_S", 8 * 24 * 3600, low=7 * 24 * 3600, high=1 << 31),
        max_event_age_s=_int(env, "MTDESK_MAX_EVENT_AGE_S", 6 * 3600, low=1, high=1 << 31),
        max_active_conversations=_int(
            env, "MTDESK_MAX_ACTIVE_CONVERSATIONS", 10_000, low=1, high=10_000_000
        ),
        max_concurrent_conversations=_int(
            env, "MTDESK_MAX_CONCURRENT_CONVERSATIONS", 256, low=1, high=1_000_000
        ),
        conversation_idle_s=_float(env, "MTDESK_CONVERSATION_IDLE_S", 300.0, low=0.01),
        burst_window_ms=_int(env, "MTDESK_BURST_WINDOW_MS", 0, low=0, high=60_000),
        handoff_pause_s=_int(env, "MTDESK_HANDOFF_PAUSE_S", 30 * 60, low=0, high=1 << 31),
        history_turns=_int(env, "MTDESK_HISTORY_TURNS", 12, low=0, high=1000),
        llm_timeout_s=_float(env, "MTDESK_LLM_TIMEOUT_S", 30.0, low=0.1),
        page_sends_per_s=_int(env, "MTDESK_PAGE_SENDS_PER_S", 300, low=1, high=100_000),
        whatsapp_mps=_int(env, "MTDESK_WHATSAPP_MPS", 80, low=1, high=1000),
        retention_days=_int(env, "MTDESK_RETENTION_DAYS", 365, low=1, high=365),
        deletion_settle_s=_float(env, "MTDESK_DELETION_SETTLE_S", 300.0, low=0.0),
        stop_words=stop_words,
        kb_embedder=env.get("MTDESK_KB_EMBEDDER", "").strip(),
        kb_allow_private_urls=env.get("MTDESK_KB_ALLOW_PRIVATE_URLS", "").strip().lower()
        in ("1", "true", "yes", "on"),
        kb_max_file_bytes=_int(env, "MTDESK_KB_MAX_FILE_BYTES", 20 * 1024 * 1024, low=1024, high=1 << 31),
        kb_shard_chunks=_int(env, "MTDESK_KB_SHARD_CHUNKS", 50_000, low=100, high=100_000_000),
    )
    return Settings(**fields)
