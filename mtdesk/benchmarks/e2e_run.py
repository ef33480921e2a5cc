"""The orchestration of ``mtdesk bench e2e`` (see :mod:`mtdesk.benchmarks.e2e`).

:func:`run` starts every process, provisions through the admin API, warms up, runs the
load generator, drains, and returns the report (a JSON-able dict). Everything it starts
is stopped on the way out, also on errors. Top-level imports stay light (stdlib only):
``mtdesk bench`` imports this module on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtdesk.benchmarks.e2e_load import TOKEN, LoadConfig, build_request, customer_of, loadgen_main
from mtdesk.benchmarks.e2e_measure import CpuMeter

if TYPE_CHECKING:
    from mtdesk.benchmarks.drill import Drill

APP_SECRET = "bench-e2e-app-secret"
ADMIN_TOKEN = "bench-e2e-admin-token-of-32-chars-or-more"
MODEL = "bench-model"
ACCOUNTS_PER_CHANNEL = 2  # keeps each account under Meta's per-Page 300/s at high rates
Log = Callable[[str], None]
PRODUCT = ("gateway", "shards", "redis", "ray_other")


@dataclass
class BenchConfig:
    seconds: float = 20.0
    rate: float = 300.0
    users: int = 3000
    llm_latency_ms: float = 300.0
    graph_latency_ms: float = 0.0
    shards: int = 2
    duplicate_fraction: float = 0.05
    drain_timeout_s: float = 60.0
    connections: int = 64
    redis_url: str | None = None
    profile_dir: str | None = None
    warmup_messages: int = 30
    # A simulated multi-node Ray cluster on this machine (1: one local Ray instance).
    nodes: int = 1
    # The node-kill drill: this long into the load, kill the worker node holding the most
    # conversation shards; node_failure_s: how soon Ray declares a silent node dead.
    kill_node_after_s: float | None = None
    node_failure_s: float | None = None
    # Drills: `mtdesk serve --workers N`; each duplicated message delivered
    # redelivery_copies more times within redelivery_window_s; deliveries not answered 200
    # retried as Meta retries them (retry_rejected).
    gateway_workers: int = 1
    redelivery_copies: int = 1
    redelivery_window_s: float = 2.0
    retry_rejected: bool = False
    # --new-customers: this share of the load's messages from customers never seen before,
    # the others from the --users customers, each of whom has written once before the load
    # (None: no such introduction; a customer's first message in the load is a first
    # contact too).
    new_fraction: float | None = None
    # --cluster: a Redis Cluster of the bench's own (3 masters, 1 replica each).
    cluster: bool = False
    # The fake Graph API posts the echo (Messenger/Instagram) or status (WhatsApp) of every
    # message sent back to the gateway, as Meta does: what a reply resumed after a crash
    # learns from whether its part went out (docs/delivery.md).
    meta_webhooks: bool = False


# --- processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def _gateway(env: dict[str, str], port: int, workdir: str,
             workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    workers_arg = ["--workers", str(workers)] if workers > 1 else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtdesk", "serve", "--no-actors", "--port", str(port),
         *workers_arg],
        env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=None,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _bench_env(redis_url: str, graph_root: str, llm_root: str, port: int, data_dir: str,
               shards: int) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    env.update({
        "MTDESK_REDIS_URL": redis_url,
        "MTDESK_GRAPH_API_BASE": f"{graph_root}/v25.0",
        "MTDESK_OPENAI_BASE_URL": f"{llm_root}/v1",
        "MTDESK_OPENAI_API_KEY": "bench-key",
        "MTDESK_PORT": str(port),
        "MTDESK_DATA_DIR": data_dir,
        "MTDESK_META_APP_SECRET": APP_SECRET,
        "MTDESK_META_VERIFY_TOKEN": "bench-verify",
        "MTDESK_ADMIN_TOKEN": ADMIN_TOKEN,
        "MTDESK_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "MTDESK_SHARDS": str(shards),
        # A high-volume WhatsApp number (Meta allows up to 1,000 mps); 80 would cap the bench.
        "MTDESK_WHATSAPP_MPS": "1000",
        "MTDESK_KB_EMBEDDER": "lexical",
    })
    return env


# --- provisioning and matching -------------------------------------------------------------


async def _call(session: Any, method: str, url: str, token: str, **kwargs: Any) -> Any:
    async with session.request(method, url, headers={"Authorization": f"Bearer {token}"},
                               **kwargs) as resp:
        body = await resp.json(content_type=None)
        if resp.status >= 400:
            raise RuntimeError(f"{method} {url} answered {resp.status}: {body}")
        return body


async def _provision(session: Any, base: str, graph_root: str) -> tuple[dict[str, list[str]], str]:
    """One tenant, ACCOUNTS_PER_CHANNEL accounts on each channel, the bot on the fake LLM."""
    api = f"{base}/admin/api/v1"
    tenant = await _call(session, "POST", f"{api}/tenants", ADMIN_TOKEN,
                         json={"name": "Bench Shop", "email": "bench@example.test"})
    key = tenant["api_key"]
    accounts: dict[str, list[str]] = {}
    for c, channel in enumerate(("messenger", "instagram", "whatsapp")):
        for i in range(ACCOUNTS_PER_CHANNEL):
            account = f"{90 + c}{i:013d}"
            token = f"bench-token-{channel}-{i}"
            await _call(session, "POST", f"{graph_root}/_fake/accounts", "-",
                        json={"account_id": account, "token": token, "channel": channel})
            await _call(session, "POST", f"{api}/channels", key,
                        json={"channel": channel, "account_id": account, "access_token": token})
            accounts.setdefault(channel, []).append(account)
    await _call(session, "PUT", f"{api}/bot", key, json={
        "provider": "openai", "model": MODEL,
        "system_prompt": "You answer the customers of Bench Shop briefly."})
    return accounts, key


class Replies:
    """Polls the fake Graph API's recorded sends and matches them to message tokens."""

    def __init__(self, graph_root: str) -> None:
        self.url = f"{graph_root}/_fake/sends"
        self.seen = 0
        self.first: dict[tuple[str, int], float] = {}  # (prefix, n) → first reply time
        self.count: dict[tuple[str, int], int] = {}
        self.sends = 0
        self.multi = 0  # replies answering several messages (a burst)
        self.unmatched = 0
        self.last_time = 0.0
        self.to: dict[str, list[tuple[float, str]]] = {}  # recipient → [(time, text)]
        self.answered_customers: set[str] = set()  # recipients of the load's replies

    async def poll(self, session: Any) -> int:
        async with session.get(self.url, params={"since": str(self.seen)}) as resp:
            records = await resp.json()
        for rec in records:
            body = rec.get("body") or {}
            if body.get("messaging_product") == "whatsapp":
                text = (body.get("text") or {}).get("body") or ""
            else:
                text = (body.get("message") or {}).get("text") or ""
            found = {(m.group(1), int(m.group(2))) for m in TOKEN.finditer(text)}
            recipient = body.get("recipient")
            who = recipient.get("id") if isinstance(recipient, dict) else recipient or body.get("to")
            self.to.setdefault(str(who), []).append((float(rec["time"]), text))
            self.sends += 1
            self.unmatched += not found
            self.multi += len(found) > 1
            if any(prefix == "tk" for prefix, _n in found):
                self.answered_customers.add(str(who))
            for token in found:
                self.count[token] = self.count.get(token, 0) + 1
                self.first.setdefault(token, float(rec["time"]))
            self.last_time = max(self.last_time, float(rec["time"]))
        self.seen += len(records)
        return len(records)

    def answered(self, prefix: str, ns: Any) -> int:
        return sum(1 for n in ns if (prefix, n) in self.first)


