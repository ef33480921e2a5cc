"""The policy actors: the plain hosts run the deletion loop and the retention sweep; on
Ray, the deployment's actors erase a scheduled job and sweep on demand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _privacy_world import build_world, make_settings, where_found

from mtdesk.actors.policy_deploy import DeletionHost, PolicyDeployment, RetentionHost
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.policy.erasure.jobs import DeletionJobs


async def wait_done(redis: Redis, job_id: str, timeout_s: float = 60.0) -> str:
    jobs = DeletionJobs(redis, FakeClock())
    for _ in range(int(timeout_s / 0.05)):
        status = (await jobs.get(job_id)).status
        if status in ("done", "failed"):
            return status
        await asyncio.sleep(0.05)
    return status


async def test_the_deletion_host_loop_erases_scheduled_jobs(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url)
    w = await build_world(redis, settings, FakeClock())
    host = DeletionHost(settings)
    info = await host.ensure_started()
    assert info["running"]
    try:
        job = await DeletionJobs(redis, FakeClock()).schedule_user(w.a.id, "messenger", w.alice.user_id)
        assert await wait_done(redis, job.id) == "done"
        assert await where_found(redis, w.data_dir, w.alice.identifiers()) == []
    finally:
        stopped = await host.stop()
    assert stopped["processed"] == 1 and not stopped["running"]


async def test_the_retention_host_sweeps_on_demand(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url)
    clock = FakeClock()
    await build_world(redis, settings, clock)
    clock.advance(400 * 86_400)  # the world's reply records are a year old now
    year_old = [k async for k in redis.scan_iter(match="mt:t:*:out:*")]
    assert len(year_old) == 4
    host = RetentionHost(settings, interval_s=3600, clock=clock)
    try:
        # The host's schedule sweeps on start too; the on-demand run waits for that sweep
        # and runs after it, so on return nothing expired is left, whichever deleted it.
        report = await host.run_now()
    finally:
        await host.stop()
    assert report["tenants"] == 2
    assert [k async for k in redis.scan_iter(match="mt:t:*:out:*")] == []


@pytest.mark.ray
async def test_on_ray_the_deleter_actor_erases_and_retention_runs(
    redis: Redis, redis_url: str, tmp_path: Path, ray_session: None
) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url)
    w = await build_world(redis, settings, FakeClock())
    deployment = PolicyDeployment(settings, retention_interval_s=3600)
    await deployment.start()
    try:
        assert await deployment.ready()
        job = await DeletionJobs(redis, FakeClock()).schedule_channel(w.a.id, w.a.channels["2220002"])
        assert await wait_done(redis, job.id) == "done"
        assert await where_found(redis, w.data_dir, ["2220002", *w.bob.identifiers()]) == []
        report = await deployment.run_retention([w.b.id])
        assert report["tenants"] == 1
    finally:
        await deployment.stop()
