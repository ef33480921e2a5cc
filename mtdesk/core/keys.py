"""The Redis layout: every key MT Desk writes is named here, nowhere else.

All of a tenant's data lives under ``mt:t:{tenant}:`` (so account deletion can find it
all with one SCAN); the few global keys hold routing, de-duplication and queues and
carry no message text. Event ids in de-duplication keys are hashed: a WhatsApp
``wamid`` embeds the user's phone number.

The key registry (:data:`FAMILIES`, :func:`parse`): every family of keys, with its
scope, whether it holds personal data, and which erasure, retention and export rule
covers it. Erasure, retention, export and the privacy tests iterate the families and
classify keys with :func:`parse`; no other module takes a key name apart. A family
added without being registered, or registered as holding personal data without an
erasure, retention and export rule, fails ``tests/core/test_key_registry.py``.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from redis.crc import key_slot

ROOT = "mt"


class Scope(enum.Enum):
    """Whose data a key holds."""

    GLOBAL = "global"  # outside any tenant prefix: routing, queues, markers
    TENANT = "tenant"  # under mt:t:{tenant}: (or the tenant hash itself)
    CONVERSATION = "conversation"  # under mt:t:{tenant}:, named by one conversation key


class Erasure(enum.Enum):
    """How an erasure finds what a family holds of the erased tenant, account or person.
    Each rule is carried out by :mod:`mtdesk.policy.erasure.sweep`."""

    CONVERSATION = "deleted with its conversation (the key names the conversation)"
    MESSAGE = "deleted with the stored message it belongs to (found through the history)"
    MEMBERS = "the erased conversations' or person's members are removed"
    NAMED = "a record naming an erased id (as a whole token) is removed"
    WITH_TENANT = "deleted with its tenant; holds no end user's data"
    WITH_CHANNEL = "deleted with its channel (and its tenant)"
    ROUTE = "dropped with its account, only while the erased tenant owns the account"
    OWNED = "the members or values naming the erased tenant are removed"
    ENTRIES = "the stream entries of the erased tenant (and account or person) are removed"
    NONE = "holds no personal data and names no tenant: nothing to erase"


class Retention(enum.Enum):
    """What bounds how long a family's data is kept (:mod:`mtdesk.policy.retention`)."""

    MESSAGES = "history entries older than the tenant's period are trimmed"
    CONVERSATION = "deleted once its conversation has no message left"
    RECORD_AGE = "records last updated before the tenant's cutoff are deleted"
    MAX_AGE = "entries older than the global maximum period are trimmed"
    TTL = "expires by itself (a TTL set on every write)"
    CONSUMED = "removed once processed (acknowledged stream entries, finished jobs)"
    CONFIGURATION = "kept while the tenant or channel exists; erased with it"


class Export(enum.Enum):
    """Whether a tenant's export (:mod:`mtdesk.policy.export`) carries the family."""

    SECTION = "a section of the export document"
    DERIVED = "derived from exported data (a cache or state of it), not exported again"
    SECRET = "never exported (tokens, key hashes)"
    OPERATIONAL = "operational counters and references, not the tenant's content"
    NOT_TENANT = "no tenant's data"


@dataclass(frozen=True)
class Family:
    """One kind of key. ``segment`` is the name's fixed part: for a tenant family the
    part after ``mt:t:{tenant}:`` (``""`` for the tenant hash itself), for a global one
    the part after ``mt:``; ``parted`` when an id follows it (``segment:{id}``).
    ``counted_as`` is the count an account erasure reports its keys under."""

    name: str
    scope: Scope
    segment: str
    parted: bool
    personal: bool
    erasure: Erasure
    retention: Retention
    export: Export
    made_by: tuple[str, ...]  # the functions or constants of this module naming it
    section: str = ""  # the export document's section, for Export.SECTION
    counted_as: str = "other_keys"


def _t(name: str, segment: str, parted: bool, personal: bool, erasure: Erasure,
       retention: Retention, export: Export, *made_by: str, section: str = "",
       counted_as: str = "other_keys", scope: Scope = Scope.TENANT) -> Family:
    return Family(name, scope, segment, parted, personal, erasure, retention, export,
                  made_by, section, counted_as)


