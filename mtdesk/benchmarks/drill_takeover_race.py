"""``mtdesk drill takeover-race``: a person takes over while the bot's answer is being made.

Under load, with a slow model (the fake LLM takes 1.5 s, 3 s in the full form), some
Messenger customers write; as soon as the model has their message (the fake LLM has
recorded the call), a person answers them from Meta's inbox: the Page's message comes
back to the webhook as an echo (``is_echo``, another app's id, none of our metadata).
From that moment the conversation is the person's: the answer the bot was making must
not go out, nor any later one. Every other message of the load is answered exactly
once. Figures: race conversations, bot messages sent to them after the takeover (must
be 0), bot messages before it, and the load's counts.

``--short``: 10 msgs/s for 6 s from 30 customers, 5 races. The full form: 100 msgs/s
for 30 s from 3,000 customers, 50 races.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_run import APP_SECRET, BenchConfig

NAME = "takeover-race"
INBOX_APP_ID = 263902037430900  # Meta's Page inbox, not our app
RACE_USERS_FROM = 30_000_000  # customer numbers of the races (messenger: n % 3 == 0)


class TakeoverRace(Drill):
    name = NAME
    help = "a human agent's echo arrives while the bot's answer is being generated"

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=6, rate=10, users=30, llm_latency_ms=1500, shards=1,
                               duplicate_fraction=0.1, drain_timeout_s=120, connections=8,
                               warmup_messages=6)
        return BenchConfig(seconds=30, rate=100, users=3000, shards=2, drain_timeout_s=180,
                           llm_latency_ms=3000)

    @property
    def races(self) -> int:
        return 5 if self.short else 50

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        ns = [RACE_USERS_FROM + 3 * i for i in range(self.races)]
        await asyncio.sleep(1.0)
        taken = await asyncio.gather(*(self._race(rig, n) for n in ns))
        out["_races"] = [t for t in taken if t is not None]
        out["races_not_started"] = sum(1 for t in taken if t is None)

    async def _race(self, rig: Rig, n: int) -> tuple[str, float] | None:
        """One customer writes; once the model has the message, a person answers from
        Meta's inbox. (recipient, wall time the takeover was acknowledged)."""
        from mtdesk.benchmarks.e2e_load import user_of
        from mtdesk.fakes.meta import messenger_echo, meta_json, sign

        users = RACE_USERS_FROM * 10
        channel, account, user = user_of(n, users, rig.accounts)
        assert channel == "messenger"
        if await rig.webhook(rig.message(n, "tr", users=users)) != 200:
            return None
        token = f"tr{n}k"
        deadline = time.monotonic() + 60
        while not await _model_has(rig, token):
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        body = meta_json(messenger_echo(account, user, "Hi, this is Sam from the shop: let me "
                                        "check that for you.", app_id=INBOX_APP_ID,
                                        timestamp_ms=int(time.time() * 1000)))
        raw = (b"POST /webhooks/meta HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json"
               b"\r\nX-Hub-Signature-256: " + sign(body, APP_SECRET).encode()
               + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        if await rig.webhook(raw) != 200:
            return None
        return user, time.time()

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.replies is not None
        races: list[tuple[str, float]] = out.pop("_races", [])
        await asyncio.sleep(rig.cfg.llm_latency_ms / 1000 + 3.0)  # the answers under way
        await rig.replies.poll(rig.session)
        after = before = 0
        for user, taken_at in races:
            for t, _text in rig.replies.to.get(user, []):
                if t > taken_at:
                    after += 1
                else:
                    before += 1
        out["races"] = len(races)
        out["bot_messages_after_takeover"] = after
        out["bot_messages_before_takeover"] = before

    def passed(self, result: dict[str, Any]) -> bool:
        return (super().passed(result) and result.get("races", 0) > 0
                and result.get("races_not_started") == 0
                and result.get("bot_messages_after_takeover") == 0)

    def summary(self, r: dict[str, Any]) -> str:
        return (super().summary(r) + f"; {r.get('races')} takeovers while the model answered: "
                f"{r.get('bot_messages_after_takeover')} bot messages after the takeover")


async def _model_has(rig: Rig, token: str) -> bool:
    async with rig.session.get(f"{rig.llm_root}/_fake/requests") as resp:
        records = await resp.json()
    return any(token in str(m.get("content", "")) for r in records
               for m in r.get("messages") or ())


register_drill = TakeoverRace.register
