"""The Graph sender against the fake Graph API: channels, splitting, retries, 190, resume."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from mtdesk.actors.ratelimit import SendRateLimiter
from mtdesk.actors.sender import GraphSender, SenderMetrics
from mtdesk.channels.outbound import split_text
from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import GraphError, NotFound
from mtdesk.core.events import Channel
from mtdesk.core.ports import ChannelCredentials, OutboundMessage
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.fakes.graph import FakeGraphAPI

TOKEN = "EAAB-page-token"


class MemoryCredentials:
    """Our CredentialSource interface, kept in memory for the test."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.disconnected: list[tuple[str, str, str]] = []

    async def credentials(self, channel: Channel, account_id: str) -> ChannelCredentials:
        if account_id not in self.tokens:
            raise NotFound(account_id)
        return ChannelCredentials(tenant_id="t1", channel_id="c1", channel=channel,
                                  account_id=account_id, access_token=Secret(self.tokens[account_id]))

    async def mark_disconnected(self, channel: Channel, account_id: str, reason: str) -> None:
        self.disconnected.append((channel, account_id, reason))


class Delays:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphAPI]:
    async with FakeGraphAPI() as g:
        for account, channel in (("PAGE1", "messenger"), ("IG1", "instagram"), ("PN1", "whatsapp")):
            g.register(account, TOKEN, channel=channel)
        yield g


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_sender(graph: FakeGraphAPI, session: aiohttp.ClientSession, creds: MemoryCredentials,
                limiter: SendRateLimiter | None = None, registry: CollectorRegistry | None = None,
                delays: Delays | None = None) -> GraphSender:
    return GraphSender(Settings(graph_api_base=graph.base_url), creds, limiter, session,
                       sleep=delays or Delays(), base_delay_s=0.01, max_attempts=4,
                       metrics=SenderMetrics(registry or CollectorRegistry()))


def creds() -> MemoryCredentials:
    return MemoryCredentials({"PAGE1": TOKEN, "IG1": TOKEN, "PN1": TOKEN})


