"""The load generator of ``mtdesk bench e2e`` (runs in a process of its own).

Simulated customers: ``users`` distinct senders spread round-robin over Messenger,
Instagram and WhatsApp (and over each channel's accounts); message ``n`` comes from user
``n % users``, so one person writes every ``users / rate`` seconds. With
``new_fraction`` F, that share of the messages (spread evenly: message ``n`` is one when
``floor((n + 1) F) > floor(n F)``) comes instead from a customer of its own, never seen
before (user ``users + n``): a first contact, a new conversation. Each text carries a
unique token (``tk<n>k``) that the fake LLM echoes into the reply, which is how replies
are matched to messages. Bodies are the real formats, signed as Meta signs them.

Open loop: message ``n`` is due at ``start + n / rate`` whatever happened to earlier ones
(a slow server makes requests queue, it does not slow the offered rate); a chosen
fraction is delivered again (``extra_copies`` more times, each within ``redelivery_window_s``
of the first: 1 copy within 2 s by default), as Meta's retries are. With
``retry_rejected`` a delivery not answered 200 (a 503 while Redis is down, a connection a
killed worker dropped) is retried as Meta retries it, with back-off, until it is
acknowledged or ``retry_for_s`` has passed. The client is a
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
# A message's token: its prefix (the load's "tk", the warm-up's "wu", a drill's own) and n.
TOKEN = re.compile(r"\b([a-z]{2})(\d+)k\b")


def is_new_customer(n: int, new_fraction: float) -> bool:
    """Whether message ``n`` comes from a customer never seen before (see the module
    docstring): ``floor(N * new_fraction)`` of the first ``N`` messages, evenly spread."""
    return new_fraction > 0 and int((n + 1) * new_fraction) > int(n * new_fraction)


def customer_of(n: int, users: int, new_fraction: float = 0.0) -> int:
    """The customer number of message ``n``'s sender: ``n % users`` from the pool, or
    ``users + n`` (no one else's) for a message from a new customer."""
    return users + n if is_new_customer(n, new_fraction) else n % users


def user_of(n: int, users: int, accounts: dict[str, list[str]],
            new_fraction: float = 0.0) -> tuple[str, str, str]:
    """(channel, business account id, customer id) of the sender of message ``n``."""
    u = customer_of(n, users, new_fraction)
    channel = CHANNELS[u % 3]
    pool = accounts[channel]
    account = pool[(u // 3) % len(pool)]
    if channel == "whatsapp":
        return channel, account, f"1555{u:08d}"
    return channel, account, f"{7 if channel == 'messenger' else 8}{u:015d}"


def message_text(prefix: str, n: int) -> str:
    return f"Hello! Question {prefix}{n}k: do you have this in blue, and when can it ship?"


def build_request(n: int, *, prefix: str, run_id: str, users: int, accounts: dict[str, list[str]],
                  secret: str, timestamp_ms: int | None = None,
                  new_fraction: float = 0.0) -> bytes:
    """The raw HTTP request carrying message ``n`` (the same bytes on a redelivery), sent
    now or, with ``timestamp_ms``, at that time (a backlog Meta replays)."""
    from mtdesk.fakes.meta import meta_json, sign, text_payload

    channel, account, user = user_of(n, users, accounts, new_fraction)
    mid = (f"wamid.B{run_id}{prefix}{n}" if channel == "whatsapp" else f"m_B{run_id}{prefix}{n}")
    payload = text_payload(channel, account, user, message_text(prefix, n),  # type: ignore[arg-type]
                           timestamp_ms=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
                           message_id=mid)
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
    extra_copies: int = 1  # deliveries after the first of a duplicated message
    redelivery_window_s: float = 2.0
    retry_rejected: bool = False
    retry_for_s: float = 60.0
    new_fraction: float = 0.0  # share of messages from customers never seen before


@dataclass
class LoadResult:
    # message n → wall time its first delivery was written (time.time())
    sent_at: dict[int, float] = field(default_factory=dict)
    rejected: dict[int, int] = field(default_factory=dict)  # n → HTTP status of a non-200
    # n → wall time of its first 200 (with retry_rejected, maybe after some retries)
    acked_at: dict[int, float] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)  # status (599: dropped) → count
    retries: int = 0  # deliveries repeated because the first was not acknowledged
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
        status = 0
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
                conn = await reconnect()
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.acked_at.setdefault(n, time.time())
            if first:
                result.ack_ms.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    result.rejected[n] = status
            else:
                result.redeliveries += 1
                result.redelivery_errors += status != 200
        finally:
            pool.put_nowait(conn)
        if first and status != 200 and cfg.retry_rejected:
            spawn(retry(n, raw))

    async def reconnect() -> Connection:
        # The server may be restarting: try again for a while, as a client would.
        for attempt in range(200):
            try:
                _t, conn = await loop.create_connection(Connection, "127.0.0.1", cfg.port)
                return conn
            except OSError:
                await asyncio.sleep(min(0.5, 0.05 * (attempt + 1)))
        raise ConnectionError("the server did not come back")

    async def retry(n: int, raw: bytes) -> None:
        """Meta's retries of a delivery that was not acknowledged: back-off, until a 200."""
        give_up = time.perf_counter() + cfg.retry_for_s
        delay = 0.25
        while time.perf_counter() < give_up:
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
            conn = await pool.get()
            try:
                try:
                    status = await conn.request(raw)
                except ConnectionError:
                    status = 599
                    conn = await reconnect()
            finally:
                pool.put_nowait(conn)
            result.retries += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.acked_at.setdefault(n, time.time())
                result.rejected.pop(n, None)
                return
            result.rejected[n] = status

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
                            accounts=cfg.accounts, secret=cfg.secret,
                            new_fraction=cfg.new_fraction)
        spawn(deliver(n, raw, due, True))
        if rng.random() < cfg.duplicate_fraction:
            for _copy in range(cfg.extra_copies):
                again = due + rng.uniform(0.0, cfg.redelivery_window_s)
                last_due = max(last_due, again)
                loop.call_at(loop.time() + (again - time.perf_counter()),
                             spawn, deliver(n, raw, again, False))
    # the last redeliveries are due up to redelivery_window_s after the last first
    # delivery; retries of unacknowledged ones up to retry_for_s
    waits = int((30 + (cfg.retry_for_s if cfg.retry_rejected else 0)) / 0.05)
    for _ in range(waits):
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
