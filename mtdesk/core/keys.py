"""The Redis layout: every key MT Desk writes is named here, nowhere else.

All of a tenant's data lives under ``mt:t:{tenant}:`` (so account deletion can find it
all with one SCAN); the few global keys hold routing, de-duplication and queues and
carry no message text. Event ids in de-duplication keys are hashed: a WhatsApp
``wamid`` embeds the user's phone number.
"""

from __future__ import annotations

import hashlib

ROOT = "mt"

# --- queues (global) -------------------------------------------------------------------
SHARD_GROUP = "shards"  # consumer group of the conversation shards on every inbound stream


def inbound(partition: int) -> str:
    """Partition stream of inbound events; fields: e (msgpack event), t (tenant), s (stale)."""
    return f"{ROOT}:in:{partition}"


DEAD_LETTERS = f"{ROOT}:dead"  # signed but undecodable bodies, capped


def seen(event_id: str) -> str:
    """De-duplication marker of one inbound event (kept ≥ 7 days)."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=12).hexdigest()
    return f"{ROOT}:seen:{digest}"


# --- routing and auth (global) ----------------------------------------------------------
TENANTS = f"{ROOT}:tenants"  # set of tenant ids


def account(channel: str, account_id: str) -> str:
    """Hash {tenant, channel_id}: which tenant owns this Page / IG account / WA number."""
    return f"{ROOT}:acct:{channel}:{account_id}"


def api_key(key_hash: str) -> str:
    """Tenant id by the SHA-256 of its API key (keys are stored hashed)."""
    return f"{ROOT}:apikey:{key_hash}"


def app_user(app_scoped_user_id: str) -> str:
    """Set of 'tenant:channel_id' a Meta app-scoped user connected (deletion callbacks)."""
    return f"{ROOT}:asu:{app_scoped_user_id}"


def rate(channel: str, account_id: str, second: int) -> str:
    return f"{ROOT}:rl:{channel}:{account_id}:{second}"


def meta_callback(kind: str, digest: str) -> str:
    """Hash {job, disconnected} of one Meta callback, keyed by a digest of its
    signed_request (the same request answers with the same job)."""
    return f"{ROOT}:metacb:{kind}:{digest}"


def deletion_job(job_id: str) -> str:
    return f"{ROOT}:job:{job_id}"


DELETION_JOBS = f"{ROOT}:jobs"  # stream of job ids for the deletion worker


# --- a tenant's own data ----------------------------------------------------------------
def tenant_prefix(tenant: str) -> str:
    return f"{ROOT}:t:{tenant}:"


def tenant(tenant_id: str) -> str:
    """Hash: name, email, created_ms, status, retention_days, api_key_hash."""
    return f"{ROOT}:t:{tenant_id}"


def channels(tenant_id: str) -> str:
    """Set of the tenant's channel ids."""
    return f"{ROOT}:t:{tenant_id}:channels"


def channel(tenant_id: str, channel_id: str) -> str:
    """Hash: channel, account_id, token (ciphertext), status, connected_ms, connected_by."""
    return f"{ROOT}:t:{tenant_id}:ch:{channel_id}"


def bot(tenant_id: str) -> str:
    """JSON of the bot settings."""
    return f"{ROOT}:t:{tenant_id}:bot"


def conversations(tenant_id: str) -> str:
    """Sorted set: conversation key → last activity (ms)."""
    return f"{ROOT}:t:{tenant_id}:convs"


def context(tenant_id: str, conversation: str) -> str:
    """Persisted conversation context (msgpack)."""
    return f"{ROOT}:t:{tenant_id}:ctx:{conversation}"


def history(tenant_id: str, conversation: str) -> str:
    """Stream of stored messages (inbound and outbound); entry ids are message times."""
    return f"{ROOT}:t:{tenant_id}:hist:{conversation}"


def reply(tenant_id: str, event_id: str) -> str:
    """Hash: state (generating|sending|sent|skipped|failed), graph ids, attempts."""
    return f"{ROOT}:t:{tenant_id}:reply:{event_id}"


def outbound(tenant_id: str, graph_message_id: str) -> str:
    """Where a message we sent is stored: {conversation, entry} (for statuses/receipts)."""
    return f"{ROOT}:t:{tenant_id}:out:{graph_message_id}"


def paused(tenant_id: str, conversation: str) -> str:
    """Present (with a TTL) while a human agent has the conversation."""
    return f"{ROOT}:t:{tenant_id}:paused:{conversation}"


def restricted(tenant_id: str) -> str:
    """Set of end-user ids (channel:user) whose processing is restricted."""
    return f"{ROOT}:t:{tenant_id}:restricted"


def knowledge(tenant_id: str, suffix: str) -> str:
    """Knowledge-base keys: sources, chunks, index metadata."""
    return f"{ROOT}:t:{tenant_id}:kb:{suffix}"


# --- knowledge base (all under mt:t:{tenant}:kb:, built on knowledge()) ------------------
def kb_sources(tenant_id: str) -> str:
    """Sorted set: source id → created (ms)."""
    return knowledge(tenant_id, "sources")


def kb_source(tenant_id: str, source_id: str) -> str:
    """Hash: one source's kind, name, status, counts, error, spec and chunk ids."""
    return knowledge(tenant_id, f"src:{source_id}")


def kb_chunks(tenant_id: str) -> str:
    """Hash: chunk id → msgpack chunk record (text, answer, source id and name)."""
    return knowledge(tenant_id, "chunks")


