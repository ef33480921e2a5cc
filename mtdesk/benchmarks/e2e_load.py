"""The load generator of ``mtdesk bench e2e`` (runs in a process of its own).

Simulated customers: ``users`` distinct senders spread round-robin over Messenger,
Instagram and WhatsApp (and over each channel's accounts); message ``n`` comes from user
``n % users``, so one person writes every ``users / rate`` seconds. Each text carries a
unique token (``tk<n>k``) that the fake LLM echoes into the reply, which is how replies
are matched to messages. Bodies are the real formats, signed as Meta signs them.

Open loop: message ``n`` is due at ``start + n / rate`` whatever happened to earlier ones
(a slow server makes requests queue, it does not slow the offered rate); a chosen
fraction is delivered a second time, 0–2 s later, as Meta's retries are. The client is a
minimal HTTP/1.1 keep-alive client on raw asyncio sockets, one request in flight per
connection (an aiohttp client would cost the shared CPU more than the server does).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mtdesk.benchmarks.rawhttp import Connection

CHANNELS = ("messenger", "instagram", "whatsapp")
TOKEN = re.compile(r"\b(tk|wu)(\d+)k\b")


def user_of(n: int, users: int, accounts: dict[str, list[str]]) -> tuple[str, str, str]:
    """(channel, business account id, customer id) of the sender of message ``n``."""
    u = n % users
    channel = CHANNELS[u % 3]
    pool = accounts[channel]
    account = pool[(u // 3) % len(pool)]
    if channel == "whatsapp":
        return channel, account, f"1555{u:08d}"
    return channel, account, f"{7 if channel == 'messenger' else 8}{u:015d}"


def message_text(prefix: str, n: int) -> str:
    return f"Hello! Question {prefix}{n}k: do you have this in blue, and when can it ship?"


def build_request(n: int, *, prefix: str, run_id: str, users: int, accounts: dict[str, list[str]],
                  secret: str) -> bytes:
    """The raw HTTP request carrying message ``n`` (the same bytes on a redelivery)."""
    from mtdesk.fakes.meta import meta_json, sign, text_payload

    channel, account, user = user_of(n, users, accounts)
    mid = (f"wamid.B{run_id}{prefix}{n}" if channel == "whatsapp" else f"m_B{run_id}{prefix}{n}")
    payload = text_payload(channel, account, user, message_text(prefix, n),  # type: ignore[arg-type]
                           timestamp_ms=int(time.time() * 1000), message_id=mid)
    body = meta_json(payload)
    return (
        b"POST /webhooks/meta HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"X-Hub-Signature-256: " + sign(body, secret).encode() + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )




@dataclass
class LoadConfig:
    port: int
    rate: float
    seconds: float
    users: int
    accounts: dict[str, list[str]]
    secret: str
    run_id: str
    prefix: str = "tk"
    duplicate_fraction: float = 0.05
    connections: int = 64
    seed: int = 1


@dataclass
class LoadResult:
    # message n → wall time its first delivery was written (time.time())
    sent_at: dict[int, float] = field(default_factory=dict)
    rejected: dict[int, int] = field(default_factory=dict)  # n → HTTP status of a non-200
    redeliveries: int = 0
    redelivery_errors: int = 0
    ack_ms: list[float] = field(default_factory=list)
    late: int = 0  # sends that left > 5 ms after they were due (generator or pool behind)
    started: float = 0.0
    finished: float = 0.0
    cpu_s: float = 0.0


async def generate(cfg: LoadConfig) -> LoadResult:
    loop = asyncio.get_running_loop()
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    conns: list[Connection] = []
    for _ in range(cfg.connections):
        _t, proto = await loop.create_connection(Connection, "127.0.0.1", cfg.port)
        conns.append(proto)
        pool.put_nowait(proto)
    rng = random.Random(cfg.seed)
    result = LoadResult()
    total = max(1, int(cfg.seconds * cfg.rate))
    tasks: set[asyncio.Task[None]] = set()

    async def deliver(n: int, raw: bytes, due: float, first: bool) -> None:
        conn = await pool.get()
        try:
            t0 = time.perf_counter()
            if first:
                if t0 - due > 0.005:
                    result.late += 1
                result.sent_at[n] = time.time()
            try:
                status = await conn.request(raw)
            except ConnectionError:
                status = 599
                _t, conn = await loop.create_connection(Connection, "127.0.0.1", cfg.port)
            if first:
                result.ack_ms.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    result.rejected[n] = status
            else:
                result.redeliveries += 1
                result.redelivery_errors += status != 200
        finally:
            pool.put_nowait(conn)

    def spawn(coro: Any) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    cpu0 = time.process_time()
    last_due = 0.0
    start = time.perf_counter() + 0.05
    result.started = time.time() + 0.05
    for n in range(total):
        due = start + n / cfg.rate
        now = time.perf_counter()
        if due - now > 0.001:
            await asyncio.sleep(due - now)
        raw = build_request(n, prefix=cfg.prefix, run_id=cfg.run_id, users=cfg.users,
                            accounts=cfg.accounts, secret=cfg.secret)
        spawn(deliver(n, raw, due, True))
        if rng.random() < cfg.duplicate_fraction:
            again = due + rng.uniform(0.0, 2.0)
            last_due = max(last_due, again)
            loop.call_at(loop.time() + (again - time.perf_counter()),
                         spawn, deliver(n, raw, again, False))
    # the last redeliveries are due up to 2 s after the last first delivery
    for _ in range(600):  # at most 30 s
        if not (tasks or len(result.ack_ms) < total or time.perf_counter() < last_due + 0.01):
            break
        await asyncio.sleep(0.05)
    result.finished = time.time()
    result.cpu_s = time.process_time() - cpu0
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result


def loadgen_main(cfg: LoadConfig, out: Any) -> None:
    """Entry point of the generator's process: puts ``asdict(LoadResult)`` on ``out``."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    res = asyncio.run(generate(cfg))
    out.put({**asdict(res), "pid": os.getpid()})
