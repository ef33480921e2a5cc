"""``mtdesk demo``: the whole product on its offline defaults, on one machine, no API keys.

It starts what it needs (its own Redis when ``redis-server`` is installed, Ray, the
gateway and admin API, the conversation, retrieval and policy actors, and a fake Graph
API standing in for Meta), provisions a sample business (Brightwave Cycles) on all
three channels through the admin API, loads its knowledge base, then plays customers
writing in on Messenger, Instagram and WhatsApp with webhooks signed as Meta signs them,
one of them delivered twice as Meta's retries do, and prints the transcript as it
happens. With a provider key in the environment (e.g. ``MTDESK_OPENROUTER_API_KEY``) the
bot uses that provider instead of the offline extractive answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from mtdesk.cli.localredis import free_port, local_redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import BotUpdate
from mtdesk.fakes.graph import FakeGraphAPI, RecordedSend
from mtdesk.fakes.meta import meta_json, sign, text_payload

APP_SECRET = "demo-app-secret"
CHANNEL_NAMES = {"messenger": "Messenger", "instagram": "Instagram", "whatsapp": "WhatsApp"}
# (channel, business account id, customer id, customer name)
ACCOUNTS = {
    "messenger": "112233445566778",
    "instagram": "17841400000000001",
    "whatsapp": "106540352242922",
}
CUSTOMERS = [
    ("messenger", "6543210987654321", "Ana"),
    ("instagram", "1234567890123456", "Ben"),
    ("whatsapp", "16505551234", "Chloé"),
]
SCRIPT = [
    ("Ana", "Hi! When are you open on Saturday?"),
    ("Ben", "Do you ship to Switzerland?"),
    ("Chloé", "How long does a wheel truing take?"),
    ("Ana", "Can I rent an e-bike for a weekend?"),
    ("Ben", "Do you sell surfboards?"),
    ("Chloé", "What does the warranty cover?"),
]
# A provider and model to use when its key is set; the first keyed one wins.
REAL_PROVIDERS = [
    ("openrouter", "openai/gpt-4o-mini"),
    ("openai", "gpt-4o-mini"),
    ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
    ("moonshot", "moonshot-v1-8k"),
    ("minimax", "MiniMax-Text-01"),
]


def demo_settings(redis_url: str, graph_base: str, port: int, data_dir: str) -> Settings:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.update({
        "MTDESK_REDIS_URL": redis_url,
        "MTDESK_GRAPH_API_BASE": graph_base,
        "MTDESK_PORT": str(port),
        "MTDESK_DATA_DIR": data_dir,
        "MTDESK_META_APP_SECRET": APP_SECRET,
    })
    env.setdefault("MTDESK_META_VERIFY_TOKEN", "demo-verify-token")
    env.setdefault("MTDESK_ADMIN_TOKEN", secrets.token_urlsafe(32))  # printed at the end
    env.setdefault("MTDESK_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    env.setdefault("MTDESK_SHARDS", "2")
    env.setdefault("MTDESK_PARTITIONS", "16")
    settings = Settings.from_env(env, dotenv=None)
    settings.require_serve()  # an operator token of theirs is held to serve's rules
    return settings


@dataclass
class Transcript:
    """Prints as it happens and counts replies per customer message."""

    out: Any = sys.stdout
    started: float = field(default_factory=time.monotonic)
    replies: dict[str, list[str]] = field(default_factory=dict)  # customer id → texts
    sent_at: dict[str, float] = field(default_factory=dict)

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.2f}s] {text}", file=self.out, flush=True)

    def customer(self, channel: str, name: str, text: str, note: str = "") -> None:
        self.line(f"{CHANNEL_NAMES[channel]:<9} {name:>6} → {text}{note}")

    def bot(self, send: RecordedSend) -> None:
        channel = next(c for c, a in ACCOUNTS.items() if a == send.account_id)
        text = " ".join((send.text or "").split())  # one line per reply in the transcript
        self.line(f"{CHANNEL_NAMES[channel]:<9} {'bot':>6} ← {text}")


async def _call(session: aiohttp.ClientSession, method: str, url: str, token: str,
                **kwargs: Any) -> Any:
    async with session.request(method, url, headers={"Authorization": f"Bearer {token}"},
                               **kwargs) as resp:
        body = await resp.json(content_type=None)
        if resp.status >= 400:
            raise SystemExit(f"mtdesk demo: {method} {url} answered {resp.status}: {body}")
        return body


def _bot_config() -> tuple[BotUpdate, str]:
    settings = Settings.from_env(dotenv=None)
    for name, model in REAL_PROVIDERS:
        if settings.providers[name].api_key is not None:
            return (BotUpdate(provider=name, model=model, fallback=("extractive",),
                              system_prompt="You answer customers of Brightwave Cycles, a "
                              "bicycle shop, briefly and only from the passages given."), name)
    return (BotUpdate(provider="extractive",
                      fallback_message="Sorry, I don't know that one. A person from the shop "
                      "will get back to you."), "extractive (offline, from the knowledge base)")


async def provision(base: str, admin_token: str, graph: FakeGraphAPI,
                    transcript: Transcript) -> str:
    """Tenant, three channels, bot and knowledge through the admin API; the tenant key."""
    from mtdesk.retrieval.sample import sample_files

    api = f"{base}/admin/api/v1"
    async with aiohttp.ClientSession() as session:
        tenant = await _call(session, "POST", f"{api}/tenants", admin_token,
                             json={"name": "Brightwave Cycles", "email": "hello@brightwave.test"})
        key = tenant["api_key"]
        for channel, account in ACCOUNTS.items():
            token = f"demo-token-{channel}"
            graph.register(account, token, channel=channel)
            await _call(session, "POST", f"{api}/channels", key,
                        json={"channel": channel, "account_id": account, "access_token": token})
        bot, described = _bot_config()
        await _call(session, "PUT", f"{api}/bot", key, json=msgspec.to_builtins(bot))
        for name, data in sample_files():
            form = aiohttp.FormData()
            form.add_field("file", data, filename=name)
            await _call(session, "POST", f"{api}/knowledge", key, data=form)
        transcript.line(f"provisioned tenant {tenant['id']} on Messenger, Instagram and "
                        f"WhatsApp; bot: {described}")
        deadline = time.monotonic() + 300
        while True:
            sources = (await _call(session, "GET", f"{api}/knowledge", key))["sources"]
            states = [s["status"] for s in sources]
            if all(s in ("ready", "failed") for s in states):
                chunks = sum(s.get("chunks", 0) for s in sources)
                failed = [s["name"] for s in sources if s["status"] == "failed"]
                transcript.line(f"knowledge base ready: {len(sources)} sources, {chunks} chunks"
                                + (f" (failed: {', '.join(failed)})" if failed else ""))
                return str(key)
            if time.monotonic() > deadline:
                raise SystemExit("mtdesk demo: the knowledge base did not finish loading")
            await asyncio.sleep(0.2)


async def play_customers(base: str, graph: FakeGraphAPI, transcript: Transcript,
                         timeout_s: float = 90.0) -> tuple[int, int]:
    """Send the script; returns (messages, replies). One message is delivered twice."""
    by_name = {name: (channel, uid) for channel, uid, name in CUSTOMERS}
    async with aiohttp.ClientSession() as session:
        for i, (name, text) in enumerate(SCRIPT):
            channel, uid = by_name[name]
            payload = text_payload(channel, ACCOUNTS[channel], uid, text,  # type: ignore[arg-type]
                                   timestamp_ms=int(time.time() * 1000))
            body = meta_json(payload)
            headers = {"X-Hub-Signature-256": sign(body, APP_SECRET),
                       "Content-Type": "application/json"}
            transcript.customer(channel, name, text)
            deliveries = 2 if i == 1 else 1  # Meta retries: the gateway keeps it once
            for n in range(deliveries):
                async with session.post(f"{base}/webhooks/meta", data=body,
                                        headers=headers) as resp:
                    if resp.status != 200:
                        raise SystemExit(f"mtdesk demo: the webhook answered {resp.status}")
                if n:
                    transcript.line("(Meta delivered that message again; it is kept once)")
            await _wait_for(lambda want=i + 1: len(graph.sends) >= want, timeout_s)
        await asyncio.sleep(1.0)  # a duplicate reply, were there one, would show up here
    return len(SCRIPT), len(graph.sends)


async def _wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("mtdesk demo: no reply came in time (see the logs above)")
        await asyncio.sleep(0.05)


def where_next(base: str, key: str, admin_token: str) -> str:
    return f"""