def msg(channel: Channel = "messenger", account: str = "PAGE1", text: str = "Hello!", **kw: object) -> OutboundMessage:
    return OutboundMessage(tenant_id="t1", channel=channel, account_id=account, user_id=kw.pop("user_id", "U1"),  # type: ignore[arg-type]
                           text=text, reply_key="mid.in1", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("channel, account", [("messenger", "PAGE1"), ("instagram", "IG1")])
async def test_page_channels_send_a_response_with_metadata_and_bearer(
        graph: FakeGraphAPI, session: aiohttp.ClientSession, channel: Channel, account: str) -> None:
    result = await make_sender(graph, session, creds()).send(msg(channel, account))
    [sent] = graph.sends
    assert sent.account_id == account and sent.token == TOKEN
    assert sent.body["recipient"] == {"id": "U1"} and sent.body["messaging_type"] == "RESPONSE"
    assert sent.body["message"] == {"text": "Hello!", "metadata": "mtdesk:mid.in1#0"}
    assert result.message_ids == (sent.message_id,)


async def test_whatsapp_sends_to_wa_id_or_to_the_business_scoped_user(
        graph: FakeGraphAPI, session: aiohttp.ClientSession) -> None:
    sender = make_sender(graph, session, creds())
    r1 = await sender.send(msg("whatsapp", "PN1", user_id="US.9", wa_id="447700", reply_to="wamid.IN"))
    r2 = await sender.send(msg("whatsapp", "PN1", user_id="US.9"))
    first, second = graph.sends
    assert first.body["to"] == "447700" and first.body["context"] == {"message_id": "wamid.IN"}
    assert second.body["recipient"] == "US.9" and "to" not in second.body
    assert second.body["text"]["body"] == "Hello!" and second.body["messaging_product"] == "whatsapp"
    assert r1.message_ids[0].startswith("wamid.") and r2.message_ids[0] != r1.message_ids[0]


@pytest.mark.parametrize("channel, account, text, parts", [
    ("messenger", "PAGE1", "Sentence one is here. " * 200, 3),
    ("instagram", "IG1", "Ça coûte très cher. " * 120, 3),
    ("whatsapp", "PN1", "Word " * 2000, 3),
])
async def test_long_replies_arrive_in_order_as_parts_meta_accepts(
        graph: FakeGraphAPI, session: aiohttp.ClientSession, channel: Channel, account: str,
        text: str, parts: int) -> None:
    seen: list[tuple[int, str]] = []

    async def progress(index: int, message_id: str) -> None:
        seen.append((index, message_id))

    message = msg(channel, account, text, wa_id="1" if channel == "whatsapp" else None)
    async for index, message_id in make_sender(graph, session, creds()).deliver(
            message, split_text(channel, text)):
        await progress(index, message_id)
    assert len(graph.sends) == parts and len(graph.attempts) == parts  # the fake refused none
    assert " ".join(s.text or "" for s in graph.sends).split() == text.split()
    assert seen == list(enumerate(s.message_id for s in graph.sends))


@pytest.mark.parametrize("code, status", [(613, 400), (130429, 400), (0, 503), (2, 500)])
async def test_retriable_errors_are_retried_with_backoff_then_succeed(
        graph: FakeGraphAPI, session: aiohttp.ClientSession, code: int, status: int) -> None:
    graph.fail_next("PAGE1", code, http_status=status, times=2)
    delays = Delays()
    registry = CollectorRegistry()
    result = await make_sender(graph, session, creds(), registry=registry, delays=delays).send(msg())
    assert len(graph.attempts) == 3 and len(graph.sends) == 1
    assert result.message_ids == (graph.sends[0].message_id,)
    assert len(delays.slept) == 2 and 0 < delays.slept[0] and delays.slept[0] <= 0.01
    assert delays.slept[1] <= 0.02
    assert registry.get_sample_value("mtdesk_graph_errors_total",
                                     {"channel": "messenger", "code": str(code)}) == 2
    assert registry.get_sample_value("mtdesk_sends_total", {"channel": "messenger", "outcome": "sent"}) == 1


async def test_retries_are_bounded(graph: FakeGraphAPI, session: aiohttp.ClientSession) -> None:
    graph.fail_next("PAGE1", 613, times=100)
    with pytest.raises(GraphError) as info:
        await make_sender(graph, session, creds()).send(msg())
    assert info.value.code == 613 and len(graph.attempts) == 4 and graph.sends == []


@pytest.mark.parametrize("code", [100, 131047, 10, 551])
async def test_permanent_errors_raise_after_exactly_one_request(
        graph: FakeGraphAPI, session: aiohttp.ClientSession, code: int) -> None:
    account = "PN1" if code == 131047 else "PAGE1"
    channel: Channel = "whatsapp" if code == 131047 else "messenger"
    graph.fail_next(account, code)
    c = creds()
    with pytest.raises(GraphError) as info:
        await make_sender(graph, session, c).send(msg(channel, account, wa_id="1"))
    assert info.value.code == code and not info.value.retriable
    assert len(graph.attempts) == 1 and c.disconnected == []


async def test_revoked_token_marks_the_channel_disconnected_and_is_not_retried(
        graph: FakeGraphAPI, session: aiohttp.ClientSession) -> None:
    c = MemoryCredentials({"PAGE1": "expired-token"})
    registry = CollectorRegistry()
    with pytest.raises(GraphError) as info:
        await make_sender(graph, session, c, registry=registry).send(msg())
    assert info.value.code == 190 and len(graph.attempts) == 1
    assert [(ch, acct) for ch, acct, _ in c.disconnected] == [("messenger", "PAGE1")]
    assert "expired-token" not in repr(info.value) and "expired-token" not in c.disconnected[0][2]
    assert registry.get_sample_value("mtdesk_channel_disconnects_total", {"channel": "messenger"}) == 1


async def test_resume_with_already_sent_skips_parts_meta_accepted(
        graph: FakeGraphAPI, session: aiohttp.ClientSession) -> None:
    text = "Part of a long answer. " * 250  # 3 parts on Messenger
    graph.fail_next("PAGE1", 100, times=1)  # the first try dies... after 0 parts
    sender = make_sender(graph, session, creds())
    progress: list[int] = []

    async def record(index: int, message_id: str) -> None:
        progress.append(index)
        if index == 0:  # the second part will be refused for good: simulate a crash there
            graph.fail_next("PAGE1", 100, times=1)

    parts = split_text("messenger", text)

    async def deliver(start: int) -> list[str]:
        sent = []
        async for index, message_id in sender.deliver(msg(text=text), parts, start=start):
            await record(index, message_id)
            sent.append(message_id)
        return sent

    with pytest.raises(GraphError):
        await sender.send(msg(text=text))
    with pytest.raises(GraphError) as info:
        await deliver(0)
    assert progress == [0] and info.value.parts_sent == 1
    sent = await deliver(len(progress))
    assert progress == [0, 1, 2] and len(sent) == 2
    metas = [s.body["message"]["metadata"] for s in graph.sends]
    assert metas == ["mtdesk:mid.in1#0", "mtdesk:mid.in1#1", "mtdesk:mid.in1#2"]
    assert await deliver(3) == [] and len(graph.sends) == 3


async def test_rate_limit_is_shared_by_two_senders_through_redis(
        graph: FakeGraphAPI, session: aiohttp.ClientSession, redis: Redis) -> None:
    clock = FakeClock(1_750_000_000.25)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # moving the shared clock stands in for waiting
        slept.append(seconds)
        clock.advance(seconds)

    settings = Settings(graph_api_base=graph.base_url, page_sends_per_s=3)
    senders = [
        GraphSender(settings, creds(), SendRateLimiter(redis, settings, clock=clock, sleep=sleep),
                    session, metrics=SenderMetrics(CollectorRegistry()))
        for _ in range(2)
    ]
    for i in range(5):
        await senders[i % 2].send(msg(text=f"reply {i}"))
    start = 1_750_000_000
    used = [await redis.get(keys.rate("messenger", "PAGE1", start + k)) for k in range(3)]
    assert used == [b"3", b"2", None]
    assert len(graph.sends) == 5 and slept  # the fourth send waited for the next second
    assert await redis.ttl(keys.rate("messenger", "PAGE1", start)) > 0


async def test_whatsapp_has_its_own_limit_and_can_be_raised(redis: Redis) -> None:
    clock = FakeClock(100.0)
    limiter = SendRateLimiter(redis, Settings(whatsapp_mps=2), clock=clock)
    grants = [await limiter.try_acquire("whatsapp", "PN1") for _ in range(3)]
    assert grants == [True, True, False]
    assert await limiter.try_acquire("messenger", "PN1")  # another channel, another counter
    limiter.set_limit("whatsapp", "PN1", 1000)
    assert limiter.limit("whatsapp", "PN1") == 1000 and await limiter.try_acquire("whatsapp", "PN1")


async def test_whatsapp_media_is_fetched_with_the_token_both_times(
        graph: FakeGraphAPI, session: aiohttp.ClientSession) -> None:
    graph.add_media("MID1", b"voice-note-bytes", "audio/ogg", account_id="PN1")
    c = creds()
    sender = make_sender(graph, session, c)
    good = await c.credentials("whatsapp", "PN1")
    assert await sender.fetch_media(good, "MID1") == b"voice-note-bytes"
    bad = ChannelCredentials(tenant_id="t1", channel_id="c1", channel="whatsapp",
                             account_id="PN1", access_token=Secret("revoked"))
    with pytest.raises(GraphError) as info:
        await sender.fetch_media(bad, "MID1")
    assert info.value.code == 190 and c.disconnected[0][:2] == ("whatsapp", "PN1")
    with pytest.raises(GraphError) as info:
        await sender.fetch_media(good, "NOPE")
    assert info.value.code == 100


async def test_network_failure_is_retried_then_reported(session: aiohttp.ClientSession) -> None:
    async with FakeGraphAPI() as g:
        dead_base = g.base_url  # the server stops when the block ends: nothing listens
    sender = GraphSender(Settings(graph_api_base=dead_base), creds(), None, session,
                         sleep=Delays(), max_attempts=2, metrics=SenderMetrics(CollectorRegistry()))
    with pytest.raises(GraphError) as info:
        await sender.send(msg())
    assert info.value.code == 0 and info.value.retriable


async def test_a_graph_api_slower_than_the_timeout_is_a_retriable_failure(session: aiohttp.ClientSession) -> None:
    async with FakeGraphAPI(latency_s=30.0) as slow:
        sender = GraphSender(Settings(graph_api_base=slow.base_url), creds(), None, session,
                             sleep=Delays(), max_attempts=1, request_timeout_s=0.2,
                             metrics=SenderMetrics(CollectorRegistry()))
        with pytest.raises(GraphError) as info:
            await sender.send(msg())
    assert info.value.code == 0 and info.value.retriable and "Timeout" in str(info.value)


async def test_concurrent_shards_never_grant_more_than_the_limit_in_a_window(redis: Redis) -> None:
    clock = FakeClock(500.5)
    settings = Settings(page_sends_per_s=10)
    shards = [SendRateLimiter(redis, settings, clock=clock) for _ in range(2)]
    grants = await asyncio.gather(*(shards[i % 2].try_acquire("messenger", "PAGE1") for i in range(50)))
    assert sum(grants) == 10
    assert await redis.get(keys.rate("messenger", "PAGE1", 500)) == b"10"


async def test_tokens_and_message_text_stay_out_of_the_logs(
        graph: FakeGraphAPI, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sender = make_sender(graph, session, creds())
    await sender.send(msg(text="my secret order 12345"))
    graph.fail_next("PAGE1", 613)
    await sender.send(msg(text="my secret order 12345"))
    with pytest.raises(GraphError):
        await make_sender(graph, session, MemoryCredentials({"PAGE1": "bad-token"})).send(
            msg(text="my secret order 12345"))
    assert caplog.records  # the sender did log what happened
    assert TOKEN not in caplog.text and "bad-token" not in caplog.text
    assert "secret order" not in caplog.text
