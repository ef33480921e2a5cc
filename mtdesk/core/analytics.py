"""Analytics: per tenant, day (UTC) and channel, counts kept as the events happen.

Nothing here is a scan of history: every figure is a counter written where its event
happens, and a view reads one hash and a few HyperLogLogs per day.

Layout (names from :mod:`mtdesk.core.keys`):

``keys.analytics(tid, day)`` — a **hash** per day (``YYYYMMDD``), fields
``{channel}:{metric}``: ``in`` (messages and postbacks received), ``bot`` (replies the
bot sent), ``human`` (replies a person sent: from the console or Meta's own inbox),
``handoff`` (a person took a conversation over from the bot), ``tok_in`` / ``tok_out``
(the LLM's prompt and completion tokens), ``fail:{reason}`` (replies that ended failed,
by reason), and ``rt:{bound}`` (the bot's time to reply, from the customer's message to
Meta accepting the reply, as a histogram: how many replies took at most ``bound`` ms;
``rt:inf`` above the last bound).

``keys.analytics_conversations(tid, day, channel, kind)`` — a **HyperLogLog** of the
conversations ``answered`` that day (by the bot or a person) and of those where a
``human`` answered: the automation rate is ``1 - human / answered``. A HyperLogLog
keeps no member (12 KB of hash registers at most), so it holds counts, not who.

Counts only, never text, ids or names. Every key expires 366 days after its day began
(inside the 12-month retention promise), and all of them go with the tenant
(``mt:t:{tenant}:``). The conversation shards count into a :class:`Tally` in memory and
write it every second in one pipeline (a few ``HINCRBY``, one ``EXPIREAT`` per key
touched, in one script per tenant that writes nothing while the tenant is being erased):
a crashed shard loses at most that second's counts, and a message redelivered after a
crash may be counted twice. Elsewhere (the console's reply endpoint) the
``count_*`` functions queue the same commands on the caller's pipeline.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio.client import Pipeline

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.core.scripts import LuaScript

CHANNELS: Final = ("messenger", "instagram", "whatsapp")
TTL_DAYS: Final = 366  # a day's counts live this long after the day began
MAX_RANGE_DAYS: Final = 366  # the longest range one view reads
# Time to reply: the histogram's upper bounds (ms); a reply above the last is "inf".
REPLY_BOUNDS_MS: Final = (1_000, 2_000, 3_000, 5_000, 10_000, 20_000, 30_000, 60_000,
                          120_000, 300_000, 600_000, 1_800_000, 3_600_000, 14_400_000,
                          86_400_000)
ANSWERED: Final = "answered"
HUMAN: Final = "human"
_PFADD_CHUNK: Final = 1000  # members per PFADD (a Lua unpack has a stack limit)
# One tenant's tally written, unless the tenant is being erased (its marker exists: the
# counts of a tenant erased meanwhile are dropped, never written after the erasure).
# KEYS[1] the erasure marker, KEYS[2..] the tenant's analytics keys; ARGV per key: 'h'
# (hash), 'p' (HyperLogLog) or 'c' (a counter), EXPIREAT seconds, n, then n
# field/increment pairs, n members, or nothing (the counter grows by n).
_WRITE = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local a = 1
for k = 2, #KEYS do
  local kind, at, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if kind == 'h' then
    for i = 0, n - 1 do redis.call('HINCRBY', KEYS[k], ARGV[a + 2 * i], ARGV[a + 2 * i + 1]) end
    a = a + 2 * n
  elseif kind == 'c' then
    redis.call('INCRBY', KEYS[k], n)
  else
    redis.call('PFADD', KEYS[k], unpack(ARGV, a, a + n - 1))
    a = a + n
  end
  redis.call('EXPIREAT', KEYS[k], at)
end
return 1
""", name="analytics_write")
_REASON_OK = re.compile(r"[^a-z0-9 ._()/-]+")


def day_of(at_ms: int) -> str:
    """The UTC day of an epoch-ms instant, ``YYYYMMDD``."""
    return dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.UTC).strftime("%Y%m%d")


def _expire_at_s(day: str) -> int:
    start = dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC)
    return int(start.timestamp()) + TTL_DAYS * 86_400


