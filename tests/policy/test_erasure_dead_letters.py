"""A tenant's erasure touches only that tenant's dead letters: erasing an end user
whose id is a word every webhook body contains removes (and counts) the caller's own
letters only; letters of other tenants, of several, or of no known tenant stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _privacy_world import World, build_world, make_settings, webhook_body

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.gateway.ingest import dead_letter
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker


@pytest.fixture
async def world(redis: Redis, tmp_path: Path) -> World:
    return await build_world(redis, make_settings(tmp_path), FakeClock())


async def letters(redis: Redis) -> list[tuple[bytes, bytes]]:
    """(owning tenant, body) of every dead letter."""
    return [(f.get(b"t", b""), f[b"b"]) for _, f in await redis.xrange(keys.DEAD_LETTERS)]


async def run_jobs(redis: Redis, tmp_path: Path) -> None:
    worker = DeletionWorker(redis, make_settings(tmp_path), FakeClock(), batch=3)
    while await worker.run_once():
        pass


async def add_foreign_letters(redis: Redis, w: World) -> None:
    """A letter of an account no tenant has, and one naming accounts of both tenants;
    both name alice."""
    unrouted = json.dumps({"object": "page", "entry": [{"id": "5550005", "messaging": [
        {"sender": {"id": w.alice.user_id}, "message": {"mid": "m_x", "text": "hello"}}]}]})
    mixed = json.dumps({"object": "page", "entry": [
        {"id": "1110001", "messaging": [{"sender": {"id": w.alice.user_id}}]},
        {"id": "3330003", "messaging": [{"sender": {"id": w.dave.user_id}}]}]})
    for body in (unrouted, mixed):
        await dead_letter(redis, body.encode(), received_ms=1, reason="test")


async def test_dead_letters_carry_the_tenant_owning_every_account_they_name(
    redis: Redis, world: World
) -> None:
    w = world
    await add_foreign_letters(redis, w)
    owners = [t for t, _ in await letters(redis)]
    assert owners == [w.a.id.encode()] * 3 + [w.b.id.encode(), b"", b""]
    fields = [f for _, f in await redis.xrange(keys.DEAD_LETTERS)]
    assert fields[2][b"a"] == b"whatsapp:2220002"  # the phone number id, not the WABA id
    assert fields[5][b"a"] == b"messenger:1110001 messenger:3330003"


async def test_erasing_a_user_named_like_a_common_word_removes_only_own_dead_letters(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    await add_foreign_letters(redis, w)
    before = await letters(redis)
    assert all(b'"object"' in body for _, body in before)
    # Tenant b erases "object": a word of every webhook body, of every tenant.
    job = await DeletionJobs(redis, FakeClock()).schedule_user(w.b.id, "messenger", "object")
    await run_jobs(redis, tmp_path)

    after = await letters(redis)
    assert [x for x in before if x[0] != w.b.id.encode()] == after
    done = await DeletionJobs(redis, FakeClock()).get(job.id)
    # Its own letter (dave's) only: nothing about other tenants' bodies is told.
    assert done.status == "done" and done.counts.get("dead_letters") == 1


async def test_erasures_leave_letters_of_no_known_tenant_to_retention(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    await add_foreign_letters(redis, w)
    jobs = DeletionJobs(redis, FakeClock())
    user = await jobs.schedule_user(w.a.id, "messenger", w.alice.user_id)
    channel = await jobs.schedule_channel(w.b.id, w.b.channels["3330003"])
    await run_jobs(redis, tmp_path)

    left = await letters(redis)
    assert webhook_body(w.alice) not in [body for _, body in left]
    assert webhook_body(w.dave) not in [body for _, body in left]
    assert [t for t, _ in left] == [w.a.id.encode(), w.a.id.encode(), b"", b""]
    assert (await jobs.get(user.id)).counts["dead_letters"] == 1
    assert (await jobs.get(channel.id)).counts["dead_letters"] == 1

    account = await jobs.schedule_account(w.a.id)
    await run_jobs(redis, tmp_path)
    assert [t for t, _ in await letters(redis)] == [b"", b""]
    assert (await jobs.get(account.id)).counts["dead_letters"] == 2
