"""``mtdesk shards [show]`` and ``mtdesk shards set N [--retrieval M] [--wait]``: the
conversation shard count of the running deployment and its partition ownership
(core/ownership.py), and its retrieval shards' count and generation
(core/retrieval_layout.py).

``set`` asks the running deployment for ``N`` conversation shards (what
``POST /admin/api/v1/cluster/shards`` does): the director hands the partitions over one
at a time while traffic flows; with ``--retrieval M`` also for ``M`` retrieval shards (a
new generation started, warmed, switched to, the old one stopped). With ``--wait`` the
command follows the change until it is done (exit 0) or stopped (exit 1, the reason
printed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core import cluster, ownership, retrieval_layout
from mtdesk.core.errors import ValidationError
from mtdesk.core.ownership import Ownership
from mtdesk.core.redis import Redis
from mtdesk.core.retrieval_layout import RetrievalLayout
from mtdesk.core.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "shards", help="conversation and retrieval shards: show them, or set the counts",
        description="The running deployment's conversation shards and the partitions each "
        "owns (with the ownership epoch) and its retrieval shards (count and generation), "
        "or new shard counts handed over live.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    show = verbs.add_parser("show", help="the partitions of each shard and the epoch, and "
                            "the retrieval shards")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)
    change = verbs.add_parser(
        "set", help="change the number of conversation shards while traffic flows",
        description="Ask the running deployment for N conversation shards. Partitions are "
        "handed over one at a time: the old owner finishes or persists its conversations "
        "and releases the partition, the new owner resumes its pending entries.")
    change.add_argument("count", metavar="N", type=int, help="conversation shards wanted")
    change.add_argument("--retrieval", type=int, metavar="M",
                        help="retrieval shards wanted (a new generation is started and "
                        f"warmed before it serves; 1 to {retrieval_layout.MAX_SHARDS})")
    change.add_argument("--wait", action="store_true", help="follow the handover to its end")
    change.add_argument("--timeout", type=float, default=600.0,
                        help="with --wait: give up after this many seconds (default 600)")
    change.set_defaults(handler=_set)
    parser.set_defaults(handler=_show, json=False)


def render(current: Ownership | None) -> str:
    if current is None:
        return "no ownership map: no deployment has started (mtdesk serve starts one)"
    lines = [f"{current.shards} conversation shard(s), epoch {current.epoch}"]
    if current.target is not None:
        moving = "" if current.moving is None else f", handing over partition {current.moving}"
        lines[0] += f"; re-sharding to {current.target}{moving}"
    if current.error:
        lines.append(f"last re-sharding stopped: {current.error}")
    for index, parts in sorted(current.per_shard().items()):
        lines.append(f"  {ownership.shard_name(index):<16} {len(parts):>3} partitions: "
                     + " ".join(str(p) for p in parts))
    return "\n".join(lines)


def render_retrieval(layout: RetrievalLayout | None) -> str:
    if layout is None:
        return "retrieval shards: none started yet (mtdesk serve starts them)"
    line = f"{layout.shards} retrieval shard(s), generation {layout.generation}"
    if layout.target is not None:
        line += f"; re-sharding to {layout.target}"
    if layout.error:
        line += f"\nlast retrieval re-sharding stopped: {layout.error}"
    return line


def _show(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings
                  ) -> tuple[Ownership | None, RetrievalLayout | None]:
        return await ownership.read(redis), await retrieval_layout.read(redis)

    current, layout = run_with_store(job)
    if args.json:
        # The map as before, with the retrieval layout under "retrieval".
        shown = msgspec.json.decode(ownership.to_json(current)) if current else None
        if shown is not None:
            shown["retrieval"] = msgspec.to_builtins(layout)
        print(msgspec.json.encode(shown).decode())
    else:
        print(render(current))
        print(render_retrieval(layout))
    return 0 if current is not None else 1


def _set(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> tuple[bool, str]:
        if not 1 <= args.count <= settings.partitions:
            raise ValidationError("count", f"must be between 1 and MTDESK_PARTITIONS "
                                  f"({settings.partitions})")
        if args.retrieval is not None and not 1 <= args.retrieval <= retrieval_layout.MAX_SHARDS:
            raise ValidationError("retrieval", f"must be between 1 and "
                                  f"{retrieval_layout.MAX_SHARDS}")
        if await cluster.read(redis) is None:
            return False, ("no deployment is running (mtdesk serve starts one), or it cannot "
                           "reach this Redis (MTDESK_REDIS_URL)")
        asked = await ownership.request(redis, args.count, args.retrieval)
        print(f"asked for {args.count} conversation shard(s)"
              + (f" and {args.retrieval} retrieval shard(s)" if args.retrieval else ""),
              flush=True)
        if not args.wait:
            return True, ""
        ok, problem = await _follow(redis, asked.time, args.count, args.timeout)
        if ok and args.retrieval is not None:
            return await _follow_retrieval(redis, asked.time, args.retrieval, args.timeout)
        return ok, problem

    ok, problem = run_with_store(job)
    if not ok:
        print(f"mtdesk: {problem}", file=sys.stderr)
        return 1
    return 0


_State = TypeVar("_State", Ownership, RetrievalLayout)


async def _follow_until(read: Callable[[], Awaitable[_State | None]],
                        render_one: Callable[[_State], str], what: str, asked_at: float,
                        count: int, timeout_s: float) -> tuple[bool, str]:
    """Print the state's first line as it changes until it holds ``count`` shards and no
    target (then the whole state), or its error for this request, or the timeout."""
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        current = await read()
        if current is not None:
            if current.error and current.time >= asked_at and current.target is None:
                return False, f"{what} stopped: {current.error}"
            if current.shards == count and current.target is None:
                print(render_one(current))
                return True, ""
            line = render_one(current).splitlines()[0]
            if line != shown:
                print(line, flush=True)
                shown = line
        await asyncio.sleep(0.5)
    return False, f"not done after {timeout_s:.0f} s (mtdesk shards show says where it is)"


async def _follow(redis: Redis, asked_at: float, count: int, timeout_s: float) -> tuple[bool, str]:
    return await _follow_until(lambda: ownership.read(redis), render, "re-sharding",
                               asked_at, count, timeout_s)


async def _follow_retrieval(redis: Redis, asked_at: float, count: int,
                            timeout_s: float) -> tuple[bool, str]:
    return await _follow_until(lambda: retrieval_layout.read(redis), render_retrieval,
                               "retrieval re-sharding", asked_at, count, timeout_s)
