"""End to end with a real conversation shard (fake Graph API and fake LLM as local
servers): a restriction set through the privacy module silences the bot and keeps the
person's text away from the model; an end user's erasure also empties the shard's memory."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "actors"))

from shardkit import desk, eventually  # noqa: E402

from mtdesk.core.clock import SystemClock  # noqa: E402
from mtdesk.core.redis import Redis  # noqa: E402
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker  # noqa: E402
from mtdesk.policy.restriction import restrict, unrestrict  # noqa: E402


async def test_a_restricted_user_gets_no_answer_and_reaches_no_model(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await restrict(redis, d.tenant_id, "messenger", "U9")
        await d.push(d.message("my card number is 4111 please help", user="U9"))
        await eventually(lambda: shard.handled == 1)
        assert d.graph.sends == []
        assert all("4111" not in r.prompt_text() for r in d.llm.requests)

        await unrestrict(redis, d.tenant_id, "messenger", "U9")
        await d.push(d.message("hello again", user="U9"))
        await eventually(lambda: shard.handled == 2)
        await eventually(lambda: len(d.texts_to("U9")) == 1)


async def test_erasing_a_user_makes_the_shard_forget_their_conversation(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with desk(redis, redis_url, data_dir=str(tmp_path)) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("remember my secret word: pineapple", user="U5"))
        await eventually(lambda: len(d.texts_to("U5")) == 1)

        await DeletionJobs(redis, SystemClock()).schedule_user(d.tenant_id, "messenger", "U5")
        worker = DeletionWorker(redis, d.settings, SystemClock())
        assert await worker.run_once() == 1

        d.llm.reset()
        await d.push(d.message("what was my secret word?", user="U5"))
        await eventually(lambda: len(d.texts_to("U5")) == 2)
        prompt = " ".join(r.prompt_text() for r in d.llm.chat_requests)
        assert "what was my secret word?" in prompt
        assert "pineapple" not in prompt  # neither from Redis nor from the shard's memory