Where to look next (the demo keeps running until Ctrl-C):
  admin web UI        {base}/admin/
  conversations       curl -H 'Authorization: Bearer {key}' {base}/admin/api/v1/conversations
  ask the knowledge   curl -H 'Authorization: Bearer {key}' '{base}/admin/api/v1/knowledge/search?q=opening+hours'
  export everything   curl -H 'Authorization: Bearer {key}' {base}/admin/api/v1/export
  metrics             {base}/metrics    readiness  {base}/readyz
  operator token      {admin_token}
  benchmarks          mtdesk bench ingest | e2e | retrieval   (--help on each)
  docs                README.md and docs/*.md
"""


async def run_demo(
    *, wait: bool = True, port: int | None = None, on_ray_started: Callable[[], None] | None = None
) -> int:
    """The demo; ``on_ray_started`` runs once Ray is up (Ray installs signal handlers of
    its own, which the caller may want to replace)."""
    from mtdesk.cli.backend import Backend
    from mtdesk.cli.compose import build_app

    transcript = Transcript()
    workdir = tempfile.mkdtemp(prefix="mtdesk-demo-")
    try:
        with local_redis(workdir, who="mtdesk demo") as redis_url:
            async with FakeGraphAPI(on_send=transcript.bot) as graph:
                settings = demo_settings(redis_url, graph.base_url, port or free_port(),
                                         os.path.join(workdir, "data"))
                transcript.line(f"Redis {redis_url}; fake Graph API {graph.base_url}")
                transcript.line("starting Ray, the conversation, retrieval and policy actors…")
                backend = Backend(settings)
                starting = asyncio.ensure_future(asyncio.to_thread(backend.start))
                try:
                    await asyncio.shield(starting)
                    if on_ray_started is not None:
                        on_ray_started()
                    return await _serve_and_play(settings, graph, transcript, build_app, wait)
                finally:
                    transcript.line("stopping…")
                    # Stopped while Ray was starting: let the start finish, then stop all.
                    with contextlib.suppress(BaseException):
                        await starting
                    if on_ray_started is not None:
                        on_ray_started()
                    await asyncio.to_thread(backend.stop)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _serve_and_play(settings: Settings, graph: FakeGraphAPI, transcript: Transcript,
                          build_app: Any, wait: bool) -> int:
    from mtdesk.gateway.slowclients import serving_runner

    app = build_app(settings, expect_shards=True)
    runner = serving_runner(app, settings)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    base = f"http://{settings.host}:{settings.port}"
    transcript.line(f"gateway and admin API on {base}")
    try:
        admin_token = settings.admin_token.reveal() if settings.admin_token else ""
        key = await provision(base, admin_token, graph, transcript)
        messages, replies = await play_customers(base, graph, transcript)
        transcript.line(f"{messages} customer messages (one delivered twice), {replies} "
                        f"replies: {'each answered once' if replies == messages else 'MISMATCH'}")
        print(where_next(base, key, admin_token), flush=True)
        if wait:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        return 0 if replies == messages else 1
    finally:
        await runner.cleanup()