def _g(name: str, segment: str, parted: bool, personal: bool, erasure: Erasure,
       retention: Retention, *made_by: str) -> Family:
    return Family(name, Scope.GLOBAL, segment, parted, personal, erasure, retention,
                  Export.NOT_TENANT, made_by)


_C, _E, _R, _X = Scope.CONVERSATION, Erasure, Retention, Export

TENANT_RECORD = _t("tenant", "", False, True, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECTION,
                   "tenant", section="tenant", counted_as="tenants")
CHANNEL_SET = _t("channels", "channels", False, False, _E.WITH_CHANNEL, _R.CONFIGURATION,
                 _X.SECTION, "channels", section="channels")
CHANNEL_RECORD = _t("channel", "ch", True, True, _E.WITH_CHANNEL, _R.CONFIGURATION, _X.SECTION,
                    "channel", section="channels", counted_as="channels")
BOT = _t("bot", "bot", False, False, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECTION, "bot",
         section="bot")
CONVERSATION_INDEX = _t("conversations", "convs", False, True, _E.MEMBERS, _R.CONVERSATION,
                        _X.SECTION, "conversations", section="conversations")
CONTEXT = _t("context", "ctx", True, True, _E.CONVERSATION, _R.CONVERSATION, _X.DERIVED,
             "context", counted_as="contexts", scope=_C)
HISTORY = _t("history", "hist", True, True, _E.CONVERSATION, _R.MESSAGES, _X.SECTION,
             "history", section="conversations", counted_as="conversations", scope=_C)
MEDIA = _t("media", "media", True, True, _E.CONVERSATION, _R.MESSAGES, _X.SECTION, "media",
           section="conversations", counted_as="media", scope=_C)
# Downloads of customers' media being retried (one field per attachment, naming its
# conversation): a restarted shard retries those of its partitions.
MEDIA_RETRY = _t("media_retry", "mretry", False, True, _E.MEMBERS, _R.TTL, _X.DERIVED,
                 "media_retries")
# Imported history (WhatsApp Business app): its entries' message times (entry id → the
# time the message was written), so retention counts from when it was written.
IMPORTED = _t("imported", "imported", True, True, _E.CONVERSATION, _R.MESSAGES, _X.DERIVED,
              "imported", scope=_C)
# A WhatsApp number's business-scoped user id (the person's phone number → ``US.…``),
# learnt from live messages that carry both: imported history, keyed by the number,
# joins the conversation of the business-scoped id. Expires with the retention period.
PHONE_ALIAS = _t("phone_alias", "waid", True, True, _E.NAMED, _R.TTL, _X.DERIVED,
                 "phone_alias")
PAUSED = _t("paused", "paused", True, True, _E.CONVERSATION, _R.TTL, _X.DERIVED, "paused",
            scope=_C)
# The inbox's card of a conversation: the person's name and picture (from Meta), the last
# message's line, unread count, closed, assignee; kept by the history append.
INBOX_CARD = _t("inbox_card", "inbox", True, True, _E.CONVERSATION, _R.CONVERSATION,
                _X.DERIVED, "inbox_card", scope=_C)
REPLY = _t("reply", "reply", True, True, _E.MESSAGE, _R.RECORD_AGE, _X.DERIVED, "reply",
           counted_as="records")
OUTBOUND = _t("outbound", "out", True, True, _E.MESSAGE, _R.RECORD_AGE, _X.DERIVED, "outbound",
              counted_as="records")
RESTRICTED = _t("restricted", "restricted", False, True, _E.MEMBERS, _R.CONFIGURATION,
                _X.SECTION, "restricted", section="restricted")
KNOWLEDGE = _t("knowledge", "kb", True, False, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECTION,
               "knowledge", "kb_sources", "kb_source", "kb_chunks", "kb_vectors", "kb_seq",
               "kb_meta", "kb_log", section="knowledge", counted_as="knowledge_keys")
BILLING = _t("billing", "billing", False, True, _E.WITH_TENANT, _R.CONFIGURATION,
             _X.OPERATIONAL, "billing")
