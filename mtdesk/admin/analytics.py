"""Analytics route: ``GET /admin/api/v1/analytics?from=YYYY-MM-DD&to=YYYY-MM-DD&channel=``.

Per day (UTC) and in total over the range: messages in, bot and human replies, hand-offs,
conversations answered and the automation rate (answered without a person), the bot's
median and p95 time to reply (from a histogram), failures by reason and LLM tokens;
``channel`` (messenger | instagram | whatsapp) narrows it to one channel, none adds them
up. ``to`` defaults to today, ``from`` to 29 days before ``to``; at most 366 days. Read
from the counters of :mod:`mtdesk.core.analytics` (one pipeline), never from history.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import tenant_scope
from mtdesk.core import analytics
from mtdesk.core.appkeys import CLOCK, REDIS
from mtdesk.core.clock import now_ms
from mtdesk.core.errors import ValidationError
from mtdesk.core.http import json_response

_DEFAULT_DAYS = 30


def _date(raw: str | None, name: str, default: dt.date) -> dt.date:
    if raw is None or raw == "":
        return default
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ValidationError(name, "must be a date as YYYY-MM-DD (UTC), e.g. 2026-05-31") from None


def _iso(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


async def get_analytics(request: web.Request) -> web.Response:
    tid = tenant_scope(request)
    today = dt.datetime.fromtimestamp(now_ms(request.config_dict[CLOCK]) / 1000, tz=dt.UTC).date()
    last = _date(request.query.get("to"), "to", today)
    first = _date(request.query.get("from"), "from", last - dt.timedelta(days=_DEFAULT_DAYS - 1))
    if first > last:
        raise ValidationError("from", "must not be after to")
    if (last - first).days + 1 > analytics.MAX_RANGE_DAYS:
        raise ValidationError("from", f"the range is at most {analytics.MAX_RANGE_DAYS} days")
    channel = request.query.get("channel") or None
    if channel is not None and channel not in analytics.CHANNELS:
        raise ValidationError("channel", "must be messenger, instagram or whatsapp (or empty)")
    days = analytics.days_between(first, last)
    figures = await analytics.read(request.config_dict[REDIS], tid, days,
                                   (channel,) if channel else analytics.CHANNELS)
    total = analytics.Figures()
    for one in figures:
        total.add(one)
    histogram: list[dict[str, int | None]] = [{"le_ms": bound, "replies": total.reply_times.get(f"rt:{bound}", 0)}
                 for bound in analytics.REPLY_BOUNDS_MS]
    histogram.append({"le_ms": None, "replies": total.reply_times.get("rt:inf", 0)})
    return json_response({
        "tenant_id": tid,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "channel": channel,
        "days": [{"day": _iso(day), **one.as_json()} for day, one in zip(days, figures, strict=True)],
        "totals": {**total.as_json(), "reply_time_histogram": histogram},
    })


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_get(f"{API_BASE}/analytics", get_analytics)