def kb_vectors(tenant_id: str) -> str:
    """Hash: chunk id → float16 vector bytes (rebuilds a lost index snapshot)."""
    return knowledge(tenant_id, "vecs")


def kb_seq(tenant_id: str) -> str:
    """Counter of chunk ids (ids are never reused; their blocks place them on shards)."""
    return knowledge(tenant_id, "seq")


def kb_meta(tenant_id: str) -> str:
    """Hash: embedder (name and spec) and dim of the tenant's vectors."""
    return knowledge(tenant_id, "meta")


def kb_log(tenant_id: str) -> str:
    """Stream of index changes (op add|del|reset, packed ids) the shards catch up from."""
    return knowledge(tenant_id, "log")


# Global: "tenant:source" ids of ingestion jobs not finished (ids only, no content), so a
# restarted worker resumes them.
KB_PENDING = f"{ROOT}:kbpending"


# --- privacy (global; ids, counts and times only, never personal data) -----------------
DELETION_GROUP = "deleters"  # consumer group of the deletion workers on DELETION_JOBS

# Pub/sub channel (nothing is stored): JSON notices {"scope": "tenant"|"channel"|
# "conversations", "tenant", "prefix"?, "conversations"?} telling the conversation shards
# to drop what they hold in memory for deleted data. See docs/privacy.md.
PURGE = f"{ROOT}:purge"

RETENTION_STATUS = f"{ROOT}:retention"  # hash: last run time and deleted counts by type


def erased(tenant_id: str) -> str:
    """String: this tenant's account is being (or was, recently) erased; no knowledge
    write for it goes through while it exists. Named by a digest of the tenant id, so the
    marker itself names no tenant."""
    digest = hashlib.blake2b(tenant_id.encode(), digest_size=12, person=b"mtdesk-erased")
    return f"{ROOT}:erased:{digest.hexdigest()}"


def deletion_lease(job_id: str) -> str:
    """Which deletion worker runs a job right now (a short, renewed TTL)."""
    return f"{ROOT}:job:{job_id}:lease"


# --- conversation shards (global; counts and times only) ---------------------------------
def shard_stats(shard: int) -> str:
    """Last metrics snapshot of one conversation shard (msgpack, short TTL)."""
    return f"{ROOT}:stats:shard:{shard}"


def shard_stats_pattern() -> str:
    """SCAN pattern matching every :func:`shard_stats` key."""
    return f"{ROOT}:stats:shard:*"


# --- the Ray cluster (global; placement and counts only) ---------------------------------
def cluster_report() -> str:
    """Where every actor runs and its queue figures (JSON, short TTL; see core/cluster.py)."""
    return f"{ROOT}:cluster"


# --- billing (Stripe) ---------------------------------------------------------------------
def billing(tenant_id: str) -> str:
    """Hash: Stripe customer and subscription ids, plan, status, allowance (-1 = unlimited),
    price, period end, last applied subscription event time."""
    return f"{ROOT}:t:{tenant_id}:billing"


def usage(tenant_id: str, month: str) -> str:
    """Counter of the messages answered in ``month`` (``YYYYMM``, UTC), with a TTL."""
    return f"{ROOT}:t:{tenant_id}:usage:{month}"


def stripe_customer(customer_id: str) -> str:
    """Global index: the tenant id a Stripe customer belongs to (deleted with the tenant)."""
    return f"{ROOT}:stripe:cust:{customer_id}"


def stripe_event(event_id: str) -> str:
    """Marker of a Stripe webhook event already handled (kept a week)."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=12).hexdigest()
    return f"{ROOT}:stripe:evt:{digest}"


# --- accounts: people who sign in, their sessions, Meta login flows -----------------------
def user_email(email_hash: str) -> str:
    """'tenant:user' of the person with this e-mail (SHA-256 of it lower-cased)."""
    return f"{ROOT}:uemail:{email_hash}"


def users(tenant_id: str) -> str:
    """Set of the tenant's user ids."""
    return f"{ROOT}:t:{tenant_id}:users"


def user(tenant_id: str, user_id: str) -> str:
    """Hash: name, email, role, password (argon2 hash), status, created_ms."""
    return f"{ROOT}:t:{tenant_id}:user:{user_id}"


def user_sessions(tenant_id: str, user_id: str) -> str:
    """Set of the session-id hashes a user holds (all ended on a password reset)."""
    return f"{ROOT}:t:{tenant_id}:usess:{user_id}"


def session(session_hash: str) -> str:
    """Hash with a TTL: tenant, user, role, csrf, created_ms (by the SHA-256 of the cookie)."""
    return f"{ROOT}:sess:{session_hash}"


def login_failures(kind: str, digest: str) -> str:
    """Counter with a TTL: failed sign-ins per e-mail or per client address (hashed)."""
    return f"{ROOT}:loginfail:{kind}:{digest}"


def one_time_link(purpose: str, token_hash: str) -> str:
    """'tenant:user' with a TTL: a password-reset or invitation link (by its SHA-256)."""
    return f"{ROOT}:otl:{purpose}:{token_hash}"


def api_keys(tenant_id: str) -> str:
    """Hash key id → JSON record (name, sha256, created_ms) of the tenant's API keys."""
    return f"{ROOT}:t:{tenant_id}:apikeys"


def connect_state(state_hash: str) -> str:
    """Hash with a TTL: the session, tenant and flow a Meta login ``state`` was issued for."""
    return f"{ROOT}:cstate:{state_hash}"


WATCHDOG_STATUS = f"{ROOT}:watchdog"  # hash: counts and time of the connection watchdog's runs