def reply_bucket(ms: int) -> str:
    """The histogram field suffix of a time to reply: ``rt:{bound}`` or ``rt:inf``."""
    for bound in REPLY_BOUNDS_MS:
        if ms <= bound:
            return f"rt:{bound}"
    return "rt:inf"


def failure_field(reason: str) -> str:
    """``fail:{reason}``, the reason lower-cased, shortened and stripped of anything but
    letters, digits, spaces and ``._()/-`` (reasons are a small fixed set: a Graph error
    code, the 24-hour window, an error's name; this keeps them so)."""
    cleaned = _REASON_OK.sub("", (reason or "unknown").lower()).strip()[:60] or "unknown"
    return f"fail:{cleaned}"


def _field(channel: str, metric: str) -> str:
    return f"{channel}:{metric}"


# --- counting on a caller's pipeline ---------------------------------------------------
def count(pipe: Pipeline, tenant: str, channel: str, day: str, metric: str, n: int = 1) -> None:
    """Queue ``metric`` += ``n`` for (tenant, day, channel): two commands."""
    name = keys.analytics(tenant, day)
    pipe.hincrby(name, _field(channel, metric), n)
    pipe.expireat(name, _expire_at_s(day))


def count_conversation(pipe: Pipeline, tenant: str, channel: str, day: str, kind: str,
                       conversation: str) -> None:
    """Queue ``conversation`` into the day's ``answered`` or ``human`` HyperLogLog."""
    name = keys.analytics_conversations(tenant, day, channel, kind)
    pipe.pfadd(name, conversation)
    pipe.expireat(name, _expire_at_s(day))


def count_human_reply(pipe: Pipeline, tenant: str, channel: str, day: str,
                      conversation: str, *, handoff: bool = False) -> None:
    """A person answered ``conversation`` (the console's reply, an echo from Meta's
    inbox): ``human`` += 1, the conversation answered by a human; with ``handoff`` (the
    bot was not paused until now) also ``handoff`` += 1. Six or seven commands."""
    count(pipe, tenant, channel, day, HUMAN)
    if handoff:
        pipe.hincrby(keys.analytics(tenant, day), _field(channel, "handoff"), 1)
    count_conversation(pipe, tenant, channel, day, ANSWERED, conversation)
    count_conversation(pipe, tenant, channel, day, HUMAN, conversation)


def count_handoff(pipe: Pipeline, tenant: str, channel: str, day: str) -> None:
    """A person took a conversation over (the bot pauses): ``handoff`` += 1."""
    count(pipe, tenant, channel, day, "handoff")


