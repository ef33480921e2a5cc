"""Plans, a tenant's billing state, and the monthly allowance of answered messages.

What a caller may rely on:

- A **plan** has a monthly allowance of answered messages (``None`` = unlimited).
  Built in: ``free`` 1,000, ``starter`` 10,000, ``growth`` 100,000, ``scale`` unlimited
  (:data:`PLANS`). A Stripe price picks its plan by ``metadata.mtdesk_plan`` or its
  ``lookup_key``; ``metadata.mtdesk_monthly_messages`` (a number or ``unlimited``)
  overrides the allowance. A price naming no known plan gets the ``starter`` allowance
  (the customer pays: never fewer messages than the smallest paid plan).
- With billing **off** (no ``MTDESK_STRIPE_API_KEY``) every tenant is unlimited; usage is
  still counted so operators can see it (the shards count it in memory and write it
  every second with their analytics, :func:`usage_counter`: no command per message). With billing **on**, a tenant without an entitled
  subscription (status ``active``, ``trialing`` or ``past_due``) is on ``free``.
- Usage is counted per calendar month in UTC (``keys.usage(tenant, "YYYYMM")``); a new
  month starts at zero. Counters expire ~40 days after their month ends.
- :func:`try_consume` is ONE Redis round trip (a Lua script, run by its SHA): it reads the tenant's
  allowance and increments this month's counter only if ``n`` more fit; a request that
  does not fit entirely consumes nothing.
- The billing state lives in the hash ``keys.billing(tenant)`` (under ``mt:t:{tenant}:``);
  the global index ``keys.stripe_customer(customer)`` maps a Stripe customer to its tenant.
  Account deletion must also delete that index key (its name is in the hash's ``customer``).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple

import msgspec
from redis.exceptions import WatchError

from mtdesk.core import keys
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.redis import UNAVAILABLE, HashFields, Redis, as_hash, as_opt_bytes
from mtdesk.core.scripts import LuaScript

UNLIMITED: Final = -1  # how "no limit" is stored in the billing hash and passed to Lua
_USAGE_GRACE_S: Final = 40 * 24 * 3600  # a month's counter outlives the month by this much


class Plan(msgspec.Struct, frozen=True):
    name: str
    monthly_messages: int | None  # None = unlimited


PLANS: Final[dict[str, Plan]] = {
    "free": Plan("free", 1_000),
    "starter": Plan("starter", 10_000),
    "growth": Plan("growth", 100_000),
    "scale": Plan("scale", None),
}
FREE: Final = PLANS["free"]
UNBILLED: Final = Plan("unlimited", None)  # every tenant when billing is off
# Stripe keeps serving during dunning (past_due) until it gives up and cancels: so do we.
ENTITLED_STATUSES: Final = frozenset({"active", "trialing", "past_due"})


def resolve_plan(price_id: str, lookup_key: str | None, metadata: dict[str, str]) -> Plan:
    """The plan a Stripe price stands for (see the module docstring for the rules)."""
    name = (metadata.get("mtdesk_plan") or lookup_key or "").strip().lower()
    base = PLANS.get(name)
    allowance: int | None = base.monthly_messages if base else PLANS["starter"].monthly_messages
    raw = metadata.get("mtdesk_monthly_messages", "").strip().lower()
    if raw == "unlimited":
        allowance = None
    elif raw.isascii() and raw.isdigit() and len(raw) <= 15:
        allowance = int(raw)
    return Plan(base.name if base else (name or price_id or "paid"), allowance)


# --- months -------------------------------------------------------------------------------
def month_of(now_ms: int) -> str:
    """``YYYYMM`` of the UTC calendar month containing ``now_ms``."""
    d = datetime.fromtimestamp(now_ms / 1000, UTC)
    return f"{d.year:04d}{d.month:02d}"


def next_month_start_ms(now_ms: int) -> int:
    """When the month containing ``now_ms`` ends (UTC midnight of the 1st of the next)."""
    d = datetime.fromtimestamp(now_ms / 1000, UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


# --- usage --------------------------------------------------------------------------------
class QuotaDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of :func:`try_consume` (or the state read by :func:`read_usage`)."""

    allowed: bool
    used: int  # this month's count after the call (unchanged when not allowed)
    limit: int | None  # None = unlimited
    month: str  # YYYYMM (UTC)
    resets_at_ms: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)


# A Lua function, so other scripts (the shards' admission script) can consume in the
# same round trip as their own checks: mt_consume(billing key, usage key, n (number),
# ttl_s, enforce ('1'|'0'), default allowance) -> {allowed 1|0, used, limit (-1 = none)}.
CONSUME_LUA_FUNCTION: Final = """
local function mt_consume(billing, usage, n, ttl, enforce, default)
  local limit = -1
  if enforce == '1' then
    local a = redis.call('HGET', billing, 'allowance')
    limit = tonumber(a or default) or tonumber(default)
  end
  if n <= 0 then
    return {1, tonumber(redis.call('GET', usage) or '0'), limit}
  end
  -- Counted first (one command, not a read and a write); taken back when it does not
  -- fit, so a refused request consumes nothing. The expiry is set with the month's
  -- first count: every call of a month gives the same deadline.
  local used = redis.call('INCRBY', usage, n)
  if limit >= 0 and used > limit then
    if used == n then redis.call('DEL', usage) else redis.call('DECRBY', usage, n) end
    return {0, used - n, limit}
  end
  if used == n then redis.call('EXPIRE', usage, ttl) end
  return {1, used, limit}
end
"""

