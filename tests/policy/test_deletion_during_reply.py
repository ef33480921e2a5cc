"""A reply being generated when its conversation is erased leaves nothing behind: the
deletion job waits (bounded) until the reply settled, then sweeps that scope again.
Real Redis, a real conversation shard, the real deletion job; the Graph API and the LLM
are local servers, the LLM holding its answer until the test releases it."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "actors"))

from _privacy_world import where_found  # noqa: E402
from shardkit import Desk, desk, eventually  # noqa: E402

from mtdesk.core import keys  # noqa: E402
from mtdesk.core.clock import SystemClock  # noqa: E402
from mtdesk.core.errors import ConfigError  # noqa: E402
from mtdesk.core.redis import Redis  # noqa: E402
from mtdesk.core.settings import Settings  # noqa: E402
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker  # noqa: E402

USER = "7730041"  # the PSID of the person erased
SECRET = "my secret word is pineapple"


async def tenant_keys(d: Desk, kind: str) -> list[bytes]:
    return [k async for k in d.redis.scan_iter(match=f"{keys.tenant_prefix(d.tenant_id)}{kind}:*")]


async def held_reply(d: Desk) -> None:
    """The shard answers USER's message; the model's answer is held."""
    d.llm.hold()
    await d.push(d.message(SECRET, user=USER))
    await eventually(lambda: d.llm.waiting == 1)


async def start_job(d: Desk) -> tuple[asyncio.Task[int], DeletionJobs]:
    """The worker runs the scheduled job; returns once its first sweep went by (the
    person's message is gone from history)."""
    worker = DeletionWorker(d.redis, d.settings, SystemClock(), settle_poll_s=0.05)
    task = asyncio.create_task(worker.run_once())
    hist = keys.history(d.tenant_id, f"messenger:1001:{USER}")

    async def swept() -> bool:
        return not await d.redis.exists(hist)

    await eventually(swept)
    return task, DeletionJobs(d.redis, SystemClock())


async def test_a_reply_held_while_its_user_is_erased_leaves_nothing_once_the_job_is_done(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with desk(redis, redis_url, data_dir=str(tmp_path), deletion_settle_s=30.0) as d:
        shard = await d.shard()
        await shard.start()
        await held_reply(d)

        scheduled = await DeletionJobs(redis, SystemClock()).schedule_user(
            d.tenant_id, "messenger", USER)
        task, jobs = await start_job(d)
        await asyncio.sleep(0.3)
        # The reply is still being generated: the job has not reported done.
        assert not task.done()
        assert (await jobs.get(scheduled.id)).status == "running"

        d.llm.release()
        assert await asyncio.wait_for(task, 20) == 1
        job = await jobs.get(scheduled.id)
        assert job.status == "done" and job.in_flight == 0
        # The reply did go out (the person got it), and settled before the job's end.
        assert len(d.texts_to(USER)) == 1
        assert await where_found(redis, tmp_path, [USER, "pineapple"]) == []
        assert await tenant_keys(d, "reply") == []
        assert await tenant_keys(d, "out") == []
        assert await tenant_keys(d, "hist") == []
        assert await redis.zcard(keys.conversations(d.tenant_id)) == 0
        # Nothing comes later either.
        await eventually(lambda: shard.handled == 1)
        await asyncio.sleep(0.3)
        assert await where_found(redis, tmp_path, [USER, "pineapple"]) == []


async def test_a_reply_held_past_the_bound_is_recorded_in_the_job_and_logged(
    redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with desk(redis, redis_url, data_dir=str(tmp_path), deletion_settle_s=0.5) as d:
        shard = await d.shard()
        await shard.start()
        await held_reply(d)

        scheduled = await DeletionJobs(redis, SystemClock()).schedule_user(
            d.tenant_id, "messenger", USER)
        caplog.set_level(logging.INFO, logger="mtdesk.policy")
        started = time.monotonic()
        task, jobs = await start_job(d)
        assert await asyncio.wait_for(task, 10) == 1  # not waiting for the model
        assert time.monotonic() - started < 5
        job = await jobs.get(scheduled.id)
        assert job.status == "done" and job.in_flight == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and "in flight" in r.getMessage()]
        assert len(warnings) == 1
        assert all(USER not in r.getMessage() and "pineapple" not in r.getMessage()
                   for r in caplog.records)
        # The job swept again at the bound: nothing of the person at its end.
        assert await where_found(redis, tmp_path, [USER, "pineapple"]) == []
        d.llm.release()
        await eventually(lambda: len(d.texts_to(USER)) == 1)


async def test_a_reply_held_while_the_account_is_erased_leaves_no_reply_record(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with desk(redis, redis_url, data_dir=str(tmp_path), deletion_settle_s=30.0) as d:
        shard = await d.shard()
        await shard.start()
        await held_reply(d)

        scheduled = await DeletionJobs(redis, SystemClock()).schedule_account(d.tenant_id)
        task, jobs = await start_job(d)
        await asyncio.sleep(0.3)
        assert not task.done()

        d.llm.release()
        assert await asyncio.wait_for(task, 20) == 1
        job = await jobs.get(scheduled.id)
        assert job.status == "done" and job.in_flight == 0
        assert d.texts_to(USER) == []  # its tokens were gone: nothing sent
        await eventually(lambda: shard.handled == 1)
        await asyncio.sleep(0.3)
        assert await where_found(redis, tmp_path, [d.tenant_id, USER, "pineapple"]) == []
        assert [k async for k in redis.scan_iter(match=f"{keys.tenant_prefix(d.tenant_id)}*")] \
            == []


def test_the_wait_is_configured_by_the_operator() -> None:
    assert Settings.from_env({}, dotenv=None).deletion_settle_s == 300.0
    assert Settings.from_env({"MTDESK_DELETION_SETTLE_S": "12.5"}, dotenv=None) \
        .deletion_settle_s == 12.5
    with pytest.raises(ConfigError, match="MTDESK_DELETION_SETTLE_S"):
        Settings.from_env({"MTDESK_DELETION_SETTLE_S": "-1"}, dotenv=None)
