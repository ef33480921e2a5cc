"""GET /admin/api/v1/analytics: a tenant's figures per day and in total from the counters
the shards keep; bad dates and channels are a 400 naming the field; the operator names
the tenant; another tenant's counts are never shown."""

from __future__ import annotations

import datetime as dt
from typing import Any

from admin_harness import bearer, client_fixture, op  # noqa: F401 - the `client` fixture
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from mtdesk.admin.analytics import _date
from mtdesk.core.analytics import Tally
from mtdesk.core.appkeys import CLOCK
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import ValidationError
from mtdesk.core.redis import Redis

Client = TestClient[web.Request, web.Application]
API = "/admin/api/v1"
# Today (counts expire 366 days after their day, by Redis's own clock): 09:00 UTC
TODAY = dt.datetime.now(dt.UTC).date()
DAY1 = int(dt.datetime(TODAY.year, TODAY.month, TODAY.day, 9, tzinfo=dt.UTC).timestamp() * 1000)
DAY0 = DAY1 - 86_400_000
D0, D1 = (TODAY - dt.timedelta(days=1)).isoformat(), TODAY.isoformat()


def _server_today(client: Client) -> None:
    """The server's (fake) clock at today's noon."""
    clock = client.app[CLOCK]
    assert isinstance(clock, FakeClock)
    clock.advance(DAY1 / 1000 + 3 * 3600 - clock.now())


async def _tenant(client: Client, name: str) -> tuple[str, str]:
    r = await client.post(f"{API}/tenants", json={"name": name, "email": f"o@{name}.example"},
                          headers=op())
    body = await r.json()
    return body["id"], body["api_key"]


async def _get(client: Client, query: str, headers: dict[str, str]) -> tuple[int, Any]:
    r = await client.get(f"{API}/analytics{query}", headers=headers)
    return r.status, await r.json()


async def test_the_figures_per_day_and_in_total(client: Client, redis: Redis) -> None:
    _server_today(client)
    tid, key = await _tenant(client, "acme")
    other, _ = await _tenant(client, "other")
    tally = Tally()
    for at, channel in ((DAY0, "messenger"), (DAY1, "messenger"), (DAY1, "messenger"),
                        (DAY1, "whatsapp")):
        tally.message_in(tid, channel, at)
    tally.bot_reply(tid, "messenger", DAY1, "messenger:1:U1", 1_500)
    tally.bot_reply(tid, "messenger", DAY1, "messenger:1:U2", 4_000)
    tally.bot_reply(tid, "whatsapp", DAY1, "whatsapp:1:W1", 25_000)
    tally.human_reply(tid, "messenger", DAY1, "messenger:1:U2", handoff=True)
    tally.failure(tid, "whatsapp", DAY1, "graph error 131026")
    tally.tokens(tid, "messenger", DAY1, 120, 30)
    tally.message_in(other, "messenger", DAY1)  # another tenant's
    await tally.flush(redis)

    status, body = await _get(client, f"?from={D0}&to={D1}", bearer(key))
    assert status == 200, body
    assert [d["day"] for d in body["days"]] == [D0, D1]
    day0, day1 = body["days"]
    assert day0["messages_in"] == 1 and day0["automation_rate"] is None
    assert (day1["messages_in"], day1["bot_replies"], day1["human_replies"],
            day1["handoffs"]) == (3, 3, 1, 1)
    # three conversations answered, one of them by a person
    assert (day1["conversations_answered"], day1["conversations_with_human"]) == (3, 1)
    assert day1["automation_rate"] == round(2 / 3, 4)
    assert 1_000 <= day1["reply_time_ms"]["median"] <= 5_000
    assert 20_000 <= day1["reply_time_ms"]["p95"] <= 30_000
    assert day1["failures"] == {"graph error 131026": 1}
    assert day1["llm_tokens"] == {"prompt": 120, "completion": 30, "total": 150}
    assert body["totals"]["messages_in"] == 4
    assert sum(b["replies"] for b in body["totals"]["reply_time_histogram"]) == 3

    # one channel
    status, only = await _get(client, f"?from={D1}&to={D1}&channel=whatsapp",
                              bearer(key))
    assert status == 200 and only["channel"] == "whatsapp"
    assert (only["totals"]["messages_in"], only["totals"]["bot_replies"]) == (1, 1)
    assert only["totals"]["failures"] == {"graph error 131026": 1}

    # no dates: the 30 days up to today (the server's clock)
    status, recent = await _get(client, "", bearer(key))
    assert status == 200 and len(recent["days"]) == 30 and recent["to"] == D1
    assert recent["totals"]["messages_in"] == 4

    # the operator names the tenant, and sees only that tenant's counts
    status, seen = await _get(client, f"?from={D1}&to={D1}&tenant_id={other}", op())
    assert status == 200 and seen["totals"]["messages_in"] == 1
    status, err = await _get(client, "", op())
    assert status == 400 and err["error"]["field"] == "tenant_id"


async def test_bad_dates_and_channels_are_400_naming_the_field(client: Client) -> None:
    _, key = await _tenant(client, "acme")
    for query, field in (("?from=2025-13-01", "from"), ("?to=yesterday", "to"),
                         ("?from=2025-6-1", "from"), ("?to=2025-02-30", "to"),
                         ("?from=2025-06-14&to=2025-06-13", "from"),
                         ("?from=2020-01-01&to=2025-06-13", "from"),
                         ("?channel=telegram", "channel")):
        status, body = await _get(client, query, bearer(key))
        assert status == 400, query
        assert body["error"]["field"] == field, query
        assert body["error"]["message"]
    assert (await client.get(f"{API}/analytics")).status == 401


@given(st.text(max_size=14))
@settings(max_examples=300, deadline=None)
def test_a_date_is_read_as_yyyy_mm_dd_or_refused_naming_the_field(raw: str) -> None:
    default = dt.date(2025, 1, 1)
    try:
        got = _date(raw, "from", default)
    except ValidationError as exc:
        assert exc.field == "from"
        return
    assert got == default if raw == "" else got.isoformat() == raw
