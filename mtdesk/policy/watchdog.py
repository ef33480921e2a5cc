"""The connection watchdog: each connected channel's token and webhook subscription,
checked on a schedule, so a dead token or a dropped subscription is found before
customers' messages go unanswered.

What a caller may rely on, per connected channel, in each :meth:`ConnectionWatchdog.run`:

- Tokens of Facebook Login, Embedded Signup or pasted by hand: ``debug_token``. Not valid
  (or Graph error 190 on any call) → the channel is marked ``needs_reconnect`` with
  Meta's reason (status ``disconnected``: nothing is sent with a dead token; inbound
  messages are still recorded). An expiry less than :data:`WARN_DAYS` away → health
  ``expiring`` with the date, and a warning in the log (no token in it).
- Instagram Login tokens (60 days, refreshable): checked with ``/me``; refreshed (the new
  token stored encrypted) once less than :data:`REFRESH_DAYS` are left.
- The subscription: ``GET /{object}/subscribed_apps`` (the Page, the WhatsApp Business
  Account, or the Instagram account); when our app is missing it subscribes again.
- Other failures (Meta unreachable, 5xx) leave the channel as it was and count as
  ``errors``; the next run tries again.
- Counts go to ``keys.WATCHDOG_STATUS`` (totals, last run, channels per health);
  :class:`WatchdogCollector` exports them as ``mtdesk_watchdog_*`` on ``/metrics``.
- :func:`run_forever` is the loop the retention actor runs beside its sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import aiohttp
import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mtdesk.core import keys
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.errors import ConfigError, DecryptionError, GraphError
from mtdesk.core.redis import Redis, as_bytes_set, as_hash
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import CONNECTED, ChannelRecord, Channels, channel_token_aad
from mtdesk.policy.meta_accounts import MESSAGING_FIELDS, MetaAccounts
from mtdesk.policy.vault import TokenVault

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
WARN_DAYS = 7
REFRESH_DAYS = 14
HEALTHS = ("ok", "expiring", "needs_reconnect")


class WatchdogReport(msgspec.Struct, kw_only=True):
    checked: int = 0
    resubscribed: int = 0
    refreshed: int = 0
    needs_reconnect: int = 0
    expiring: int = 0
    errors: int = 0
    health: dict[str, int] = msgspec.field(default_factory=dict)


# The report's counters, as /metrics and the status hash name them (every field but health).
COUNTERS = tuple(name for name in WatchdogReport.__struct_fields__ if name != "health")


class _Dead(Exception):
    """The token is dead: the reason is the message."""


class ConnectionWatchdog:
    def __init__(self, redis: Redis, settings: Settings, clock: Clock, meta: MetaAccounts,
                 vault: TokenVault) -> None:
        self._redis = redis
        self._clock = clock
        self._meta = meta
        self._vault = vault
        self._channels = Channels(redis, clock, vault.encrypt)

    async def run(self) -> WatchdogReport:
        report = WatchdogReport()
        tenants = sorted(t.decode() for t in as_bytes_set(await self._redis.smembers(keys.TENANTS)))
        for tid in tenants:
            for record in await self._channels.list(tid):
                if record.status != CONNECTED:
                    if record.health == "needs_reconnect":
                        report.health["needs_reconnect"] = (
                            report.health.get("needs_reconnect", 0) + 1)
                    continue
                health = await self.check(record, report)
                report.health[health] = report.health.get(health, 0) + 1
        await self._record(report)
        log.info("connection watchdog: checked=%d resubscribed=%d refreshed=%d "
                 "needs_reconnect=%d expiring=%d errors=%d", report.checked,
                 report.resubscribed, report.refreshed, report.needs_reconnect,
                 report.expiring, report.errors)
        return report

    async def check(self, record: ChannelRecord, report: WatchdogReport) -> str:
        """Check one connected channel; its health afterwards."""
        report.checked += 1
        tid, cid = record.tenant_id, record.id
        sealed = await self._channels.token_ciphertext(tid, cid)
        try:
            if not sealed:
                raise _Dead("no token is stored; connect the account again")
            token = self._vault.decrypt(sealed, channel_token_aad(tid, cid))
        except DecryptionError:
            report.errors += 1
            log.warning("watchdog: the token of %s/%s cannot be opened with the configured "
                        "keys", tid, cid)
            return record.health or "ok"
        except _Dead as dead:
            return await self._mark_dead(record, str(dead), report)
        try:
            if record.token_source == "instagram_login":
                health, reason = await self._instagram(record, token, report)
            else:
                health, reason = await self._graph(record, token, report)
        except _Dead as dead:
            return await self._mark_dead(record, str(dead), report)
        except GraphError as exc:
            if exc.code == 190:
                return await self._mark_dead(record, f"Meta: {exc}", report)
            report.errors += 1
            log.warning("watchdog: %s/%s not checked (Graph error %d)", tid, cid, exc.code)
            return record.health or "ok"
        fields: dict[str, str | int] = {"health": health, "health_reason": reason,
                                        "checked_ms": now_ms(self._clock)}
        await self._channels.set_connection(tid, cid, fields)
        return health

    async def _mark_dead(self, record: ChannelRecord, reason: str,
                         report: WatchdogReport) -> str:
        report.needs_reconnect += 1
        log.warning("watchdog: %s %s of tenant %s needs to be connected again",
                    record.channel, record.account_id, record.tenant_id)
        await self._channels.mark_token_invalid(record.tenant_id, record.id, reason)
        await self._channels.set_connection(record.tenant_id, record.id,
                                            {"checked_ms": now_ms(self._clock)})
        return "needs_reconnect"

    def _expiry(self, record: ChannelRecord, expires_ms: int | None,
                report: WatchdogReport) -> tuple[str, str]:
        if not expires_ms:
            return "ok", ""
        left = expires_ms - now_ms(self._clock)
        if left >= WARN_DAYS * DAY_MS:
            return "ok", ""
        report.expiring += 1
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_ms / 1000))
        log.warning("watchdog: the token of %s %s (tenant %s) expires %s", record.channel,
                    record.account_id, record.tenant_id, when)
        return "expiring", f"the access token expires {when}; connect the account again before"

    async def _graph(self, record: ChannelRecord, token: Secret,
                     report: WatchdogReport) -> tuple[str, str]:
        info = await self._meta.debug_token(token)
        if not info.is_valid:
            raise _Dead(f"Meta: {info.error_message or 'the access token is no longer valid'}")
        expires_ms = info.expires_at * 1000 if info.expires_at else None
        if expires_ms != record.token_expires_ms and expires_ms:
            await self._channels.set_connection(record.tenant_id, record.id,
                                                {"token_expires_ms": expires_ms})
        target = record.subscription_id or (
            record.account_id if record.channel == "messenger" else None)
        if target is not None and not await self._meta.subscribed(target, token):
            fields = None if record.channel == "whatsapp" else MESSAGING_FIELDS
            await self._meta.subscribe(target, token, fields=fields)
            report.resubscribed += 1
            log.warning("watchdog: Meta had dropped the webhook subscription of %s %s; "
                        "subscribed again", record.channel, record.account_id)
        return self._expiry(record, expires_ms, report)

    async def _instagram(self, record: ChannelRecord, token: Secret,
                         report: WatchdogReport) -> tuple[str, str]:
        await self._meta.instagram_me(token)  # 190 when dead
        expires_ms = record.token_expires_ms
        if expires_ms and expires_ms - now_ms(self._clock) < REFRESH_DAYS * DAY_MS:
            try:
                fresh = await self._meta.instagram_refresh(token)
            except GraphError as exc:
                if exc.code == 190:
                    raise
                log.warning("watchdog: refreshing the Instagram token of %s failed (error %d)",
                            record.account_id, exc.code)
            else:
                token = fresh.token
                expires_ms = (now_ms(self._clock) + fresh.expires_in * 1000
                              if fresh.expires_in else None)
                await self._channels.store_token(record.tenant_id, record.id, token)
                await self._channels.set_connection(
                    record.tenant_id, record.id,
                    {"token_expires_ms": expires_ms} if expires_ms else {})
                report.refreshed += 1
        if not await self._meta.instagram_subscribed(token):
            await self._meta.instagram_subscribe(token)
            report.resubscribed += 1
        return self._expiry(record, expires_ms, report)

    async def _record(self, report: WatchdogReport) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in COUNTERS:
                value = getattr(report, name)
                if value:
                    pipe.hincrby(keys.WATCHDOG_STATUS, name, value)
            for health in HEALTHS:
                pipe.hset(keys.WATCHDOG_STATUS, f"channels:{health}",
                          report.health.get(health, 0))
            pipe.hset(keys.WATCHDOG_STATUS, "last_run_ms", now_ms(self._clock))
            await pipe.execute()


async def run_forever(redis: Redis, settings: Settings, clock: Clock,
                      stop: asyncio.Event) -> None:
    """Run the watchdog every ``MTDESK_WATCHDOG_INTERVAL_S`` until ``stop``; without the
    Meta app settings or the encryption keys it says so once and waits for ``stop``."""
    interval = settings.accounts.watchdog_interval_s
    async with aiohttp.ClientSession() as http:
        try:
            watchdog = ConnectionWatchdog(redis, settings, clock,
                                          MetaAccounts.from_settings(http, settings),
                                          TokenVault.from_settings(settings))
        except ConfigError as exc:
            log.info("connection watchdog off: %s %s", exc.variable, exc.problem)
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await watchdog.run()
            except Exception:  # a failed run is retried next time, the loop stays up
                log.exception("connection watchdog run failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


class WatchdogCollector(Collector):
    """Prometheus view of ``keys.WATCHDOG_STATUS``; await :meth:`refresh` first."""

    def __init__(self) -> None:
        self._raw: dict[bytes, bytes] = {}

    async def refresh(self, redis: Redis) -> None:
        self._raw = as_hash(await redis.hgetall(keys.WATCHDOG_STATUS))

    def _n(self, name: str) -> float:
        try:
            return float(self._raw.get(name.encode(), b"0"))
        except ValueError:
            return 0.0

    def collect(self) -> Iterator[Metric]:
        channels = GaugeMetricFamily(
            "mtdesk_watchdog_channels", "Channels by health at the watchdog's last run",
            labels=["health"])
        for health in HEALTHS:
            channels.add_metric([health], self._n(f"channels:{health}"))
        yield channels
        for name, text in (("resubscribed", "Webhook subscriptions made again"),
                           ("refreshed", "Instagram Login tokens refreshed"),
                           ("needs_reconnect", "Channels marked needs_reconnect"),
                           ("expiring", "Checks that found a token expiring within 7 days"),
                           ("errors", "Checks that could not complete")):
            counter = CounterMetricFamily(f"mtdesk_watchdog_{name}", text)
            counter.add_metric([], self._n(name))
            yield counter
        last = GaugeMetricFamily("mtdesk_watchdog_last_run_timestamp_seconds",
                                 "When the connection watchdog last ran")
        last.add_metric([], self._n("last_run_ms") / 1000)
        yield last