USAGE = _t("usage", "usage", True, False, _E.WITH_TENANT, _R.TTL, _X.OPERATIONAL, "usage")
# Analytics: counts per day and channel, and HyperLogLogs of the conversations answered
# (they keep no member): no text, no id; a TTL inside the retention promise.
ANALYTICS = _t("analytics", "an", True, False, _E.WITH_TENANT, _R.TTL, _X.OPERATIONAL,
               "analytics")
ANALYTICS_CONVERSATIONS = _t("analytics_conversations", "anc", True, False, _E.WITH_TENANT,
                             _R.TTL, _X.OPERATIONAL, "analytics_conversations")
USER_SET = _t("users", "users", False, False, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECTION,
              "users", section="users")
USER = _t("user", "user", True, True, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECTION, "user",
          section="users")
USER_SESSIONS = _t("user_sessions", "usess", True, False, _E.WITH_TENANT, _R.CONFIGURATION,
                   _X.SECRET, "user_sessions")
DATA_KEY = _t("data_key", "dk", False, False, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECRET,
              "data_key")
API_KEYS = _t("api_keys", "apikeys", False, False, _E.WITH_TENANT, _R.CONFIGURATION, _X.SECRET,
              "api_keys")

INBOUND = _g("inbound", "in", True, True, _E.ENTRIES, _R.CONSUMED, "inbound")
DEAD_LETTER = _g("dead_letters", "dead", False, True, _E.ENTRIES, _R.MAX_AGE, "DEAD_LETTERS")
SEEN = _g("seen", "seen", True, False, _E.NONE, _R.TTL, "seen")
TENANT_SET = _g("tenants", "tenants", False, False, _E.OWNED, _R.CONFIGURATION, "TENANTS")
ROUTING = _g("routing", "acct", True, False, _E.ROUTE, _R.CONFIGURATION, "account")
API_KEY = _g("api_key", "apikey", True, False, _E.OWNED, _R.CONFIGURATION, "api_key")
APP_USER = _g("app_user", "asu", True, True, _E.OWNED, _R.CONFIGURATION, "app_user")
RATE = _g("rate", "rl", True, False, _E.ROUTE, _R.TTL, "rate")
META_CALLBACK = _g("meta_callback", "metacb", True, False, _E.NONE, _R.TTL, "meta_callback")
JOB = _g("deletion_job", "job", True, False, _E.NONE, _R.TTL, "deletion_job",
         "deletion_lease")
JOB_QUEUE = _g("deletion_jobs", "jobs", False, False, _E.NONE, _R.CONSUMED, "DELETION_JOBS")
KB_PENDING_SET = _g("pending_ingestion", "kbpending", False, False, _E.OWNED, _R.CONSUMED,
                    "KB_PENDING")
KB_READING = _g("kb_reading", "kbr", True, False, _E.NONE, _R.TTL, "kb_reading")
RETENTION = _g("retention_status", "retention", False, False, _E.NONE, _R.CONFIGURATION,
               "RETENTION_STATUS")
ERASED = _g("erasure_marker", "erased", True, False, _E.NONE, _R.TTL, "erased")
SHARD_STATS = _g("shard_stats", "stats", True, False, _E.NONE, _R.TTL, "shard_stats",
                 "shard_stats_pattern")
STRIPE_CUSTOMER = _g("stripe_customer", "stripe:cust", True, False, _E.OWNED, _R.CONFIGURATION,
                     "stripe_customer")
STRIPE_EVENT = _g("stripe_event", "stripe:evt", True, False, _E.NONE, _R.TTL, "stripe_event")
CLUSTER = _g("cluster_report", "cluster", False, False, _E.NONE, _R.TTL, "cluster_report")
OWNERSHIP = _g("shard_ownership", "owners", False, False, _E.NONE, _R.CONFIGURATION,
               "shard_ownership")
RESHARD = _g("reshard_request", "reshard", False, False, _E.NONE, _R.CONFIGURATION,
             "reshard_request")
# The running generation of retrieval shard actors and their count (JSON, the director's;
# core/retrieval_layout.py): conversation shards follow it to the new actors.
RETRIEVAL_LAYOUT = _g("retrieval_layout", "retrieval", False, False, _E.NONE,
                      _R.CONFIGURATION, "retrieval_layout")