# --- the shards' tally: counted in memory, written together ---------------------------
@dataclass
class Tally:
    """Counts gathered in memory and written with :meth:`flush` in one pipeline."""

    counts: dict[tuple[str, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    conversations: dict[tuple[str, str, str, str], set[str]] = field(
        default_factory=lambda: defaultdict(set))
    # (tenant, counter key) -> [increment, EXPIREAT seconds]: a tenant's counter kept
    # elsewhere (e.g. the plan's usage with billing off), written with the rest.
    counters: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, tenant: str, channel: str, at_ms: int, metric: str, n: int = 1) -> None:
        if n:
            self.counts[(tenant, day_of(at_ms))][_field(channel, metric)] += n

    def conversation(self, tenant: str, channel: str, at_ms: int, kind: str,
                     conversation: str) -> None:
        self.conversations[(tenant, day_of(at_ms), channel, kind)].add(conversation)

    def message_in(self, tenant: str, channel: str, at_ms: int) -> None:
        self.add(tenant, channel, at_ms, "in")

    def bot_reply(self, tenant: str, channel: str, at_ms: int, conversation: str,
                  reply_ms: int | None) -> None:
        self.add(tenant, channel, at_ms, "bot")
        if reply_ms is not None:
            self.add(tenant, channel, at_ms, reply_bucket(max(0, reply_ms)))
        self.conversation(tenant, channel, at_ms, ANSWERED, conversation)

    def human_reply(self, tenant: str, channel: str, at_ms: int, conversation: str, *,
                    handoff: bool) -> None:
        self.add(tenant, channel, at_ms, HUMAN)
        if handoff:
            self.add(tenant, channel, at_ms, "handoff")
        self.conversation(tenant, channel, at_ms, ANSWERED, conversation)
        self.conversation(tenant, channel, at_ms, HUMAN, conversation)

    def failure(self, tenant: str, channel: str, at_ms: int, reason: str) -> None:
        self.add(tenant, channel, at_ms, failure_field(reason))

    def tokens(self, tenant: str, channel: str, at_ms: int, prompt: int,
               completion: int) -> None:
        self.add(tenant, channel, at_ms, "tok_in", max(0, prompt))
        self.add(tenant, channel, at_ms, "tok_out", max(0, completion))

    def counter(self, tenant: str, key: str, n: int, expire_at_s: int) -> None:
        """``key`` (one of the tenant's, a plain counter) += ``n``, expiring at
        ``expire_at_s`` (epoch seconds)."""
        if n:
            held = self.counters.setdefault((tenant, key), [0, expire_at_s])
            held[0] += n
            held[1] = max(held[1], expire_at_s)

    def __bool__(self) -> bool:
        return bool(self.counts or self.conversations or self.counters)

    def queue(self, pipe: Pipeline) -> int:
        """Queue everything counted so far on ``pipe`` (one script call per tenant, after
        a ``SCRIPT LOAD``) and forget it; returns the counting commands queued."""
        commands = self._queue_into(pipe)
        self.counts = defaultdict(lambda: defaultdict(int))
        self.conversations = defaultdict(set)
        self.counters = {}
        return commands

    def _queue_into(self, pipe: Pipeline) -> int:
        per_tenant: dict[str, tuple[list[str], list[str | int]]] = defaultdict(lambda: ([], []))
        commands = 0
        for (tenant, day), fields in self.counts.items():
            names, args = per_tenant[tenant]
            names.append(keys.analytics(tenant, day))
            args += ["h", _expire_at_s(day), len(fields)]
            for name_field, n in fields.items():
                args += [name_field, n]
            commands += len(fields) + 1
        for (tenant, day, channel, kind), members in self.conversations.items():
            ordered = sorted(members)
            for i in range(0, len(ordered), _PFADD_CHUNK):
                chunk = ordered[i:i + _PFADD_CHUNK]
                names, args = per_tenant[tenant]
                names.append(keys.analytics_conversations(tenant, day, channel, kind))
                args += ["p", _expire_at_s(day), len(chunk), *chunk]
                commands += 2
        for (tenant, key), (n, expire_at_s) in self.counters.items():
            names, args = per_tenant[tenant]
            names.append(key)
            args += ["c", expire_at_s, n]
            commands += 2
        if per_tenant:
            _WRITE.load(pipe)
        for tenant, (names, args) in per_tenant.items():
            _WRITE.queue(pipe, [keys.erased(tenant), *names], args)
        return commands

    def merge(self, other: Tally) -> None:
        """Take ``other``'s counts back (a flush that failed is tried again later)."""
        for at, fields in other.counts.items():
            for name_field, n in fields.items():
                self.counts[at][name_field] += n
        for where, members in other.conversations.items():
            self.conversations[where] |= members
        for (tenant, key), (n, expire_at_s) in other.counters.items():
            self.counter(tenant, key, n, expire_at_s)

    async def flush(self, redis: Redis) -> int:
        """Write what was counted in one pipeline; on failure the counts are kept for the
        next flush (and the error raised). Returns the commands sent."""
        if not self:
            return 0
        pending = Tally(self.counts, self.conversations, self.counters)
        self.counts = defaultdict(lambda: defaultdict(int))
        self.conversations = defaultdict(set)
        self.counters = {}
        pipe = redis.pipeline(transaction=False)
        commands = pending._queue_into(pipe)
        try:
            await pipe.execute()
        except BaseException:
            self.merge(pending)
            raise
        return commands


# --- reading ----------------------------------------------------------------------------
def days_between(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).strftime("%Y%m%d")
            for i in range((last - first).days + 1)]