async def _wait_answered(session: Any, replies: Replies, prefix: str, ns: list[int],
                         timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        await replies.poll(session)
        if replies.answered(prefix, ns) == len(ns):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)


async def _warmup(session: Any, port: int, replies: Replies, accounts: dict[str, list[str]],
                  cfg: BenchConfig, run_id: str) -> None:
    """A few messages first (the shards open their clients and connections)."""
    from mtdesk.benchmarks.rawhttp import Connection

    loop = asyncio.get_running_loop()
    _t, conn = await loop.create_connection(Connection, "127.0.0.1", port)
    ns = list(range(cfg.warmup_messages))
    try:
        for n in ns:
            raw = build_request(n, prefix="wu", run_id=run_id, users=cfg.users,
                                accounts=accounts, secret=APP_SECRET)
            status = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"warm-up webhook answered {status}")
    finally:
        conn.transport.close()
    if not await _wait_answered(session, replies, "wu", ns, 60.0):
        raise RuntimeError("warm-up messages were not answered within 60 s")


async def _introduce(cfg: BenchConfig, log: Log, ctx: Any, out: Any, port: int,
                     accounts: dict[str, list[str]], run_id: str, replies: Replies,
                     session: Any) -> None:
    """``--new-customers``: each of the ``--users`` customers writes once (at ``--rate``,
    answered before the load starts), so that the load's messages from them are from
    customers with a conversation, and only the new customers' are first contacts."""
    intro = LoadConfig(port=port, rate=cfg.rate, seconds=cfg.users / cfg.rate, users=cfg.users,
                       accounts=accounts, secret=APP_SECRET, run_id=run_id, prefix="in",
                       duplicate_fraction=0.0, connections=cfg.connections)
    log(f"introducing the {cfg.users} known customers (one message each)…")
    proc = ctx.Process(target=loadgen_main, args=(intro, out), daemon=True)
    proc.start()
    load = await _collect_load(proc, out, replies, session, cfg)
    accepted = [int(n) for n in load["sent_at"] if int(n) not in load["rejected"]]
    if len(accepted) < cfg.users or not await _wait_answered(
            session, replies, "in", accepted, max(60.0, cfg.drain_timeout_s)):
        raise RuntimeError("the known customers' first messages were not all answered")


