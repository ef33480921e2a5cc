"""A small world of two tenants with every kind of stored data, for the privacy tests,
and a dump of ALL of Redis and the data directory to search for identifiers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from mtdesk.core import keys
from mtdesk.core.analytics import Tally, day_of
from mtdesk.core.clock import Clock, now_ms
from mtdesk.core.events import Message, encode_event, partition_of
from mtdesk.core.history import MEDIA_KIND, MessageStore, StoredMessage
from mtdesk.core.media import MediaRecord, MediaStore
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels, Tenants
from mtdesk.core.users import Users
from mtdesk.gateway.ingest import dead_letter
from mtdesk.policy.vault import TokenVault, generate_key

PARTITIONS = 4


def make_settings(data_dir: Path, **extra: object) -> Settings:
    return Settings(
        partitions=PARTITIONS,
        data_dir=str(data_dir),
        encryption_keys=(Secret(generate_key()),),
        meta_app_secrets=(Secret("app-secret-now"), Secret("app-secret-before")),
        public_url="https://desk.example.com",
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class Person:
    channel: str
    account_id: str
    user_id: str
    text: str
    mid: str
    wa_id: str | None = None

    @property
    def conv(self) -> str:
        return f"{self.channel}:{self.account_id}:{self.user_id}"

    def identifiers(self) -> list[str]:
        return [self.user_id, self.text, self.mid, *( [self.wa_id] if self.wa_id else [])]


@dataclass
class Tenant:
    id: str
    api_key: Secret
    channels: dict[str, str] = field(default_factory=dict)  # account id -> channel id
    people: list[Person] = field(default_factory=list)


@dataclass
class World:
    a: Tenant
    b: Tenant
    alice: Person  # a, messenger
    carol: Person  # a, messenger, same page
    bob: Person  # a, whatsapp
    dave: Person  # b, messenger
    asid: str  # the Facebook user who connected a's Page
    tokens: dict[str, str]  # account id -> plaintext token
    data_dir: Path


async def store_conversation(
    redis: Redis, tenant_id: str, person: Person, at_ms: int, store: MessageStore
) -> None:
    inbound = StoredMessage(
        direction="in", message_id=person.mid, kind="message", channel=person.channel,
        account_id=person.account_id, user_id=person.user_id, timestamp_ms=at_ms,
        text=person.text,
    )
    await store.append(tenant_id, inbound, now_ms=at_ms)
    # A picture the person sent: its bytes (here their words, so a scan finds any copy
    # left behind) and the history's record of it.
    media = await MediaStore(redis).put(tenant_id, person.conv, person.mid, 0,
                                        f"JFIF {person.text}".encode(), "image/jpeg",
                                        now_ms=at_ms)
    # A second file of it whose download is being retried (listed with what to fetch).
    await MediaStore(redis).note_retry(tenant_id, person.conv, person.mid, 1,
                                       f"https://cdn.example/{person.text}".encode())
    await store.append(tenant_id, StoredMessage(
        direction="in", message_id=f"media:{person.mid}", kind=MEDIA_KIND,
        channel=person.channel, account_id=person.account_id, user_id=person.user_id,
        timestamp_ms=at_ms, reply_to=person.mid, status="recorded",
        media=(MediaRecord(index=0, type="image", mime_type="image/jpeg", size=media.size,
                           sha256=media.sha256, ref=media.ref),)), now_ms=at_ms)
    reply = StoredMessage(
        direction="out", message_id=f"gm_{person.mid}", kind="reply", channel=person.channel,
        account_id=person.account_id, user_id=person.user_id, timestamp_ms=at_ms + 1,
        text=f"answer for {person.text}", reply_to=person.mid, status="sent",
    )
    await store.append(tenant_id, reply, now_ms=at_ms + 1)
    if person.wa_id:  # WhatsApp: a message imported from the Business app, and the
        # number's business-scoped id (imported history keyed by the number joins here)
        imported = StoredMessage(
            direction="in", message_id=f"{person.mid}_imported", kind="imported",
            channel=person.channel, account_id=person.account_id, user_id=person.user_id,
            # written yesterday (by the real clock: retention's imported index reads it)
            timestamp_ms=int(time.time() * 1000) - 86_400_000, text=f"imported {person.text}",
            status="skipped")
        entry = await store.append(tenant_id, imported, now_ms=at_ms + 2)
        await store.note_imported(tenant_id, person.conv, entry, imported.timestamp_ms)
        await redis.set(keys.phone_alias(tenant_id, person.account_id, person.wa_id),
                        person.user_id, ex=3600)
    ctx = msgspec.msgpack.encode(
        {"user_id": person.user_id, "wa_id": person.wa_id, "turns": [person.text]}
    )
    await redis.set(keys.context(tenant_id, person.conv), ctx)
    await redis.hset(keys.reply(tenant_id, person.mid),
                     mapping={"state": "sent", "graph_ids": f"gm_{person.mid}"})
    await redis.set(keys.paused(tenant_id, person.conv), "1", ex=3600)
    # Still queued for a shard, and once seen as an undecodable body.
    event = Message(
        event_id=person.mid + "_next", channel=person.channel,  # type: ignore[arg-type]
        account_id=person.account_id, user_id=person.user_id, timestamp_ms=at_ms,
        text=person.text + " again", wa_id=person.wa_id,
    )
    await redis.xadd(keys.inbound(partition_of(person.conv, PARTITIONS)),
                     {"e": encode_event(event), "t": tenant_id, "r": str(at_ms)})
    await dead_letter(redis, webhook_body(person), received_ms=at_ms, reason="test")


def webhook_body(person: Person) -> bytes:
    """A webhook body of one message of ``person``, as Meta sends it."""
    if person.channel == "whatsapp":
        value = {"metadata": {"phone_number_id": person.account_id},
                 "contacts": [{"wa_id": person.wa_id, "user_id": person.user_id}],
                 "messages": [{"from": person.wa_id, "id": person.mid, "type": "text",
                               "text": {"body": person.text}}]}
        return json.dumps({"object": "whatsapp_business_account", "entry": [
            {"id": "waba-1", "changes": [{"field": "messages", "value": value}]}]}).encode()
    return json.dumps({"object": "page", "entry": [{"id": person.account_id, "messaging": [
        {"sender": {"id": person.user_id}, "message": {"mid": person.mid, "text": person.text}}
    ]}]}).encode()


async def build_world(redis: Redis, settings: Settings, clock: Clock) -> World:
    vault = TokenVault.from_settings(settings)
    tenants = Tenants(redis, clock)
    channels = Channels(redis, clock, vault.encrypt)
    store = MessageStore(redis)
    data_dir = Path(settings.data_dir)
    tokens = {
        "1110001": "EAAG-page-token-of-tenant-a",
        "2220002": "EAAG-whatsapp-token-of-tenant-a",
        "3330003": "EAAG-page-token-of-tenant-b",
    }
    out: dict[str, Tenant] = {}
    for name, accounts in (("a", [("messenger", "1110001"), ("whatsapp", "2220002")]),
                           ("b", [("messenger", "3330003")])):
        record, api_key = await tenants.create(f"Shop {name}", f"owner@{name}.example.com")
        t = Tenant(id=record.id, api_key=api_key)
        for ch, acct in accounts:
            asid = "7770001" if acct == "1110001" else ("7770003" if name == "b" else None)
            rec = await channels.connect(record.id, ch, acct, tokens[acct], connected_by=asid)
            t.channels[acct] = rec.id
        await redis.hset(keys.kb_source(record.id, "s1"),
                         mapping={"kind": "qa", "name": f"faq of {name}"})
        await redis.zadd(keys.kb_sources(record.id), {"s1": 1})
        await redis.hset(keys.kb_chunks(record.id), "1", f"kb text of shop {name}")
        await redis.sadd(keys.KB_PENDING, f"{record.id}:s1")
        # Billing references: the tenant's billing hash and the global customer index.
        await redis.hset(keys.billing(record.id), mapping={"customer": f"cus_{name}1234"})
        await redis.set(keys.stripe_customer(f"cus_{name}1234"), record.id)
        await redis.set(keys.usage(record.id, "202611"), 3)
        # Analytics: the day's counts and the HyperLogLogs of conversations answered
        # (today by Redis's clock: they expire 366 days after their day).
        tally, today = Tally(), int(time.time() * 1000)
        tally.message_in(record.id, "messenger", today)
        tally.human_reply(record.id, "messenger", today, f"messenger:x:{name}", handoff=True)
        await tally.flush(redis)
        assert await redis.exists(keys.analytics(record.id, day_of(today)))
        # A person who signs in to the console (the global e-mail index names the tenant).
        await Users(redis, clock).add(record.id, f"Owner {name}", f"owner@{name}.example.com",
                                      "owner", None)
        # The retrieval layout: kb/shard-N/{tenant}.idx and uploads/{tenant}/{source}/file.
        (data_dir / "kb" / "shard-0").mkdir(parents=True, exist_ok=True)
        (data_dir / "kb" / "shard-0" / f"{record.id}.idx").write_bytes(
            b"vectors of " + record.id.encode())
        upload = data_dir / "uploads" / record.id / "s1"
        upload.mkdir(parents=True)
        (upload / "price-list.txt").write_text(f"upload {name}")
        out[name] = t

    a, b = out["a"], out["b"]
    alice = Person("messenger", "1110001", "9000000000000001", "alice ordered blue shoes 4711",
                   "m_alice_1")
    carol = Person("messenger", "1110001", "9000000000000003", "carol asks about returns",
                   "m_carol_1")
    bob = Person("whatsapp", "2220002", "US.900002", "bob wants a refund 8812",
                 "wamid.bob1", wa_id="4915550123")
    dave = Person("messenger", "3330003", "9000000000000004", "dave books a table",
                  "m_dave_1")
    at = now_ms(clock)
    for i, (tenant, person) in enumerate(((a, alice), (a, carol), (a, bob), (b, dave))):
        await store_conversation(redis, tenant.id, person, at + i * 10, store)
        tenant.people.append(person)
    await redis.sadd(keys.restricted(a.id), f"messenger:{alice.user_id}", f"whatsapp:{bob.user_id}")
    await redis.sadd(keys.restricted(b.id), f"messenger:{dave.user_id}")
    return World(a=a, b=b, alice=alice, carol=carol, bob=bob, dave=dave, asid="7770001",
                 tokens=tokens, data_dir=data_dir)


async def dump_redis(redis: Redis) -> list[tuple[str, bytes]]:
    """(key name, every byte it holds) for every key in the database."""
    out: list[tuple[str, bytes]] = []
    async for name in redis.scan_iter(count=500):
        kind = (await redis.type(name)).decode()
        parts: list[bytes] = [name]
        if kind == "none":  # gone between SCAN and TYPE (a lease expiring, a job ending)
            continue
        if kind == "string":
            parts.append(await redis.get(name) or b"")
        elif kind == "hash":
            for f, v in (await redis.hgetall(name)).items():
                parts += [f, v]
        elif kind == "set":
            parts += list(await redis.smembers(name))
        elif kind == "zset":
            parts += [m for m, _ in await redis.zrange(name, 0, -1, withscores=True)]
        elif kind == "list":
            parts += list(await redis.lrange(name, 0, -1))
        elif kind == "stream":
            for entry_id, fields in await redis.xrange(name):
                parts.append(entry_id)
                for f, v in fields.items():
                    parts += [f, v]
        else:
            raise AssertionError(f"unexpected type {kind} of {name!r}")
        out.append((name.decode("utf-8", "replace"), b"\x00".join(parts)))
    return out


def dump_files(data_dir: Path) -> list[tuple[str, bytes]]:
    return [(str(p), str(p.relative_to(data_dir)).encode() + b"\x00"
             + (p.read_bytes() if p.is_file() else b""))
            for p in sorted(data_dir.rglob("*"))]


async def where_found(redis: Redis, data_dir: Path, needles: list[str]) -> list[str]:
    """Every "needle in place" found in Redis or the data directory."""
    hits: list[str] = []
    for place, blob in [*(await dump_redis(redis)), *dump_files(data_dir)]:
        for needle in needles:
            if needle.encode() in blob:
                hits.append(f"{needle!r} in {place}")
    return hits