OWNER_EPOCH = _g("partition_owner", "own", True, False, _E.NONE, _R.CONFIGURATION,
                 "partition_owner")
# Sign-in: an e-mail's user, sessions, one-time links and Meta login states name their
# tenant (erased with it); failure counters are digests with a TTL.
USER_EMAIL = _g("user_email", "uemail", True, True, _E.OWNED, _R.CONFIGURATION, "user_email")
SESSION = _g("session", "sess", True, False, _E.OWNED, _R.TTL, "session")
LOGIN_FAILURES = _g("login_failures", "loginfail", True, False, _E.NONE, _R.TTL,
                    "login_failures")
MAIL_COOLDOWN = _g("mail_cooldown", "mailwait", True, False, _E.NONE, _R.TTL, "mail_cooldown")
ONE_TIME_LINK = _g("one_time_link", "otl", True, False, _E.OWNED, _R.TTL, "one_time_link")
CONNECT_STATE = _g("connect_state", "cstate", True, False, _E.OWNED, _R.TTL, "connect_state")
WATCHDOG = _g("watchdog_status", "watchdog", False, False, _E.NONE, _R.CONFIGURATION,
              "WATCHDOG_STATUS")
LAYOUT_VERSION = _g("layout", "layout", False, False, _E.NONE, _R.CONFIGURATION, "LAYOUT")

FAMILIES: tuple[Family, ...] = (
    TENANT_RECORD, CHANNEL_SET, CHANNEL_RECORD, BOT, CONVERSATION_INDEX, CONTEXT, HISTORY, MEDIA,
    MEDIA_RETRY,
    IMPORTED, PHONE_ALIAS, PAUSED, INBOX_CARD, REPLY, OUTBOUND, KNOWLEDGE, RESTRICTED, BILLING, USAGE, ANALYTICS,
    ANALYTICS_CONVERSATIONS, USER_SET, USER,
    USER_SESSIONS, API_KEYS, DATA_KEY,
    INBOUND, DEAD_LETTER, SEEN, TENANT_SET, ROUTING, API_KEY, APP_USER, RATE, META_CALLBACK,
    JOB, JOB_QUEUE,
    KB_PENDING_SET, KB_READING, RETENTION, ERASED, SHARD_STATS, STRIPE_CUSTOMER, STRIPE_EVENT, CLUSTER,
    OWNERSHIP, RESHARD, OWNER_EPOCH, RETRIEVAL_LAYOUT,
    USER_EMAIL, SESSION, LOGIN_FAILURES, MAIL_COOLDOWN, ONE_TIME_LINK, CONNECT_STATE,
    WATCHDOG, LAYOUT_VERSION,
)


@dataclass(frozen=True)
class KeyRef:
    """A key name taken apart: its family, the tenant (tenant families) and the id after
    the family's segment (a conversation key, message id, account …; ``""`` if none)."""

    family: Family
    tenant: str = ""
    part: str = ""


def _index() -> tuple[dict[str, Family], dict[str, Family], dict[str, Family], dict[str, Family]]:
    tenant_fixed: dict[str, Family] = {}
    tenant_parted: dict[str, Family] = {}
    global_fixed: dict[str, Family] = {}
    global_parted: dict[str, Family] = {}
    for f in FAMILIES:
        if f is TENANT_RECORD:
            continue  # mt:t:{tenant} itself, recognised by having nothing after the id
        table = ((tenant_parted if f.parted else tenant_fixed) if f.scope is not Scope.GLOBAL
                 else (global_parted if f.parted else global_fixed))
        table[f.segment] = f
    return tenant_fixed, tenant_parted, global_fixed, global_parted


_TENANT_FIXED, _TENANT_PARTED, _GLOBAL_FIXED, _GLOBAL_PARTED = _index()
_ROOT_PREFIX = ROOT + ":"
_TENANT_ROOT = ROOT + ":t:"


