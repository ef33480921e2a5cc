"""Settings: read from the environment (and an optional ``.env`` file) once, validated at start.

This is the only module that reads environment variables. A missing or malformed
variable raises :class:`ConfigError` naming it.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.parse
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


ACK_DURABILITIES = ("memory", "fsync", "replica")
"""What a webhook's 200 may wait for: Redis' memory (as fast as it gets), the append-only
file on disk, or one replica holding the batch."""

MIN_ADMIN_TOKEN_CHARS = 32
"""The operator token opens every tenant: shorter ones are refused at start."""


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    base_url: str
    api_key: Secret | None = None


class SmtpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where password-reset and invitation mail goes out (``MTDESK_SMTP_*``)."""

    host: str
    port: int = 587
    username: str | None = None
    password: Secret | None = None
    sender: str = "MT Desk <no-reply@localhost>"
    starttls: bool = True


class AccountsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sign-in sessions, mail, Meta's login flows and the connection watchdog
    (each field's variable is named in :func:`_accounts`)."""

    session_ttl_s: int = 14 * 24 * 3600
    # Believe X-Forwarded-Proto (a TLS-terminating proxy in front): cookies get Secure.
    trust_forwarded_proto: bool = False
    login_attempts: int = 5  # failed sign-ins per e-mail (x10 per client address) ...
    login_window_s: int = 900  # ... within this window before 429
    smtp: SmtpConfig | None = None
    meta_login_config_id: str | None = None
    meta_dialog_base: str = "https://www.facebook.com"
    instagram_dialog_base: str = "https://www.instagram.com"
    instagram_api_base: str = "https://api.instagram.com"
    instagram_graph_base: str = "https://graph.instagram.com/v25.0"
    watchdog_interval_s: float = 6 * 3600.0


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything configurable. Build with :meth:`from_env`, or directly in tests."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # MTDESK_REDIS_CLUSTER: the URL names one node of a Redis Cluster (the rest discovered).
    redis_cluster: bool = False
    # MTDESK_ACK_DURABILITY: what the webhook's 200 waits for (docs/redis.md).
    ack_durability: str = "memory"
    ack_timeout_ms: int = 1000  # replica: how long one batch waits for a replica (then 503)
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
    # MTDESK_KEYSTORE_URL: a redis-server of its own holding only the wrapped data keys
    # (docs/privacy.md, "The key store"); "" = kept in the main Redis.
    keystore_url: str = ""
    admin_token: Secret | None = None
    # Failed bearer tokens per key prefix (x10 per client address) within the window → 429.
    auth_failures: int = 20
    auth_failure_window_s: int = 300
    ray_address: str | None = None
    # Where the actors go on a Ray cluster: "spread" over the nodes or "pack" them.
    ray_placement: str = "spread"
    data_dir: str = "./.mtdesk"
    log_level: str = "INFO"
    # The message path.
    partitions: int = 64
    shards: int = 2
    retrieval_shards: int = 1
    # The autoscaling rule (mtdesk/actors/autoscale.py): on when shards_max > 0.
    shards_min: int = 1
    shards_max: int = 0
    # Conversation shards kept started without a partition, so a re-sharding that adds
    # shards starts no process (mtdesk/actors/deploy.py, docs/shards.md).
    shard_spares: int = 0
    shards_lag_ms: int = 5000
    shards_scale_after_s: float = 30.0
    max_body_bytes: int = 10 * 1024 * 1024
    dedup_ttl_s: int = 8 * 24 * 3600
    max_event_age_s: int = 6 * 3600
    max_active_conversations: int = 10_000
    max_concurrent_conversations: int = 256  # working at once, per shard
    conversation_idle_s: float = 300.0
    burst_window_ms: int = 0
    handoff_pause_s: int = 30 * 60
    # Typing is shown again this often while the model works (WhatsApp drops it after 25 s).
    typing_interval_s: float = 20.0
    history_turns: int = 12
    llm_timeout_s: float = 30.0
    # A reply the Graph API keeps refusing with retriable errors is tried this long.
    send_retry_for_s: float = 120.0
    # A reply resumed after a crash waits this long for Meta's confirmation (echo or
    # status) of the part that may have gone out just before it, before sending it.
    send_confirm_wait_s: float = 3.0
    page_sends_per_s: int = 300
    whatsapp_mps: int = 80
    # Privacy.
    retention_days: int = 365
    # A deletion job waits at most this long for replies of the erased scope still being
    # generated or sent (LLM timeout + the sender's retries bound one), then sweeps again.
    deletion_settle_s: float = 300.0
    stop_words: tuple[str, ...] = ("STOP", "UNSUBSCRIBE")
    # Media customers send (docs/channels.md, "Media").
    transcriber: str = ""  # "<provider>:<model>" for voice notes; "" = none
    media_max_bytes: int = 25 * 1024 * 1024  # larger attachments are described, not kept
    media_fetch_timeout_s: float = 15.0  # the answer waits this long for a download
    media_retries: int = 5  # background download attempts after a failed one
    # Knowledge base.
    kb_embedder: str = ""  # "" = default (openrouter when keyed, else local, else lexical)
    kb_allow_private_urls: bool = False  # tests and closed networks only: turns off SSRF checks
    kb_max_file_bytes: int = 20 * 1024 * 1024
    kb_shard_chunks: int = 50_000  # a tenant's knowledge spreads to a next shard past this
    # Hardening (docs/security.md).
    meta_signed_request_max_age_s: int = 24 * 3600  # older signed_requests are refused
    http_idle_timeout_s: float = 15.0  # no complete request headers within this: closed
    http_body_timeout_s: float = 60.0  # a request body not fully received within this: closed
    kb_extract_memory_mb: int = 768  # address space of the process that reads one upload
    kb_extract_timeout_s: float = 60.0  # reading one upload takes at most this
    accounts: AccountsConfig = msgspec.field(default_factory=AccountsConfig)

    def __repr__(self) -> str:
        """Every field, with a password or token inside a Redis or key store URL masked (the
        other secrets are :class:`Secret` and mask themselves)."""
        fields = ", ".join(
            f"{name}={mask_url(v) if name in _URL_FIELDS else v!r}"
            for name in self.__struct_fields__ for v in (getattr(self, name),)
        )
        return f"Settings({fields})"

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
        """What ``mtdesk serve`` refuses to start without (or with): webhook secrets,
        encryption keys, and no guessable operator token."""
        self.require_webhooks()
        if self.admin_token is not None and len(self.admin_token.reveal()) < MIN_ADMIN_TOKEN_CHARS:
            raise ConfigError(
                "MTDESK_ADMIN_TOKEN",
                f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters (generate one: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            )
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


_URL_FIELDS = frozenset({"redis_url", "keystore_url"})


def mask_url(url: str) -> str:
    """``url`` as a repr with the password of its user info (``redis://:pw@host``) replaced
    by ``***``; a URL without one is shown as it is."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return repr(url)
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return repr(urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}")))



def _read_dotenv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


_DEFAULTS: dict[str, Any] = {}  # filled below from Settings' own field defaults


def _variable(field: str) -> str:
    return f"MTDESK_{field.upper()}"


class _Env:
    """Reads one field's variable (``MTDESK_<FIELD>`` unless named), falling back to the
    field's default in :class:`Settings`: each default is written once, in the class."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, field: str, variable: str | None = None) -> str:
        return self.env.get(variable or _variable(field), "").strip()

    def text(self, field: str, variable: str | None = None) -> Any:
        return self.raw(field, variable) or _DEFAULTS[field]

    def whole(self, field: str, *, low: int, high: int, variable: str | None = None) -> int:
        name = variable or _variable(field)
        raw = self.raw(field, name)
        if not raw:
            return int(_DEFAULTS[field])
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {value}")
        return value

    def number(self, field: str, *, low: float, variable: str | None = None) -> float:
        name = variable or _variable(field)
        raw = self.raw(field, name)
        if not raw:
            return float(_DEFAULTS[field])
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {raw!r}") from None
        if value < low:
            raise ConfigError(name, f"must be at least {low}, got {value}")
        return value

    def choice(self, field: str, choices: tuple[str, ...], variable: str | None = None) -> str:
        """One of ``choices``, case-insensitive."""
        name = variable or _variable(field)
        raw = self.raw(field, name).lower()
        if not raw:
            return str(_DEFAULTS[field])
        if raw not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, not {raw!r}")
        return raw

    def flag(self, field: str, variable: str | None = None) -> bool:
        raw = self.raw(field, variable).lower()
        if not raw:
            return bool(_DEFAULTS[field])
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(variable or _variable(field), f"must be true or false, got {raw!r}")

    def url(self, field: str, schemes: tuple[str, ...], variable: str | None = None) -> str:
        return _url(self.env, variable or _variable(field), _DEFAULTS[field], schemes)

    def secret(self, field: str, variable: str | None = None) -> Secret | None:
        return _secret(self.env, variable or _variable(field))


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or default
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(name, f"must be a URL starting with {' or '.join(schemes)}://")
    return raw.rstrip("/")


TLS_PARAMS = {"MTDESK_REDIS_TLS_CA": "ssl_ca_certs", "MTDESK_REDIS_TLS_CERT": "ssl_certfile",
              "MTDESK_REDIS_TLS_KEY": "ssl_keyfile"}
"""The TLS settings of a ``rediss://`` URL as variables, and the URL query parameter
(redis-py's own) each becomes: the URL carries them to every client and lean link."""

KEYSTORE_TLS_PARAMS = {"MTDESK_KEYSTORE_TLS_CA": "ssl_ca_certs",
                       "MTDESK_KEYSTORE_TLS_CERT": "ssl_certfile",
                       "MTDESK_KEYSTORE_TLS_KEY": "ssl_keyfile"}
"""The same for ``MTDESK_KEYSTORE_URL`` (its own CA and client certificate)."""


def with_tls(url: str, env: Mapping[str, str], params: Mapping[str, str] = TLS_PARAMS,
             url_variable: str = "MTDESK_REDIS_URL") -> str:
    """``url`` with the ``MTDESK_REDIS_TLS_*`` files of ``env`` (or those of ``params``)
    as its query parameters (one already in the URL wins). Raises ValueError naming the
    variable when one is set for a URL that is not ``rediss://`` or names no readable
    file."""
    extra: list[str] = []
    for variable, param in params.items():
        path = env.get(variable, "").strip()
        if not path:
            continue
        if not url.startswith("rediss://"):
            raise ValueError(f"{variable}: needs a rediss:// {url_variable} (TLS), got {url.split(':', 1)[0]}://")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{variable}: {path!r} is not a readable file")
        if f"{param}=" not in url:
            extra.append(f"{param}={urllib.parse.quote(path, safe='/')}")
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


def _redis_url(env: Mapping[str, str], url: str) -> str:
    """The URL with MTDESK_REDIS_TLS_CA / _CERT / _KEY as its TLS query parameters."""
    try:
        return with_tls(url, env)
    except ValueError as exc:
        variable, _, problem = str(exc).partition(": ")
        raise ConfigError(variable, problem) from None


def _server_of(url: str) -> tuple[str, str]:
    """Which redis-server a URL names (host and port, or the socket path), whatever its DB."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return ("unix", parts.path)
    host = (parts.hostname or "127.0.0.1").lower()
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    return (host, str(parts.port or 6379))


def names_server(text: str, url: str) -> bool:
    """Whether ``text`` (an error message) names the redis-server of ``url``."""
    host, port = _server_of(url)
    return (port in text) if host == "unix" else (f"{host}:{port}" in text
                                                  or f"localhost:{port}" in text)


def _keystore_url(env: Mapping[str, str], redis_url: str) -> str:
    """``MTDESK_KEYSTORE_URL`` with its TLS files, refused when it names the main Redis'
    server: another DB of the same server is in the same AOF, snapshots and backups."""
    variable = "MTDESK_KEYSTORE_URL"
    raw = env.get(variable, "").strip()
    if not raw:
        for tls_variable in KEYSTORE_TLS_PARAMS:
            if env.get(tls_variable, "").strip():
                raise ConfigError(tls_variable, f"is set, but {variable} is not")
        return ""
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(variable, "must be a URL starting with redis://, rediss:// or unix://")
    try:
        url = with_tls(raw.rstrip("/"), env, KEYSTORE_TLS_PARAMS, variable)
    except ValueError as exc:
        tls_variable, _, problem = str(exc).partition(": ")
        raise ConfigError(tls_variable, problem) from None
    if _server_of(url) == _server_of(redis_url):
        raise ConfigError(variable, "names the same redis-server as MTDESK_REDIS_URL (another "
                                    "DB is not enough: one AOF and one backup hold every DB); "
                                    "give the key store a redis-server of its own")
    return url


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

    e = _Env(env)
    stop_words = tuple(w.upper() for w in _csv(env, "MTDESK_STOP_WORDS")) or _DEFAULTS["stop_words"]
    fields: dict[str, Any] = dict(
        redis_url=(redis_url := _redis_url(env, e.url("redis_url", ("redis", "rediss", "unix")))),
        keystore_url=_keystore_url(env, redis_url),
        redis_cluster=e.flag("redis_cluster"),
        ack_durability=e.choice("ack_durability", ACK_DURABILITIES),
        ack_timeout_ms=e.whole("ack_timeout_ms", low=10, high=60_000),
        host=e.text("host"),
        port=e.whole("port", low=0, high=65535),
        public_url=e.raw("public_url").rstrip("/"),
        meta_app_secrets=tuple(Secret(s) for s in _csv(env, "MTDESK_META_APP_SECRET")),
        meta_verify_token=e.secret("meta_verify_token"),
        meta_app_id=e.raw("meta_app_id") or None,
        graph_api_base=e.url("graph_api_base", ("http", "https")),
        providers=providers,
        stripe_api_key=e.secret("stripe_api_key"),
        stripe_webhook_secret=e.secret("stripe_webhook_secret"),
        stripe_api_base=e.url("stripe_api_base", ("http", "https")),
        encryption_keys=tuple(Secret(k) for k in keys),
        admin_token=e.secret("admin_token"),
        auth_failures=e.whole("auth_failures", low=1, high=1_000_000),
        auth_failure_window_s=e.whole("auth_failure_window_s", low=1, high=86_400),
        ray_address=e.raw("ray_address") or None,
        ray_placement=e.choice("ray_placement", ("spread", "pack")),
        data_dir=e.text("data_dir"),
        log_level=e.text("log_level").upper(),
        partitions=e.whole("partitions", low=1, high=4096),
        shards=e.whole("shards", low=1, high=1024),
        retrieval_shards=e.whole("retrieval_shards", low=1, high=1024),
        shards_min=e.whole("shards_min", low=1, high=1024),
        shards_max=e.whole("shards_max", low=0, high=1024),
        shard_spares=e.whole("shard_spares", low=0, high=8),
        shards_lag_ms=e.whole("shards_lag_ms", low=1, high=86_400_000),
        shards_scale_after_s=e.number("shards_scale_after_s", low=1.0),
        max_body_bytes=e.whole("max_body_bytes", low=1024, high=1 << 30),
        dedup_ttl_s=e.whole("dedup_ttl_s", low=7 * 24 * 3600, high=1 << 31),
        max_event_age_s=e.whole("max_event_age_s", low=1, high=1 << 31),
        max_active_conversations=e.whole("max_active_conversations", low=1, high=10_000_000),
        max_concurrent_conversations=e.whole("max_concurrent_conversations", low=1, high=1_000_000),
        conversation_idle_s=e.number("conversation_idle_s", low=0.01),
        burst_window_ms=e.whole("burst_window_ms", low=0, high=60_000),
        handoff_pause_s=e.whole("handoff_pause_s", low=0, high=1 << 31),
        typing_interval_s=e.number("typing_interval_s", low=0.01),
        history_turns=e.whole("history_turns", low=0, high=1000),
        llm_timeout_s=e.number("llm_timeout_s", low=0.1),
        send_retry_for_s=e.number("send_retry_for_s", low=0.0),
        send_confirm_wait_s=e.number("send_confirm_wait_s", low=0.0),
        page_sends_per_s=e.whole("page_sends_per_s", low=1, high=100_000),
        whatsapp_mps=e.whole("whatsapp_mps", low=1, high=1000),
        retention_days=e.whole("retention_days", low=1, high=365),
        deletion_settle_s=e.number("deletion_settle_s", low=0.0),
        stop_words=stop_words,
        transcriber=_transcriber(e.raw("transcriber"), providers),
        media_max_bytes=e.whole("media_max_bytes", low=1024, high=1 << 31),
        media_fetch_timeout_s=e.number("media_fetch_timeout_s", low=0.1),
        media_retries=e.whole("media_retries", low=0, high=100),
        kb_embedder=e.raw("kb_embedder"),
        kb_allow_private_urls=e.flag("kb_allow_private_urls"),
        kb_max_file_bytes=e.whole("kb_max_file_bytes", low=1024, high=1 << 31),
        kb_shard_chunks=e.whole("kb_shard_chunks", low=100, high=100_000_000),
        meta_signed_request_max_age_s=e.whole(
            "meta_signed_request_max_age_s", low=60, high=30 * 24 * 3600),
        http_idle_timeout_s=e.number("http_idle_timeout_s", low=0.1),
        http_body_timeout_s=e.number("http_body_timeout_s", low=0.1),
        kb_extract_memory_mb=e.whole("kb_extract_memory_mb", low=64, high=1 << 20),
        kb_extract_timeout_s=e.number("kb_extract_timeout_s", low=0.1),
        accounts=_accounts(e),
    )
    return Settings(**fields)


def _transcriber(raw: str, providers: Mapping[str, ProviderConfig]) -> str:
    """``MTDESK_TRANSCRIBER``: ``<provider>:<model>`` of a configured provider, or empty."""
    spec = raw.strip()
    if not spec:
        return ""
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    if not sep or not model.strip():
        raise ConfigError("MTDESK_TRANSCRIBER", f"must be '<provider>:<model>', e.g. "
                                                f"'openai:whisper-1', got {spec!r}")
    if provider not in providers:
        raise ConfigError("MTDESK_TRANSCRIBER", f"unknown provider {provider!r}; one of: "
                                                f"{', '.join(sorted(providers))}")
    return f"{provider}:{model.strip()}"


def _accounts(e: _Env) -> AccountsConfig:
    d = AccountsConfig()

    def whole(name: str, default: int, low: int, high: int) -> int:
        raw = e.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {value}")
        return value

    def flag(name: str, default: bool) -> bool:
        raw = e.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw in ("1", "true", "yes", "on")
        raise ConfigError(name, f"must be true or false, got {raw!r}")

    def url(name: str, default: str) -> str:
        return _url(e.env, name, default, ("http", "https"))

    smtp: SmtpConfig | None = None
    host = e.env.get("MTDESK_SMTP_HOST", "").strip()
    mail = SmtpConfig(host="-")  # its defaults, written once in the class
    if host:
        smtp = SmtpConfig(
            host=host,
            port=whole("MTDESK_SMTP_PORT", mail.port, 1, 65535),
            username=e.env.get("MTDESK_SMTP_USERNAME", "").strip() or None,
            password=_secret(e.env, "MTDESK_SMTP_PASSWORD"),
            sender=e.env.get("MTDESK_SMTP_FROM", "").strip() or mail.sender,
            starttls=flag("MTDESK_SMTP_STARTTLS", mail.starttls),
        )
    interval = whole("MTDESK_WATCHDOG_INTERVAL_S", int(d.watchdog_interval_s), 1, 1 << 31)
    return AccountsConfig(
        session_ttl_s=whole("MTDESK_SESSION_TTL_S", d.session_ttl_s, 60, 1 << 31),
        trust_forwarded_proto=flag("MTDESK_TRUST_FORWARDED_PROTO", d.trust_forwarded_proto),
        login_attempts=whole("MTDESK_LOGIN_ATTEMPTS", d.login_attempts, 1, 1000),
        login_window_s=whole("MTDESK_LOGIN_WINDOW_S", d.login_window_s, 1, 86_400),
        smtp=smtp,
        meta_login_config_id=e.env.get("MTDESK_META_LOGIN_CONFIG_ID", "").strip() or None,
        meta_dialog_base=url("MTDESK_META_DIALOG_BASE", d.meta_dialog_base),
        instagram_dialog_base=url("MTDESK_INSTAGRAM_DIALOG_BASE", d.instagram_dialog_base),
        instagram_api_base=url("MTDESK_INSTAGRAM_API_BASE", d.instagram_api_base),
        instagram_graph_base=url("MTDESK_INSTAGRAM_GRAPH_BASE", d.instagram_graph_base),
        watchdog_interval_s=float(interval),
    )


_DEFAULTS.update(
    (f.name, f.default) for f in msgspec.structs.fields(Settings)
    if f.default is not msgspec.NODEFAULT
)
