"""``mtdesk drill llm-down``: the primary LLM provider goes down, then every provider.

The bot answers with provider ``openai`` (a fake LLM) and a fallback chain naming a second
provider (``fireworks``, another fake LLM process, model ``bench-fallback``). Some seconds
into the load the primary's process is killed (-9): calls under way fail, new ones are
refused, and the fallback answers them (the fake's reply names the model, so each reply
shows who answered). Once the load is answered the fallback is killed too and new
customers write: each gets the bot's fallback message, exactly once, and their
conversation is handed to a person (the inbox card's status ``human``, read through
``GET /admin/api/v1/conversations/{key}``; one hand-off each in ``GET
/admin/api/v1/analytics``). Figures: answers by each provider, the recovery time (kill →
the first answer from the fallback), and for the all-down phase: messages in, fallback
messages, lost, duplicated, conversations marked for a person, hand-offs counted.

``--short``: 20 msgs/s for 8 s from 40 customers, the primary killed after 2 s, 10
customers in the all-down phase. The full form: 300 msgs/s for 30 s from 3,000
customers, killed after 10 s, 300 customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from mtdesk.benchmarks.drill import Drill, Rig
from mtdesk.benchmarks.e2e_run import MODEL, BenchConfig

NAME = "llm-down"
FALLBACK_PROVIDER = "fireworks"
FALLBACK_MODEL = "bench-fallback"
FALLBACK_MESSAGE = "Sorry, our assistant is unavailable right now. A person will follow up."
NEW_USERS_FROM = 10_000_000  # customer numbers of the all-down phase (never seen before)


class LlmDown(Drill):
    name = NAME
    help = "the primary LLM provider down (the fallback answers), then every provider"

    def __init__(self, short: bool, rate: float | None = None) -> None:
        super().__init__(short, rate)
        self.fallback: Any = None

    def config(self) -> BenchConfig:
        if self.short:
            return BenchConfig(seconds=8, rate=20, users=40, llm_latency_ms=50, shards=1,
                               duplicate_fraction=0.1, drain_timeout_s=120, connections=8,
                               warmup_messages=10, kill_node_after_s=2.0)
        return BenchConfig(seconds=30, rate=300, users=3000, shards=2, drain_timeout_s=180,
                           kill_node_after_s=10.0)

    @property
    def all_down_customers(self) -> int:
        return 10 if self.short else 300

    def tune(self, env: dict[str, str], stack: contextlib.ExitStack) -> None:
        from mtdesk.fakes.llm import spawn_llm

        self.fallback = stack.enter_context(spawn_llm(latency_ms=self.config().llm_latency_ms))
        env[f"MTDESK_{FALLBACK_PROVIDER.upper()}_BASE_URL"] = f"{self.fallback.root_url}/v1"
        env[f"MTDESK_{FALLBACK_PROVIDER.upper()}_API_KEY"] = "bench-fallback-key"

    async def provision(self, rig: Rig) -> None:
        await rig.admin("PUT", "/bot", body={
            "provider": "openai", "model": MODEL,
            "system_prompt": "You answer the customers of Bench Shop briefly.",
            "fallback": [f"{FALLBACK_PROVIDER}:{FALLBACK_MODEL}"],
            "fallback_message": FALLBACK_MESSAGE})

    async def blow(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.cfg.kill_node_after_s is not None
        await asyncio.sleep(rig.cfg.kill_node_after_s)
        rig.log(f"killing the primary LLM provider (pid {rig.llm.pid})…")
        os.kill(rig.llm.pid, signal.SIGKILL)
        out["_primary_killed"] = time.time()

    async def after(self, rig: Rig, out: dict[str, Any]) -> None:
        assert rig.replies is not None
        killed = out.pop("_primary_killed")
        texts = [(t, text) for sent in rig.replies.to.values() for t, text in sent
                 if " tk" in text]  # the load's (not the warm-up's)
        by_fallback = [t for t, text in texts if f"[{FALLBACK_MODEL}]" in text]
        out["answered_by_primary"] = sum(1 for _t, text in texts if f"[{MODEL}]" in text)
        out["answered_by_fallback"] = len(by_fallback)
        out["answered_by_primary_after_kill"] = sum(
            1 for t, text in texts if f"[{MODEL}]" in text and t > killed + 1.0)
        out["recovery_s"] = round(min(by_fallback) - killed, 2) if by_fallback else None
        # Every provider down: new customers get the fallback message, once each.
        rig.log(f"fallback provider answered {len(by_fallback)}; killing it too "
                f"(pid {self.fallback.pid})…")
        os.kill(self.fallback.pid, signal.SIGKILL)
        out["_handoffs_before"] = await _handoffs(rig)
        k = self.all_down_customers
        ns = [NEW_USERS_FROM + i for i in range(k)]
        raws = [rig.message(n, "fb", users=NEW_USERS_FROM * 10) for n in ns]
        recipients = [_recipient(rig, n) for n in ns]
        statuses = await rig.webhooks(raws, connections=4)
        await rig.wait_replies(lambda: all(r in rig.replies.to for r in recipients),
                               rig.cfg.drain_timeout_s)
        await asyncio.sleep(1.5)  # a second reply, were there one
        await rig.replies.poll(rig.session)
        got = [rig.replies.to.get(r, []) for r in recipients]
        handoffs_before = out.pop("_handoffs_before", 0)
        marked = await _marked_for_a_person(rig, ns)
        handoffs = await _handoffs(rig) - handoffs_before
        out["all_down"] = {
            "in": k, "statuses": {str(s): c for s, c in statuses.items()},
            "fallback_message_once": sum(1 for g in got if [x for _t, x in g]
                                         == [FALLBACK_MESSAGE]),
            "lost": sum(1 for g in got if not g),
            "duplicated": sum(1 for g in got if len(g) > 1),
            "other_text": sum(1 for g in got if g and g[0][1] != FALLBACK_MESSAGE),
            "marked_for_a_person": marked,
            "handoffs": handoffs,
        }

    def passed(self, result: dict[str, Any]) -> bool:
        down = result.get("all_down", {})
        marked = down.get("marked_for_a_person")
        return (super().passed(result) and result.get("answered_by_fallback", 0) > 0
                and down.get("fallback_message_once") == down.get("in")
                and down.get("lost") == 0 and down.get("duplicated") == 0
                and marked == down.get("in") and down.get("handoffs") == down.get("in"))

    def summary(self, r: dict[str, Any]) -> str:
        d = r.get("all_down", {})
        return (super().summary(r) + f" (primary killed → the fallback's first answer); "
                f"answered by the primary {r.get('answered_by_primary')}, by the fallback "
                f"{r.get('answered_by_fallback')}; all providers down: {d.get('in')} in, "
                f"{d.get('fallback_message_once')} got the fallback message once, "
                f"{d.get('lost')} lost, {d.get('duplicated')} duplicated, "
                f"{d.get('marked_for_a_person')} marked for a person, "
                f"{d.get('handoffs')} hand-offs counted")


def _recipient(rig: Rig, n: int) -> str:
    from mtdesk.benchmarks.e2e_load import user_of

    return user_of(n, NEW_USERS_FROM * 10, rig.accounts)[2]


async def _marked_for_a_person(rig: Rig, ns: list[int]) -> int:
    """How many of these customers' conversations the inbox shows as a person's
    (card status ``human``), as the console reads them."""
    from urllib.parse import quote

    from mtdesk.benchmarks.e2e_load import user_of

    marked = 0
    for n in ns:
        key = ":".join(user_of(n, NEW_USERS_FROM * 10, rig.accounts))
        card = await rig.admin("GET", f"/conversations/{quote(key, safe='')}")
        marked += card.get("status") == "human"
    return marked


async def _handoffs(rig: Rig, within_s: float = 10.0) -> int:
    """Today's hand-offs in the tenant's analytics (the shards flush their counts every
    few seconds: read until two reads agree, at most ``within_s``)."""
    deadline = time.monotonic() + within_s
    last = -1
    while True:
        totals = (await rig.admin("GET", "/analytics"))["totals"]
        now = int(totals.get("handoffs", 0))
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        await asyncio.sleep(2.5)


register_drill = LlmDown.register