def _tenant_part(text: str) -> tuple[str, str, str]:
    """(tenant, ":" or "", rest) of what follows ``mt:t:``: ``{tenant}:rest`` (the hash
    tag), or ``tenant:rest`` as keys were named before they carried one (still read, so
    a sweep finds what a migration missed)."""
    if text.startswith("{"):
        tenant, close, rest = text[1:].partition("}")
        if not close or (rest and not rest.startswith(":")):
            return "", "", ""
        return tenant, rest[:1], rest[1:]
    return text.partition(":")


def parse(name: str | bytes) -> KeyRef | None:
    """The family (and tenant, id) of a key name; None for a name of no family."""
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    if not text.startswith(_ROOT_PREFIX):
        return None
    if text.startswith(_TENANT_ROOT):
        tenant, sep, rest = _tenant_part(text[len(_TENANT_ROOT):])
        if not tenant:
            return None
        if not sep:
            return KeyRef(TENANT_RECORD, tenant)
        fixed = _TENANT_FIXED.get(rest)
        if fixed is not None:
            return KeyRef(fixed, tenant)
        segment, sep, part = rest.partition(":")
        family = _TENANT_PARTED.get(segment)
        return KeyRef(family, tenant, part) if family is not None and sep else None
    rest = text[len(_ROOT_PREFIX):]
    fixed = _GLOBAL_FIXED.get(rest)
    if fixed is not None:
        return KeyRef(fixed)
    for segment, family in _GLOBAL_PARTED.items():  # "stripe:cust" spans a colon
        if rest.startswith(segment + ":"):
            return KeyRef(family, "", rest[len(segment) + 1:])
    return None


def tenant_pattern(tenant_id: str, family: Family | None = None) -> str:
    """SCAN pattern of a tenant's keys: all of them, or those of one parted family."""
    if family is None:
        return f"{ROOT}:t:{{{tenant_id}}}:*"
    assert family.scope is not Scope.GLOBAL and family.parted
    return f"{ROOT}:t:{{{tenant_id}}}:{family.segment}:*"


def global_key(family: Family) -> str:
    """The one key of a global family without ids (``mt:dead``, ``mt:jobs`` …)."""
    assert family.scope is Scope.GLOBAL and not family.parted
    return f"{ROOT}:{family.segment}"


def global_pattern(family: Family, *parts: str) -> str:
    """SCAN pattern of a parted global family's keys whose id starts with ``parts``."""
    assert family.scope is Scope.GLOBAL and family.parted
    head = "".join(f"{p}:" for p in parts)
    return f"{ROOT}:{family.segment}:{head}*"


# --- hash slots (Redis Cluster) -----------------------------------------------------------
# Every key carries a hash tag (the part in braces), so what one script or transaction
# touches is in one slot: a tenant's keys ``mt:t:{tenant}:…`` share the tenant's slot; a
# partition's stream and its de-duplication markers share ``{partition}``'s. The same
# names serve a single Redis (docs/redis.md: the layout and the migration of older names).
SLOTS = 16384


