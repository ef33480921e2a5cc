"""After each kind of deletion, nothing of what was deleted is left anywhere in Redis or
the data directory, and nobody else's data is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from _privacy_world import Person, World, build_world, make_settings, where_found

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.history import MessageStore
from mtdesk.core.redis import Redis
from mtdesk.core.tenants import Channels, Tenants
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.policy.vault import TokenVault


@pytest.fixture
async def world(redis: Redis, tmp_path: Path) -> World:
    clock = FakeClock()
    return await build_world(redis, make_settings(tmp_path), clock)


async def run_all(redis: Redis, tmp_path: Path) -> DeletionWorker:
    worker = DeletionWorker(redis, make_settings(tmp_path), FakeClock(), batch=3)
    while await worker.run_once():
        pass
    return worker


async def messages_of(redis: Redis, tenant_id: str, person: Person) -> list[str]:
    return [m.text or "" for m in await MessageStore(redis).read(tenant_id, person.conv)]


async def assert_untouched(redis: Redis, w: World, tenant_id: str, *people: Person) -> None:
    for person in people:
        texts = await messages_of(redis, tenant_id, person)
        assert person.text in texts
        assert await redis.exists(keys.context(tenant_id, person.conv))
        assert await redis.zscore(keys.conversations(tenant_id), person.conv) is not None
    hits = await where_found(redis, w.data_dir, [p.text for p in people])
    assert len(hits) >= len(people)


async def families_of(redis: Redis, tenant_id: str | None = None) -> set[keys.Family]:
    """The registered families of every key in Redis (of one tenant's keys, if given)."""
    found = set()
    async for name in redis.scan_iter(count=500):
        ref = keys.parse(name)
        assert ref is not None, f"{name!r} is of no registered key family"
        if tenant_id is None or ref.tenant == tenant_id:
            found.add(ref.family)
    return found


async def test_the_world_holds_a_key_of_every_family_with_personal_data(
    redis: Redis, world: World
) -> None:
    # So the erasures below are proven against every family that may hold personal
    # data: a family registered later must be added to the world too.
    personal = {f for f in keys.FAMILIES if f.personal}
    assert personal - await families_of(redis) == set()


async def test_end_user_deletion_leaves_no_trace_of_that_user(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    before = await where_found(redis, w.data_dir, w.alice.identifiers())
    assert len(before) >= 8  # history, context, reply, outbound, index, inbound, dead letter…
    job = await DeletionJobs(redis, FakeClock()).schedule_user(w.a.id, "messenger", w.alice.user_id)
    assert job.status == "queued"
    await run_all(redis, tmp_path)

    assert await where_found(redis, w.data_dir, w.alice.identifiers()) == []
    await assert_untouched(redis, w, w.a.id, w.carol, w.bob)
    await assert_untouched(redis, w, w.b.id, w.dave)
    assert await redis.sismember(keys.restricted(w.a.id), f"whatsapp:{w.bob.user_id}")
    done = await DeletionJobs(redis, FakeClock()).get(job.id)
    assert done.status == "done"
    # her message, the record of her picture, the reply
    assert done.counts["messages"] == 3 and done.counts["conversations"] == 1
    assert done.counts["inbound_events"] == 1 and done.counts["dead_letters"] == 1


async def test_whatsapp_user_deletion_also_finds_records_by_wa_id(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    await DeletionJobs(redis, FakeClock()).schedule_user(w.a.id, "whatsapp", w.bob.user_id)
    await run_all(redis, tmp_path)
    assert await where_found(redis, w.data_dir, w.bob.identifiers()) == []
    await assert_untouched(redis, w, w.a.id, w.alice, w.carol)


async def test_channel_deletion_removes_all_platform_data_of_that_account(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    cid = w.a.channels["2220002"]
    await DeletionJobs(redis, FakeClock()).schedule_channel(w.a.id, cid)
    await run_all(redis, tmp_path)

    gone = ["2220002", cid, w.tokens["2220002"], *w.bob.identifiers()]
    assert await where_found(redis, w.data_dir, gone) == []
    assert not await redis.exists(keys.account("whatsapp", "2220002"))
    await assert_untouched(redis, w, w.a.id, w.alice, w.carol)
    await assert_untouched(redis, w, w.b.id, w.dave)
    assert await redis.exists(keys.account("messenger", "1110001"))


async def test_account_deletion_leaves_nothing_of_the_tenant(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    tenants = Tenants(redis, FakeClock())
    assert await tenants.authenticate(w.a.api_key.reveal()) == w.a.id
    job = await DeletionJobs(redis, FakeClock()).schedule_account(w.a.id)
    # The API key stops working at once, and no message is routed in, before the erasure.
    assert await tenants.authenticate(w.a.api_key.reveal()) is None
    assert not await redis.exists(keys.account("messenger", "1110001"))
    assert await redis.exists(keys.account("messenger", "3330003"))

    await run_all(redis, tmp_path)

    assert await families_of(redis, w.a.id) == set()
    gone = [w.a.id, "1110001", "2220002", w.asid, w.tokens["1110001"], w.tokens["2220002"],
            "faq of a", "kb text of shop a", "upload a", "owner@a.example.com", "cus_a1234",
            *w.alice.identifiers(), *w.carol.identifiers(), *w.bob.identifiers()]
    assert await where_found(redis, w.data_dir, gone) == []
    await assert_untouched(redis, w, w.b.id, w.dave)
    assert await tenants.authenticate(w.b.api_key.reveal()) == w.b.id
    assert (await redis.hget(keys.account("messenger", "3330003"), "tenant")).decode() == w.b.id
    assert len(await where_found(
        redis, w.data_dir, ["kb text of shop b", "upload b", "vectors of " + w.b.id, "cus_b1234"]
    )) == 5  # the chunk, the upload, the index file, the billing hash and customer index
    done = await DeletionJobs(redis, FakeClock()).get(job.id)
    assert done.status == "done" and done.finished_ms is not None
    # Three people's three messages each, and bob's message imported from the Business app.
    assert done.counts["messages"] == 10 and done.counts["files"] == 2


async def test_a_second_run_of_a_finished_job_changes_nothing(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    jobs = DeletionJobs(redis, FakeClock())
    job = await jobs.schedule_user(w.a.id, "messenger", w.alice.user_id)
    worker = await run_all(redis, tmp_path)
    first = await jobs.get(job.id)
    again = await worker.execute(job.id)
    assert again == first
    # And the same erasure scheduled again finds nothing more to do.
    second = await jobs.schedule_user(w.a.id, "messenger", w.alice.user_id)
    await run_all(redis, tmp_path)
    assert (await jobs.get(second.id)).counts == {}
    await assert_untouched(redis, w, w.a.id, w.carol, w.bob)


async def test_a_job_interrupted_by_a_crash_is_resumed_by_another_worker(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    jobs = DeletionJobs(redis, FakeClock())
    job = await jobs.schedule_account(w.a.id)
    # What a crash leaves: the job read by a worker that died mid-way (some keys already
    # erased, progress counted, status running, never acknowledged).
    crashed = DeletionWorker(redis, make_settings(tmp_path), FakeClock(), consumer="died")
    await crashed.ensure_group()
    await redis.xreadgroup(keys.DELETION_GROUP, "died", {keys.DELETION_JOBS: ">"}, count=1)
    await redis.hset(keys.deletion_job(job.id), mapping={"status": "running", "started_ms": 1,
                                                          "c:messages": 2, "attempts": 1})
    await redis.delete(keys.history(w.a.id, w.alice.conv), keys.channel(w.a.id, w.a.channels["1110001"]))

    survivor = DeletionWorker(redis, make_settings(tmp_path), FakeClock(), consumer="next",
                              claim_idle_ms=0)
    assert await survivor.run_once() == 1

    done = await jobs.get(job.id)
    assert done.status == "done" and done.attempts == 2 and done.started_ms == 1
    gone = [w.a.id, "1110001", "2220002", *w.alice.identifiers(), *w.bob.identifiers()]
    assert await where_found(redis, w.data_dir, gone) == []
    assert await redis.xlen(keys.DELETION_JOBS) == 0
    pending = await redis.xpending(keys.DELETION_JOBS, keys.DELETION_GROUP)
    assert pending["pending"] == 0


async def test_the_audit_record_holds_no_personal_data(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    job = await DeletionJobs(redis, FakeClock()).schedule_user(w.a.id, "messenger", w.alice.user_id)
    raw_before = await redis.hgetall(keys.deletion_job(job.id))
    assert any(w.alice.user_id.encode() in v for v in raw_before.values())  # needed to run
    await run_all(redis, tmp_path)
    raw = await redis.hgetall(keys.deletion_job(job.id))
    blob = b"".join(k + v for k, v in raw.items())
    assert w.alice.user_id.encode() not in blob and w.a.id.encode() not in blob
    assert 0 < await redis.ttl(keys.deletion_job(job.id))


async def test_a_job_held_by_a_live_worker_is_not_run_twice_and_is_freed_by_its_lease(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    jobs = DeletionJobs(redis, FakeClock())
    job = await jobs.schedule_user(w.a.id, "messenger", w.alice.user_id)
    # Another worker (say the service's, while an operator runs the CLI) holds the job.
    await redis.set(keys.deletion_lease(job.id), "service-worker", px=300)
    second = DeletionWorker(redis, make_settings(tmp_path), FakeClock(), retry_s=0.01)
    assert await second.run_once() == 0
    assert (await jobs.get(job.id)).status == "queued"
    assert await where_found(redis, w.data_dir, [w.alice.text])
    # The holder died: its lease runs out and the job is taken over and finished.
    finished = await second.execute(job.id, wait_s=5)
    assert finished.status == "done" and finished.attempts == 1
    assert await where_found(redis, w.data_dir, w.alice.identifiers()) == []
    assert not await redis.exists(keys.deletion_lease(job.id))
    while await second.run_once():
        pass
    assert await redis.xlen(keys.DELETION_JOBS) == 0


async def test_an_account_another_tenant_connected_meanwhile_keeps_its_routing_through_the_erasure(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    # Tenant a is deleted; before its erasure runs, tenant b connects a's old Page (its
    # routing was dropped at once, so the Page is free). The erasure clears a's data of
    # that Page but must leave b's routing: b's customers keep being answered.
    w = world
    await DeletionJobs(redis, FakeClock()).schedule_account(w.a.id)
    assert not await redis.exists(keys.account("messenger", "1110001"))
    vault = TokenVault.from_settings(make_settings(tmp_path))
    rec = await Channels(redis, FakeClock(), vault.encrypt).connect(
        w.b.id, "messenger", "1110001", "EAAB" + "b" * 40)

    await run_all(redis, tmp_path)

    route = await redis.hgetall(keys.account("messenger", "1110001"))
    assert route[b"tenant"].decode() == w.b.id
    assert route[b"channel_id"].decode() == rec.id