# KEYS: billing hash, usage counter. ARGV: n, ttl_s, enforce (1|0), default allowance.
# Run by its SHA (EVALSHA: the text is sent only when Redis does not have it yet).
_CONSUME: Final = LuaScript(CONSUME_LUA_FUNCTION + """
return mt_consume(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4])
""", name="consume")


class ConsumeCall(NamedTuple):
    """The keys and arguments of one consume for month ``month`` (see
    :data:`CONSUME_LUA_FUNCTION`); :func:`decision_of` reads its reply."""

    keys: tuple[str, str]  # billing hash, usage counter
    args: tuple[int, int, int, int]  # n, ttl_s, enforce (1|0), default allowance
    month: str
    resets_at_ms: int


def consume_call(tenant_id: str, n: int, *, now_ms: int, enforce: bool) -> ConsumeCall:
    """What a script must pass to ``mt_consume`` to count ``n`` messages at ``now_ms``."""
    month = month_of(now_ms)
    resets = next_month_start_ms(now_ms)
    ttl_s = max(1, (resets - now_ms) // 1000 + _USAGE_GRACE_S)
    free = FREE.monthly_messages if FREE.monthly_messages is not None else UNLIMITED
    return ConsumeCall((keys.billing(tenant_id), keys.usage(tenant_id, month)),
                       (n, ttl_s, 1 if enforce else 0, free), month, resets)


def usage_counter(tenant_id: str, *, now_ms: int) -> tuple[str, int]:
    """This month's usage counter and when it expires (epoch seconds): what a caller
    that counts without enforcing (billing off) adds to, e.g. the shards' tally."""
    resets = next_month_start_ms(now_ms)
    return keys.usage(tenant_id, month_of(now_ms)), resets // 1000 + _USAGE_GRACE_S


def decision_of(call: ConsumeCall, reply: Sequence[int]) -> QuotaDecision:
    """The decision ``mt_consume``'s reply stands for."""
    allowed, used, limit = reply
    return QuotaDecision(
        allowed=bool(allowed), used=int(used), limit=None if int(limit) < 0 else int(limit),
        month=call.month, resets_at_ms=call.resets_at_ms,
    )


async def _run_consume(
    redis: Redis, tenant_id: str, n: int, now_ms: int, enforce: bool
) -> QuotaDecision:
    call = consume_call(tenant_id, n, now_ms=now_ms, enforce=enforce)
    try:
        reply = await _CONSUME.run(redis, call.keys, call.args)
    except UNAVAILABLE as exc:
        raise StoreUnavailable("Redis does not answer (quota)") from exc
    return decision_of(call, reply)


async def try_consume(
    redis: Redis, tenant_id: str, n: int = 1, *, now_ms: int, enforce: bool = True
) -> QuotaDecision:
    """Count ``n`` answered messages against this month's allowance, if they fit.

    ``enforce``: pass ``settings.billing_enabled``; when False the count still grows but
    nothing is ever refused (billing off = unlimited). Raises StoreUnavailable when Redis
    cannot be reached (the caller retries the message; nothing was counted).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    return await _run_consume(redis, tenant_id, n, now_ms, enforce)


async def read_usage(redis: Redis, tenant_id: str, *, now_ms: int, enforce: bool = True) -> QuotaDecision:
    """This month's usage and allowance, changing nothing (``allowed``: one more fits)."""
    state = await _run_consume(redis, tenant_id, 0, now_ms, enforce)
    fits = state.limit is None or state.used < state.limit
    return msgspec.structs.replace(state, allowed=fits)


# --- billing state ------------------------------------------------------------------------
class BillingAccount(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's billing hash, decoded. Empty strings mean "none yet"."""

    customer: str = ""
    subscription: str = ""
    plan: str = FREE.name
    status: str = ""  # Stripe's subscription status, or "" before any subscription
    allowance: int | None = FREE.monthly_messages
    price: str = ""
    current_period_end_s: int = 0
    cancel_at_period_end: bool = False
    sub_event_created: int = 0  # Stripe ``created`` of the last subscription event applied
    updated_ms: int = 0

    @property
    def subscribed(self) -> bool:
        return bool(self.subscription) and self.status in ENTITLED_STATUSES


def _text(raw: dict[bytes, bytes], name: str) -> str:
    return raw.get(name.encode(), b"").decode("utf-8", "replace")


def _int(raw: dict[bytes, bytes], name: str, default: int) -> int:
    try:
        return int(raw[name.encode()])
    except (KeyError, ValueError):
        return default


async def load_account(redis: Redis, tenant_id: str) -> BillingAccount:
    """The tenant's billing state (defaults: free plan, no customer)."""
    raw = as_hash(await redis.hgetall(keys.billing(tenant_id)))
    free = FREE.monthly_messages if FREE.monthly_messages is not None else UNLIMITED
    allowance = _int(raw, "allowance", free)
    return BillingAccount(
        customer=_text(raw, "customer"),
        subscription=_text(raw, "subscription"),
        plan=_text(raw, "plan") or FREE.name,
        status=_text(raw, "status"),
        allowance=None if allowance < 0 else allowance,
        price=_text(raw, "price"),
        current_period_end_s=_int(raw, "current_period_end_s", 0),
        cancel_at_period_end=_text(raw, "cancel_at_period_end") == "1",
        sub_event_created=_int(raw, "sub_event_created", 0),
        updated_ms=_int(raw, "updated_ms", 0),
    )


async def tenant_of_customer(redis: Redis, customer_id: str) -> str | None:
    raw = as_opt_bytes(await redis.get(keys.stripe_customer(customer_id)))
    return raw.decode() if raw else None


async def link_customer(
    redis: Redis, tenant_id: str, customer_id: str, *, now_ms: int, subscription: str = ""
) -> None:
    """Record that ``customer_id`` (and optionally a subscription) belongs to the tenant."""
    fields: HashFields = {"customer": customer_id, "updated_ms": now_ms}
    if subscription:
        fields["subscription"] = subscription
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.billing(tenant_id), mapping=fields)
    pipe.set(keys.stripe_customer(customer_id), tenant_id)
    await pipe.execute()


class SubscriptionChange(msgspec.Struct, frozen=True, kw_only=True):
    """One customer.subscription.* event, reduced to what the tenant's plan depends on."""

    subscription: str
    customer: str
    status: str
    plan: Plan
    price: str
    current_period_end_s: int
    cancel_at_period_end: bool
    event_created: int  # Stripe's event ``created`` (seconds): orders events
    deleted: bool = False


def _stale(account: BillingAccount, change: SubscriptionChange) -> str:
    """Why this change must not be applied ('' = apply it). Stripe does not deliver
    events in order, and a tenant may have an old subscription ending after a new one."""
    if account.subscription and change.subscription != account.subscription:
        # Another subscription's news: only a live one may take over.
        return "" if change.status in ENTITLED_STATUSES and not change.deleted else "other subscription"
    if change.event_created < account.sub_event_created:
        return "older than the state"
    if (change.event_created == account.sub_event_created and account.status == "canceled"
            and not change.deleted):
        return "already deleted"  # same second: deletion is final
    return ""


async def apply_subscription(
    redis: Redis, tenant_id: str, change: SubscriptionChange, *, now_ms: int
) -> str:
    """Set the tenant's plan and status from a subscription event. Returns '' when
    applied, else why it was ignored. Atomic against concurrent events (WATCH)."""
    key = keys.billing(tenant_id)
    entitled = change.status in ENTITLED_STATUSES and not change.deleted
    plan = change.plan if entitled else FREE
    status = "canceled" if change.deleted else change.status
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                account = await load_account(pipe, tenant_id)
                reason = _stale(account, change)
                if reason:
                    await pipe.unwatch()
                    return reason
                pipe.multi()
                pipe.hset(key, mapping={
                    "customer": change.customer or account.customer,
                    "subscription": change.subscription,
                    "plan": plan.name,
                    "status": status,
                    "allowance": UNLIMITED if plan.monthly_messages is None else plan.monthly_messages,
                    "price": change.price,
                    "current_period_end_s": change.current_period_end_s,
                    "cancel_at_period_end": 1 if change.cancel_at_period_end else 0,
                    "sub_event_created": change.event_created,
                    "updated_ms": now_ms,
                })
                if change.customer:
                    pipe.set(keys.stripe_customer(change.customer), tenant_id)
                await pipe.execute()
                return ""
            except WatchError:  # another event changed the hash meanwhile: read again
                continue
    raise StoreUnavailable("billing state kept changing; retry")


async def mark_past_due(redis: Redis, tenant_id: str, subscription: str, *, now_ms: int) -> str:
    """A failed invoice payment: status ``past_due`` (the plan stays: Stripe retries the
    payment and cancels the subscription when it gives up). '' when applied."""
    key = keys.billing(tenant_id)
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                account = await load_account(pipe, tenant_id)
                if subscription and account.subscription and subscription != account.subscription:
                    return "other subscription"
                if account.status == "canceled":
                    return "already deleted"
                pipe.multi()
                pipe.hset(key, mapping={"status": "past_due", "updated_ms": now_ms})
                await pipe.execute()
                return ""
            except WatchError:
                continue
    raise StoreUnavailable("billing state kept changing; retry")