def slot_of(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (its hash tag's when it has one)."""
    return int(key_slot(key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key))


def tag_of(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first ``{…}`` when not empty, else
    the whole name."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


@cache
def _aliases() -> tuple[str, ...]:
    # Line i is the shortest [0-9a-z] name in slot i (made once; tests/core/test_slots.py
    # checks every line): a list of names is cheaper than searching one at run time.
    text = resources.files(__package__).joinpath("slot_aliases.txt").read_text("ascii")
    return tuple(text.split())


def slot_alias(tag: str) -> str:
    """A short name in the same hash slot as the key or tag ``tag``: a key that must sit
    beside a tenant's keys without naming the tenant is tagged with it."""
    return _aliases()[slot_of("{" + tag + "}" if "{" not in tag else tag)]


# --- queues (global) -------------------------------------------------------------------
SHARD_GROUP = "shards"  # consumer group of the conversation shards on every inbound stream


def inbound(partition: int) -> str:
    """Partition stream of inbound events; fields: e (msgpack event), t (tenant), s (stale).
    Tagged by the partition: its de-duplication markers share its hash slot."""
    return f"{ROOT}:in:{{{partition}}}"


DEAD_LETTERS = f"{ROOT}:dead"  # signed but undecodable bodies, capped


def seen(event_id: str, partition: int) -> str:
    """De-duplication marker of one inbound event (kept ≥ 7 days), in the hash slot of
    the partition stream the event goes to (:func:`inbound`): one script sets both."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=12).hexdigest()
    return f"{ROOT}:seen:{{{partition}}}:{digest}"


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
    """The account's send permits counted in ``second``. Tagged by the account: on a
    cluster every second of one account is on one master (untagged, each second's
    window landed on another, and a master's failure refused an account's sends one
    second in three)."""
    return f"{ROOT}:rl:{{{channel}:{account_id}}}:{second}"


def meta_callback(kind: str, digest: str) -> str:
    """Hash {job, disconnected} of one Meta callback, keyed by a digest of its
    signed_request (the same request answers with the same job)."""
    return f"{ROOT}:metacb:{kind}:{digest}"


def deletion_job(job_id: str) -> str:
    return f"{ROOT}:job:{job_id}"


DELETION_JOBS = f"{ROOT}:jobs"  # stream of job ids for the deletion worker


# --- a tenant's own data ----------------------------------------------------------------
def tenant_prefix(tenant: str) -> str:
    return f"{ROOT}:t:{{{tenant}}}:"


def tenant(tenant_id: str) -> str:
    """Hash: name, email, created_ms, status, retention_days, api_key_hash."""
    return f"{ROOT}:t:{{{tenant_id}}}"


def channels(tenant_id: str) -> str:
    """Set of the tenant's channel ids."""
    return f"{ROOT}:t:{{{tenant_id}}}:channels"


def channel(tenant_id: str, channel_id: str) -> str:
    """Hash: channel, account_id, token (ciphertext), status, connected_ms, connected_by."""
    return f"{ROOT}:t:{{{tenant_id}}}:ch:{channel_id}"


def data_key(tenant_id: str) -> str:
    """String: the tenant's data key, wrapped by a master key (mtdesk.core.sealing).
    Deleting it first is what makes an account's data unreadable everywhere."""
    return f"{ROOT}:t:{{{tenant_id}}}:dk"


def bot(tenant_id: str) -> str:
    """JSON of the bot settings."""
    return f"{ROOT}:t:{{{tenant_id}}}:bot"


def conversations(tenant_id: str) -> str:
    """Sorted set: conversation key → last activity (ms)."""
    return f"{ROOT}:t:{{{tenant_id}}}:convs"


def context(tenant_id: str, conversation: str) -> str:
    """Persisted conversation context (msgpack)."""
    return f"{ROOT}:t:{{{tenant_id}}}:ctx:{conversation}"


def history(tenant_id: str, conversation: str) -> str:
    """Stream of stored messages (inbound and outbound); entry ids are message times."""
    return f"{ROOT}:t:{{{tenant_id}}}:hist:{conversation}"


def media(tenant_id: str, conversation: str) -> str:
    """Stream of the media bytes customers sent in a conversation (one entry per
    attachment, entry ids are store times; see :mod:`mtdesk.core.media`). Exported as
    the references the history's messages carry, not as bytes."""
    return f"{ROOT}:t:{{{tenant_id}}}:media:{conversation}"


def media_retries(tenant_id: str) -> str:
    """Hash: the media downloads being retried, field ``{conversation} {message id}
    {index}`` → the attachment to fetch (sealed; :mod:`mtdesk.actors.media`). Expires a
    day after its last write; a conversation's fields go with the conversation."""
    return f"{ROOT}:t:{{{tenant_id}}}:mretry"


def imported(tenant_id: str, conversation: str) -> str:
    """Sorted set: the history entry ids of a conversation's imported messages (WhatsApp
    Business app history), each scored by the time the message was written (ms)."""
    return f"{ROOT}:t:{{{tenant_id}}}:imported:{conversation}"


def phone_alias(tenant_id: str, account_id: str, wa_id: str) -> str:
    """String: the business-scoped user id of the WhatsApp number ``wa_id`` writing to
    the business number ``account_id`` (its phone_number_id)."""
    return f"{ROOT}:t:{{{tenant_id}}}:waid:{account_id}:{wa_id}"


def reply(tenant_id: str, event_id: str) -> str:
    """Hash: state (generating|sending|sent|skipped|failed), graph ids, attempts."""
    return f"{ROOT}:t:{{{tenant_id}}}:reply:{event_id}"


def outbound(tenant_id: str, graph_message_id: str) -> str:
    """Where a message we sent is stored: {conversation, entry} (for statuses/receipts)."""
    return f"{ROOT}:t:{{{tenant_id}}}:out:{graph_message_id}"


def paused(tenant_id: str, conversation: str) -> str:
    """Present (with a TTL) while a human agent has the conversation."""
    return f"{ROOT}:t:{{{tenant_id}}}:paused:{conversation}"


def inbox_card(tenant_id: str, conversation: str) -> str:
    """Hash: the conversation as the inbox lists it (channel, name, picture, profile_ms,
    last_text, last_dir, last_kind, last_entry, last_ms, last_in_ms, unread, closed,
    assignee); kept by the history append (core/lua/history_append.lua)."""
    return f"{ROOT}:t:{{{tenant_id}}}:inbox:{conversation}"


def live(tenant_id: str) -> str:
    """Pub/sub channel (nothing is stored, so no family) of the tenant's conversation
    changes: ``m <conversation> <entry>`` (a message stored), ``s <conversation> <entry>
    <status>`` (a sent message's status moved), ``c <conversation>`` (its card changed).
    The inbox's live transcript listens to it."""
    return f"{ROOT}:t:{{{tenant_id}}}:live"


def restricted(tenant_id: str) -> str:
    """Set of end-user ids (channel:user) whose processing is restricted."""
    return f"{ROOT}:t:{{{tenant_id}}}:restricted"


def knowledge(tenant_id: str, suffix: str) -> str:
    """Knowledge-base keys: sources, chunks, index metadata."""
    return f"{ROOT}:t:{{{tenant_id}}}:kb:{suffix}"


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


def kb_reading(tenant_id: str) -> str:
    """Set (with a short expiry) whenever a process reads the tenant's index state to
    answer from it; an ingestion waits it out before saying ``ready``. Named by a digest:
    it holds no identifier and outlives an erasure by seconds at most."""
    digest = hashlib.sha256(tenant_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{ROOT}:kbr:{digest}"


def kb_log(tenant_id: str) -> str:
    """Stream of index changes (op add|del|reset, packed ids) the shards catch up from."""
    return knowledge(tenant_id, "log")


# Global: "tenant:source" ids of ingestion jobs not finished (ids only, no content), so a
# restarted worker resumes them.
KB_PENDING = f"{ROOT}:kbpending"


# --- privacy (global; ids, counts and times only, never personal data) -----------------
DELETION_GROUP = "deleters"  # consumer group of the deletion workers on DELETION_JOBS

# Pub/sub channel (nothing is stored, so no family): erasure notices
# (mtdesk.policy.erasure.notices) telling whatever holds tenant data in memory to drop
# what was erased. See docs/privacy.md.
ERASURE_NOTICES = f"{ROOT}:erasure"

RETENTION_STATUS = f"{ROOT}:retention"  # hash: last run time and deleted counts by type


def erased(tenant_id: str) -> str:
    """String: this tenant's account is being (or was, recently) erased; no knowledge
    write for it goes through while it exists. Named by a digest of the tenant id, so the
    marker itself names no tenant; tagged with :func:`slot_alias` so it shares the
    tenant's hash slot (the knowledge writes watch it in their transaction)."""
    digest = hashlib.blake2b(tenant_id.encode(), digest_size=12, person=b"mtdesk-erased")
    return f"{ROOT}:erased:{{{slot_alias(tenant_id)}}}:{digest.hexdigest()}"


def deletion_lease(job_id: str) -> str:
    """Which deletion worker runs a job right now (a short, renewed TTL)."""
    return f"{ROOT}:job:{job_id}:lease"


# --- conversation shards (global; counts and times only) ---------------------------------
def shard_stats(shard: int) -> str:
    """Last metrics snapshot of one conversation shard (msgpack, short TTL)."""
    return f"{ROOT}:stats:shard:{shard}"


def shard_stats_pattern() -> str:
    """SCAN pattern matching every :func:`shard_stats` key."""
    return global_pattern(SHARD_STATS, "shard")


# --- the Ray cluster (global; placement and counts only) ---------------------------------
def cluster_report() -> str:
    """Where every actor runs and its queue figures (JSON, short TTL; see core/cluster.py)."""
    return f"{ROOT}:cluster"


def shard_ownership() -> str:
    """Which conversation shard owns each partition, with the epoch of the last handover
    (JSON; written by the director only, see core/ownership.py)."""
    return f"{ROOT}:owners"


def reshard_request() -> str:
    """The shard count an operator asked for (JSON; ``mtdesk shards set``, the API)."""
    return f"{ROOT}:reshard"


def retrieval_layout() -> str:
    """The retrieval shards' generation and count (JSON; written by the director only, see
    core/retrieval_layout.py)."""
    return f"{ROOT}:retrieval"


def partition_owner(partition: int) -> str:
    """The epoch at which the partition's owner got it: its fence, in the hash slot of the
    partition's stream (:func:`inbound`), so the acknowledgement script checks it."""
    return f"{ROOT}:own:{{{partition}}}"


# --- billing (Stripe) ---------------------------------------------------------------------
def billing(tenant_id: str) -> str:
    """Hash: Stripe customer and subscription ids, plan, status, allowance (-1 = unlimited),
    price, period end, last applied subscription event time."""
    return f"{ROOT}:t:{{{tenant_id}}}:billing"


def usage(tenant_id: str, month: str) -> str:
    """Counter of the messages answered in ``month`` (``YYYYMM``, UTC), with a TTL."""
    return f"{ROOT}:t:{{{tenant_id}}}:usage:{month}"


def analytics(tenant_id: str, day: str) -> str:
    """Hash of the day's (``YYYYMMDD``, UTC) counts, fields ``{channel}:{metric}``
    (:mod:`mtdesk.core.analytics`), with a TTL."""
    return f"{ROOT}:t:{{{tenant_id}}}:an:{day}"


def analytics_conversations(tenant_id: str, day: str, channel: str, kind: str) -> str:
    """HyperLogLog of the day's conversations ``answered`` / answered by a ``human``."""
    return f"{ROOT}:t:{{{tenant_id}}}:anc:{day}:{channel}:{kind}"


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
    return f"{ROOT}:t:{{{tenant_id}}}:users"


def user(tenant_id: str, user_id: str) -> str:
    """Hash: name, email, role, password (argon2 hash), status, created_ms."""
    return f"{ROOT}:t:{{{tenant_id}}}:user:{user_id}"


def user_sessions(tenant_id: str, user_id: str) -> str:
    """Set of the session-id hashes a user holds (all ended on a password reset)."""
    return f"{ROOT}:t:{{{tenant_id}}}:usess:{user_id}"


def session(session_hash: str) -> str:
    """Hash with a TTL: tenant, user, role, csrf, created_ms (by the SHA-256 of the cookie)."""
    return f"{ROOT}:sess:{session_hash}"


def login_failures(kind: str, digest: str) -> str:
    """Counter with a TTL: failed sign-ins per e-mail or per client address (hashed)."""
    return f"{ROOT}:loginfail:{kind}:{digest}"


def mail_cooldown(email_hash: str) -> str:
    """Present (with a TTL) while another reset mail to this address would be too soon."""
    return f"{ROOT}:mailwait:{email_hash}"


def one_time_link(purpose: str, token_hash: str) -> str:
    """'tenant:user' with a TTL: a password-reset or invitation link (by its SHA-256)."""
    return f"{ROOT}:otl:{purpose}:{token_hash}"


def api_keys(tenant_id: str) -> str:
    """Hash key id → JSON record (name, sha256, created_ms) of the tenant's API keys."""
    return f"{ROOT}:t:{{{tenant_id}}}:apikeys"


def connect_state(state_hash: str) -> str:
    """Hash with a TTL: the session, tenant and flow a Meta login ``state`` was issued for."""
    return f"{ROOT}:cstate:{state_hash}"


WATCHDOG_STATUS = f"{ROOT}:watchdog"  # hash: counts and time of the connection watchdog's runs

LAYOUT = f"{ROOT}:layout"  # the key layout's version (mtdesk.core.layout)