def _first_contacts(cfg: BenchConfig, accepted: list[int]) -> set[int]:
    """The load's messages whose sender had not written before (in the warm-up, the
    introduction of ``--new-customers`` or earlier in the load)."""
    fraction = cfg.new_fraction or 0.0
    seen = {n % cfg.users for n in range(cfg.warmup_messages)}
    if cfg.new_fraction is not None:
        seen.update(range(cfg.users))
    first: set[int] = set()
    for n in sorted(accepted):
        who = customer_of(n, cfg.users, fraction)
        if who not in seen:
            seen.add(who)
            first.add(n)
    return first


# --- queue lag ------------------------------------------------------------------------------


async def _sample_lag(redis_url: str, partitions: int, stop: asyncio.Event,
                      out: list[tuple[int, int]], cluster: bool = False,
                      issued: list[int] | None = None) -> None:
    """(lag, pending) summed over the partitions every second: entries not yet read by a
    shard, and read but not yet acknowledged. ``issued[0]`` counts the commands sent (the
    bench's own, left out of the product's commands per message)."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    from mtdesk.core import keys

    client: Any = (RedisCluster.from_url(redis_url) if cluster
                   else aioredis.Redis.from_url(redis_url))
    try:
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            for p in range(partitions):
                pipe.xinfo_groups(keys.inbound(p))
            if issued is not None:
                issued[0] += partitions
            lag = pending = 0
            try:
                results = await pipe.execute(raise_on_error=False)
            except (OSError, aioredis.RedisError):  # Redis down (a drill): no sample
                results = []
            for groups in results:
                if isinstance(groups, Exception):
                    continue
                for g in groups:
                    lag += int(g.get("lag") or 0)
                    pending += int(g.get("pending") or 0)
            out.append((lag, pending))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await client.aclose()


# --- the run ----------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def run(cfg: BenchConfig, log: Log = lambda line: None, drill: Drill | None = None
        ) -> dict[str, Any]:
    """Run the bench; returns the report. Starts and stops everything it needs. A
    ``drill`` (:mod:`mtdesk.benchmarks.drill`) acts on the running product: its Redis, its
    environment, its bot, a blow during the load, a phase after the drain."""
    return asyncio.run(_run(cfg, log, drill))


async def _run(cfg: BenchConfig, log: Log, drill: Drill | None = None) -> dict[str, Any]:
    from mtdesk.cli.localredis import free_port, local_redis
    from mtdesk.fakes.graph import spawn_graph
    from mtdesk.fakes.llm import spawn_llm

    workdir = tempfile.mkdtemp(prefix="mtdesk-bench-e2e-")
    redis_pids: list[int] = []
    replica_pids: list[int] = []
    servers: list[str] = []  # what INFO is read from: the one server, or every master
    try:
        with contextlib.ExitStack() as stack:
            own = drill.redis(workdir) if drill is not None else None
            if own is not None:
                redis_url = stack.enter_context(own)
            elif cfg.cluster:
                redis_url, masters, replicas = stack.enter_context(_cluster(workdir))
                servers = [f"redis://127.0.0.1:{port}/0" for port in masters]
                redis_pids.extend(masters.values())
                replica_pids.extend(replicas.values())
            elif cfg.redis_url:
                redis_url = cfg.redis_url
                _flush(redis_url)
                stack.callback(_flush, redis_url)
            else:
                redis_url = stack.enter_context(local_redis(
                    workdir, who="mtdesk bench e2e", prefer_own="always", pid_out=redis_pids))
            servers = servers or [redis_url]
            llm = stack.enter_context(spawn_llm(latency_ms=cfg.llm_latency_ms))
            port = free_port()
            graph = stack.enter_context(spawn_graph(
                latency_ms=cfg.graph_latency_ms,
                webhook_url=f"http://127.0.0.1:{port}/webhooks/meta" if cfg.meta_webhooks
                else None, app_secret=APP_SECRET if cfg.meta_webhooks else ""))
            env = _bench_env(redis_url, graph.root_url, llm.root_url, port,
                             os.path.join(workdir, "data"), cfg.shards)
            if cfg.cluster:
                env["MTDESK_REDIS_CLUSTER"] = "true"
            if drill is not None:
                drill.tune(env, stack)
            gateway = stack.enter_context(_gateway(env, port, workdir, cfg.gateway_workers))
            log(f"Redis {redis_url}, fake LLM {llm.root_url} ({cfg.llm_latency_ms:.0f} ms), "
                f"fake Graph API {graph.root_url}; gateway on port {port}; starting Ray…")
            from mtdesk.cli.backend import Backend
            from mtdesk.core.settings import Settings

            cluster = None
            if cfg.nodes > 1:
                from mtdesk.actors import rayapi

                cluster = stack.enter_context(rayapi.local_cluster(
                    cfg.nodes, node_failure_s=cfg.node_failure_s))
                log(f"a simulated cluster of {cfg.nodes} Ray nodes is up")
            settings = Settings.from_env(env, dotenv=None)
            backend = Backend(settings, policy=False)
            stack.callback(backend.stop)
            await asyncio.to_thread(backend.start)
            shard_pids = _shard_pids(cfg.shards)
            named = {"gateway": [gateway.pid], "shards": shard_pids, "fake_llm": [llm.pid],
                     "fake_graph": [graph.pid], "redis": redis_pids}
            if replica_pids:
                named["redis_replicas"] = replica_pids
            from mtdesk.benchmarks.drill import Rig

            rig = Rig(cfg=cfg, log=log, port=port, env=env, redis_url=redis_url,
                      graph_root=graph.root_url, llm_root=llm.root_url, gateway=gateway,
                      cluster=cluster, workdir=workdir, llm=llm, stack=stack)
            return await _measure(cfg, log, settings, port, graph.root_url, redis_url, named,
                                  rig, drill, servers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _cluster(workdir: str) -> Iterator[tuple[str, dict[int, int], dict[int, int]]]:
    """A Redis Cluster of the bench's own (3 masters with a replica each, on free ports,
    stopped by pid on the way out): (a node's URL, master port → pid, replica port → pid).
    The node timeout is long (15 s): on a busy machine a master slow to answer must not be
    failed over in the middle of a measurement."""
    import redis

    from mtdesk.cli.localredis import local_cluster

    pids: list[int] = []
    with local_cluster(workdir, who="mtdesk bench e2e", pid_out=pids,
                       node_timeout_ms=15000) as (url, ports):
        masters: dict[int, int] = {}
        replicas: dict[int, int] = {}
        for port, pid in zip(ports, pids, strict=True):
            client = redis.Redis(port=port)
            try:
                role = client.info("replication").get("role")
            finally:
                client.close()
            (masters if role == "master" else replicas)[port] = pid
        yield url, masters, replicas


def _shard_pids(shards: int) -> list[int]:
    """The conversation shard actors' process ids (their ping says)."""
    from mtdesk.actors import rayapi
    from mtdesk.actors.deploy import conversation_shard_name

    handles = [rayapi.find(conversation_shard_name(i)) for i in range(shards)]
    infos: list[dict[str, Any]] = rayapi.get([h.ping.remote() for h in handles if h], 30)
    return [int(info["pid"]) for info in infos]


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


async def _wait_healthy(session: Any, base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not come up")
        await asyncio.sleep(0.1)


async def _measure(cfg: BenchConfig, log: Log, settings: Any, port: int, graph_root: str,
                   redis_url: str, named: dict[str, list[int]],
                   rig: Any = None, drill: Drill | None = None,
                   servers: list[str] | None = None) -> dict[str, Any]:
    import multiprocessing

    import aiohttp

    base = f"http://127.0.0.1:{port}"
    run_id = secrets.token_hex(3)
    async with aiohttp.ClientSession() as session:
        await _wait_healthy(session, base)
        accounts, tenant_key = await _provision(session, base, graph_root)
        replies = Replies(graph_root)
        if rig is not None:
            rig.session, rig.base, rig.replies, rig.accounts = session, base, replies, accounts
            rig.run_id, rig.tenant_key = run_id, tenant_key
        if drill is not None:
            await drill.provision(rig)
        log("provisioned 1 tenant on 6 accounts; warming up…")
        await _warmup(session, port, replies, accounts, cfg, run_id)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        if cfg.new_fraction is not None:
            await _introduce(cfg, log, ctx, out, port, accounts, run_id, replies, session)
        warm_sends = replies.sends

        load_cfg = LoadConfig(port=port, rate=cfg.rate, seconds=cfg.seconds, users=cfg.users,
                              accounts=accounts, secret=APP_SECRET, run_id=run_id,
                              duplicate_fraction=cfg.duplicate_fraction,
                              connections=cfg.connections, extra_copies=cfg.redelivery_copies,
                              redelivery_window_s=cfg.redelivery_window_s,
                              retry_rejected=cfg.retry_rejected,
                              new_fraction=cfg.new_fraction or 0.0)
        meter = CpuMeter(named)
        proc = ctx.Process(target=loadgen_main, args=(load_cfg, out), daemon=True)
        stop_lag = asyncio.Event()
        lag: list[tuple[int, int]] = []
        sampled = [0]  # XINFO GROUPS the lag sampler sent: the bench's, not the product's
        lag_task = asyncio.create_task(_sample_lag(redis_url, settings.partitions, stop_lag, lag,
                                                   cluster=cfg.cluster, issued=sampled))
        from mtdesk.benchmarks.e2e_report import scrape_settled, scrape_stages, stage_quantiles

        stages_before = await scrape_stages(session, base)
        cpu_before = meter.sample()
        servers = servers or [redis_url]
        # one snapshot per server, the total their sum (the product goes on sending commands
        # between two reads)
        each_before = {url: _command_calls([url]) for url in servers}
        sampled_before = sampled[0]
        redis_cpu_before = _redis_cpu_s(servers)
        proc.start()
        log(f"sending {cfg.rate:.0f} msgs/s for {cfg.seconds:.0f} s from {cfg.users} customers…")
        spies = []
        if cfg.profile_dir:
            from mtdesk.benchmarks.e2e_measure import start_profiles

            targets = {"gateway": named["gateway"][0],
                       **{f"shard{i}": pid for i, pid in enumerate(named["shards"])}}
            spies = start_profiles(cfg.profile_dir, targets, cfg.seconds)
        figures: dict[str, Any] = {}
        blow = None
        if drill is not None:
            rig.load_started = time.time()
            blow = asyncio.create_task(drill.blow(rig, figures))
        load = await _collect_load(proc, out, replies, session, cfg)
        accepted = sorted(int(n) for n in load["sent_at"] if int(n) not in load["rejected"])
        log(f"sent {len(accepted)} messages; draining…")
        if blow is not None:
            await blow
        drained = await _wait_answered(session, replies, "tk", accepted, cfg.drain_timeout_s)
        if drill is not None:
            await drill.after(rig, figures)
        cpu_after = meter.sample()
        each_calls = {url: _command_calls([url], each_before[url]) for url in servers}
        cmds = _merged(each_calls.values())
        sampler_calls = sampled[0] - sampled_before
        if sampler_calls and "xinfo|groups" in cmds:
            cmds["xinfo|groups"] = max(0, cmds["xinfo|groups"] - sampler_calls)
        # per server, XINFO GROUPS left out: the lag sampler's share of each is not known
        each = {url: sum(v for k, v in calls.items() if k != "xinfo|groups")
                for url, calls in each_calls.items()}
        redis_cpu = _redis_cpu_s(servers) - redis_cpu_before
        await asyncio.sleep(1.5)  # a duplicate reply, were there one, would show up here
        stages = stage_quantiles(
            await scrape_settled(session, base, stages_before, len(accepted)), stages_before)
        await replies.poll(session)
        webhooks = None
        if cfg.meta_webhooks:  # what the fake posted back (echoes / statuses)
            async with session.get(f"{graph_root}/_fake/webhooks") as resp:
                webhooks = await resp.json()
        stop_lag.set()
        await lag_task
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
    report = _report(cfg, load, accepted, replies, warm_sends, drained,
                     meter.between(cpu_before, cpu_after), cpu_after["at"] - cpu_before["at"], lag)
    report["stage_ms"] = stages
    report["customers_answered"] = len(replies.answered_customers)
    report["redis_servers"] = servers
    if webhooks is not None:
        report["meta_webhooks"] = webhooks
    # Redis' own account of its CPU (INFO cpu), whatever machine it runs on.
    answered = report["messages"] - report["lost"]
    report["redis_cpu_s"] = round(redis_cpu, 3)
    report["redis_cpu_us_per_msg"] = round(redis_cpu * 1e6 / answered, 1) if answered else 0.0
    report["msgs_per_s_per_redis_core"] = round(answered / redis_cpu) if redis_cpu > 0 else 0
    if drill is not None:
        report["drill"] = figures
    if cfg.profile_dir:
        from mtdesk.benchmarks.e2e_measure import summarise

        report["profile"] = {
            name.removesuffix(".txt"): summarise(os.path.join(cfg.profile_dir, name))
            for name in sorted(os.listdir(cfg.profile_dir)) if name.endswith(".txt")}
    if report["messages"]:
        per = {k: round(v / report["messages"], 2) for k, v in cmds.items()}
        report["redis_calls_per_msg"] = round(sum(per.values()), 2)
        # The lag sampler's XINFO GROUPS (64 a second) are the bench's, left out above.
        report["redis_calls_per_msg_bench_sampler"] = round(sampler_calls / report["messages"], 2)
        # per server (each master of a cluster): the keys' slots spread the work (XINFO
        # GROUPS left out)
        report["redis_calls_per_msg_by_server"] = {
            url: round(v / report["messages"], 2) for url, v in each.items()}
        report["redis_calls_per_msg_by_command"] = dict(
            sorted(((k, v) for k, v in per.items() if v >= 0.01), key=lambda kv: -kv[1]))
    return report


def _info(url: str, section: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def _redis_cpu_s(urls: list[str]) -> float:
    """CPU seconds the Redis servers have used (INFO cpu: used_cpu_user + used_cpu_sys),
    summed over ``urls`` (the one server, or every master of a cluster)."""
    total = 0.0
    for url in urls:
        info = _info(url, "cpu")
        total += float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))
    return total


def _merged(per_server: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for calls in per_server:
        for name, n in calls.items():
            out[name] = out.get(name, 0) + n
    return out


def _command_calls(urls: list[str], since: dict[str, int] | None = None) -> dict[str, int]:
    """Commands the Redis servers of ``urls`` executed, by name, summed (INFO
    commandstats; minus ``since``), counting those run inside scripts too."""
    calls: dict[str, int] = {}
    for url in urls:
        for k, v in _info(url, "commandstats").items():
            name = k.removeprefix("cmdstat_")
            calls[name] = calls.get(name, 0) + int(v["calls"])
    if since is not None:
        calls = {k: v - since.get(k, 0) for k, v in calls.items() if v - since.get(k, 0) > 0}
    return calls


async def _collect_load(proc: Any, out: Any, replies: Replies, session: Any,
                        cfg: BenchConfig) -> dict[str, Any]:
    """Poll replies while the generator runs; its result when it is done."""
    give_up = time.monotonic() + cfg.seconds + 120
    while True:
        await replies.poll(session)
        try:
            data: dict[str, Any] = out.get_nowait()
            break
        except queue.Empty:
            if not proc.is_alive() or time.monotonic() > give_up:
                proc.kill()
                raise RuntimeError("the load generator died; see its traceback above") from None
        await asyncio.sleep(0.25)
    proc.join(10)
    return data


def _report(cfg: BenchConfig, load: dict[str, Any], accepted: list[int], replies: Replies,
            warm_sends: int, drained: bool, cpu: dict[str, float], cpu_window_s: float,
            lag: list[tuple[int, int]]) -> dict[str, Any]:
    sent_at: dict[int, float] = {int(k): v for k, v in load["sent_at"].items()}
    knobs_ms = cfg.llm_latency_ms + cfg.graph_latency_ms
    e2e: list[float] = []
    counts = [replies.count.get(("tk", n), 0) for n in accepted]
    for n in accepted:
        t = replies.first.get(("tk", n))
        if t is not None:
            e2e.append((t - sent_at[n]) * 1000)
    overhead = [x - knobs_ms for x in e2e]
    first_contact = _first_contacts(cfg, accepted)
    by_kind: dict[bool, list[float]] = {True: [], False: []}
    for n in accepted:
        t = replies.first.get(("tk", n))
        if t is not None:
            by_kind[n in first_contact].append((t - sent_at[n]) * 1000 - knobs_ms)
    first_at = min((sent_at[n] for n in accepted), default=0.0)
    by_second: dict[int, list[float]] = {}
    for n in accepted:
        t = replies.first.get(("tk", n))
        if t is not None:
            by_second.setdefault(int(sent_at[n] - first_at), []).append(
                (t - sent_at[n]) * 1000 - knobs_ms)
    answered = sum(1 for c in counts if c > 0)
    sent_per_s: dict[int, int] = {}
    answered_per_s: dict[int, int] = {}
    for n in accepted:
        sent_per_s[int(sent_at[n] - first_at)] = sent_per_s.get(int(sent_at[n] - first_at), 0) + 1
        t = replies.first.get(("tk", n))
        if t is not None:
            answered_per_s[int(t - first_at)] = answered_per_s.get(int(t - first_at), 0) + 1
    ranked = sorted(overhead)
    first_send = min((sent_at[n] for n in accepted), default=0.0)
    last_reply = max((replies.first[("tk", n)] for n in accepted if ("tk", n) in replies.first),
                     default=first_send)
    first_reply = min((replies.first[("tk", n)] for n in accepted if ("tk", n) in replies.first),
                      default=last_reply)
    span = last_reply - first_send
    # Sustained: the rate replies went out, first reply to last. (Counting from the first
    # send also counts the pipeline filling up, one LLM latency: at 300 msgs/s for 20 s
    # that alone reads 295.6 for a system that keeps up.) A system that falls behind
    # answers its last message late, and this rate drops with it.
    reply_span = last_reply - first_reply
    msgs_per_s = (answered - 1) / reply_span if answered > 1 and reply_span > 0 else 0.0
    send_span = max(sent_at.values(), default=0.0) - first_send
    per_msg = {k: round(v * 1000 / answered, 3) for k, v in cpu.items() if answered}
    per_msg["loadgen"] = round(load["cpu_s"] * 1000 / answered, 3) if answered else 0.0
    ours = sum(v for k, v in cpu.items() if k != "machine_all_processes") + load["cpu_s"]
    report: dict[str, Any] = {
        "messages": len(accepted),
        "replied_once": sum(1 for c in counts if c == 1),
        "lost": sum(1 for c in counts if c == 0),
        "duplicated": sum(1 for c in counts if c > 1),
        "msgs_per_s": round(msgs_per_s, 1),
        "msgs_per_s_from_first_send": round(answered / span, 1) if span > 0 else 0.0,
        "offered_rate": cfg.rate,
        "achieved_send_rate": round(len(accepted) / send_span, 1) if send_span > 0 else 0.0,
        "e2e_p50_ms": _pct(e2e, 0.50),
        "e2e_p99_ms": _pct(e2e, 0.99),
        "e2e_max_ms": _pct(e2e, 1.0),
        "overhead_p50_ms": _pct(overhead, 0.50),
        "overhead_p90_ms": _pct(overhead, 0.90),
        "overhead_p99_ms": _pct(overhead, 0.99),
        # first contacts (a new conversation) and the others (a customer who wrote before)
        "first_contact_messages": len(first_contact),
        "first_contact_share": round(len(first_contact) / len(accepted), 4) if accepted else 0.0,
        "overhead_first_contact_p50_ms": _pct(by_kind[True], 0.50),
        "overhead_first_contact_p99_ms": _pct(by_kind[True], 0.99),
        "overhead_known_p50_ms": _pct(by_kind[False], 0.50),
        "overhead_known_p99_ms": _pct(by_kind[False], 0.99),
        # [second of sending, messages sent then, overhead p50, p99]: stalls show here
        "overhead_by_second": [[sec, len(xs), _pct(xs, 0.5), _pct(xs, 0.99)]
                               for sec, xs in sorted(by_second.items())],
        # for plots (--report): per second since the first send, and the overhead's
        # distribution as its 0th..100th percentiles
        "series": {
            "sent_per_s": [[k, sent_per_s[k]] for k in sorted(sent_per_s)],
            "answered_per_s": [[k, answered_per_s[k]] for k in sorted(answered_per_s)],
            "overhead_ms_percentiles": [round(ranked[min(len(ranked) - 1,
                                                         int(q / 100 * len(ranked)))], 2)
                                        for q in range(101)] if ranked else [],
        },
        "ack_p50_ms": _pct(load["ack_ms"], 0.50),
        "ack_p99_ms": _pct(load["ack_ms"], 0.99),
        "drained": drained,
        "drain_s": round(max(0.0, last_reply - max(sent_at.values(), default=0.0)), 2),
        "replies": replies.sends - warm_sends,
        "replies_answering_several": replies.multi,
        "replies_unmatched": replies.unmatched,
        "redeliveries": load["redeliveries"],
        # every answer the webhook gave (599: the connection dropped), Meta's retries of
        # the deliveries not acknowledged, and the messages never acknowledged
        "statuses": {str(k): v for k, v in sorted(load["statuses"].items())},
        "retries": load["retries"],
        "not_acknowledged": len(load["rejected"]),
        "redelivery_errors": load["redelivery_errors"],
        "rejected": len(load["rejected"]),
        "late_sends": load["late"],
        "queue_lag_max": max((x[0] for x in lag), default=0),
        "queue_pending_max": max((x[1] for x in lag), default=0),
        "queue_pending_mean": round(sum(x[1] for x in lag) / len(lag), 1) if lag else 0.0,
        "cpu_s": {**cpu, "loadgen": round(load["cpu_s"], 3)},
        "cpu_ms_per_msg": per_msg,
        "cpu_ms_per_msg_total_ours": round(ours * 1000 / answered, 3) if answered else 0.0,
        # what a deployment runs (the fakes and the load generator stand in for the world)
        "cpu_ms_per_msg_product": round(sum(cpu[k] for k in PRODUCT) * 1000 / answered, 3)
        if answered else 0.0,
        # CPU of processes that are not the bench's (a shared machine): its figures suffer
        "other_processes_cpu_s": round(cpu["machine_all_processes"] - ours, 2),
        "cpu_window_s": round(cpu_window_s, 2),
        "machine_busy_cores": round(cpu["machine_all_processes"] / cpu_window_s, 2)
        if cpu_window_s > 0 else 0.0,
        "config": {"seconds": cfg.seconds, "users": cfg.users, "shards": cfg.shards,
                   "llm_latency_ms": cfg.llm_latency_ms, "graph_latency_ms": cfg.graph_latency_ms,
                   "duplicate_fraction": cfg.duplicate_fraction, "connections": cfg.connections,
                   "accounts_per_channel": ACCOUNTS_PER_CHANNEL, "nodes": cfg.nodes,
                   "new_customers": cfg.new_fraction, "redis_cluster": cfg.cluster,
                   "meta_webhooks": cfg.meta_webhooks},
        "cpus": os.cpu_count(),
        "goal": {"lost": 0, "duplicated": 0, "msgs_per_s": 300.0, "overhead_p99_ms": 50.0},
    }
    report["meets_goal"] = (report["lost"] == 0 and report["duplicated"] == 0
                            and report["msgs_per_s"] >= 300.0 and report["overhead_p99_ms"] <= 50.0)
    return report