def quantile_ms(histogram: Mapping[str, int], q: float) -> int | None:
    """The ``q`` quantile of a reply-time histogram (``rt:{bound}`` -> count), linear
    inside its bucket; None without replies. Above the last bound it reads as that bound
    (the histogram knows no more)."""
    counts = [histogram.get(f"rt:{b}", 0) for b in REPLY_BOUNDS_MS] + [histogram.get("rt:inf", 0)]
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0
    for bound, n in zip((*REPLY_BOUNDS_MS, REPLY_BOUNDS_MS[-1]), counts, strict=True):
        if n and seen + n >= rank:
            return int(round(lower + (bound - lower) * max(0.0, rank - seen) / n))
        seen += n
        lower = bound
    return REPLY_BOUNDS_MS[-1]


@dataclass
class Figures:
    """The figures of one day (or a range), all channels asked for added up."""

    messages_in: int = 0
    bot_replies: int = 0
    human_replies: int = 0
    handoffs: int = 0
    conversations: int = 0
    conversations_with_human: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    reply_times: dict[str, int] = field(default_factory=dict)

    def add_fields(self, metrics: Mapping[str, int]) -> None:
        for metric, n in metrics.items():
            if metric == "in":
                self.messages_in += n
            elif metric == "bot":
                self.bot_replies += n
            elif metric == HUMAN:
                self.human_replies += n
            elif metric == "handoff":
                self.handoffs += n
            elif metric == "tok_in":
                self.prompt_tokens += n
            elif metric == "tok_out":
                self.completion_tokens += n
            elif metric.startswith("fail:"):
                reason = metric[5:]
                self.failures[reason] = self.failures.get(reason, 0) + n
            elif metric.startswith("rt:"):
                self.reply_times[metric] = self.reply_times.get(metric, 0) + n

    def add(self, other: Figures) -> None:
        self.add_fields({"in": other.messages_in, "bot": other.bot_replies,
                         HUMAN: other.human_replies, "handoff": other.handoffs,
                         "tok_in": other.prompt_tokens, "tok_out": other.completion_tokens,
                         **{f"fail:{k}": v for k, v in other.failures.items()},
                         **other.reply_times})
        self.conversations += other.conversations
        self.conversations_with_human += other.conversations_with_human

    def as_json(self) -> dict[str, Any]:
        answered = self.conversations
        human = min(self.conversations_with_human, answered)
        return {
            "messages_in": self.messages_in,
            "bot_replies": self.bot_replies,
            "human_replies": self.human_replies,
            "handoffs": self.handoffs,
            "conversations_answered": answered,
            "conversations_with_human": human,
            "automation_rate": round((answered - human) / answered, 4) if answered else None,
            "reply_time_ms": {
                "replies": sum(self.reply_times.values()),
                "median": quantile_ms(self.reply_times, 0.5),
                "p95": quantile_ms(self.reply_times, 0.95),
            },
            "failures": dict(sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))),
            "llm_tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens,
                           "total": self.prompt_tokens + self.completion_tokens},
        }


def _int(raw: object) -> int:
    try:
        return int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def read(redis: Redis, tenant: str, days: Sequence[str],
               channels: Iterable[str] = CHANNELS) -> list[Figures]:
    """The figures of each of ``days`` (``YYYYMMDD``) for ``channels``, in one pipeline:
    one ``HGETALL`` per day and a ``PFCOUNT`` per day, channel and kind."""
    wanted = tuple(channels)
    pipe = redis.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(keys.analytics(tenant, day))
        for channel in wanted:
            for kind in (ANSWERED, HUMAN):
                pipe.pfcount(keys.analytics_conversations(tenant, day, channel, kind))
    replies = await pipe.execute()
    out: list[Figures] = []
    step = 1 + 2 * len(wanted)
    for i, _day in enumerate(days):
        raw, counted = replies[i * step], replies[i * step + 1: (i + 1) * step]
        figures = Figures()
        metrics: dict[str, int] = defaultdict(int)
        for name, value in (raw or {}).items():
            channel, _, metric = _text(name).partition(":")
            if channel in wanted:
                metrics[metric] += _int(value)
        figures.add_fields(metrics)
        figures.conversations = sum(_int(n) for n in counted[0::2])
        figures.conversations_with_human = sum(_int(n) for n in counted[1::2])
        out.append(figures)
    return out

