"""``mtdesk shards [show]`` and ``mtdesk shards set N [--wait]``: the conversation shard
count of the running deployment and its partition ownership (core/ownership.py).

``set`` asks the running deployment for ``N`` conversation shards (what
``POST /admin/api/v1/cluster/shards`` does): the director hands the partitions over one
at a time while traffic flows. With ``--wait`` the command follows the handover until it
is done (exit 0) or stopped (exit 1, the reason printed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from mtdesk.cli.store_session import run_with_store
from mtdesk.core import cluster, ownership
from mtdesk.core.errors import ValidationError
from mtdesk.core.ownership import Ownership
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "shards", help="conversation shards: show the partition ownership, or set the count",
        description="The running deployment's conversation shards and the partitions each "
        "owns (with the ownership epoch), or a new shard count handed over live.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    show = verbs.add_parser("show", help="the partitions of each shard and the epoch")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)
    change = verbs.add_parser(
        "set", help="change the number of conversation shards while traffic flows",
        description="Ask the running deployment for N conversation shards. Partitions are "
        "handed over one at a time: the old owner finishes or persists its conversations "
        "and releases the partition, the new owner resumes its pending entries.")
    change.add_argument("count", metavar="N", type=int, help="conversation shards wanted")
    change.add_argument("--retrieval", type=int, metavar="M",
                        help="retrieval shards (only the running count: they are not "
                        "re-sharded live)")
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


def _show(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> Ownership | None:
        return await ownership.read(redis)

    current = run_with_store(job)
    if args.json:
        print(ownership.to_json(current).decode() if current else "null")
    else:
        print(render(current))
    return 0 if current is not None else 1


def _set(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> tuple[bool, str]:
        if not 1 <= args.count <= settings.partitions:
            raise ValidationError("count", f"must be between 1 and MTDESK_PARTITIONS "
                                  f"({settings.partitions})")
        if args.retrieval is not None and args.retrieval != settings.retrieval_shards:
            raise ValidationError("retrieval", "retrieval shards are not re-sharded live (each "
                                  "holds a slice of every knowledge index): set "
                                  "MTDESK_RETRIEVAL_SHARDS and restart")
        if await cluster.read(redis) is None:
            return False, ("no deployment is running (mtdesk serve starts one), or it cannot "
                           "reach this Redis (MTDESK_REDIS_URL)")
        asked = await ownership.request(redis, args.count)
        print(f"asked for {args.count} conversation shard(s)", flush=True)
        if not args.wait:
            return True, ""
        return await _follow(redis, asked.time, args.count, args.timeout)

    ok, problem = run_with_store(job)
    if not ok:
        print(f"mtdesk: {problem}", file=sys.stderr)
        return 1
    return 0


async def _follow(redis: Redis, asked_at: float, count: int, timeout_s: float) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        current = await ownership.read(redis)
        if current is not None:
            if current.error and current.time >= asked_at and current.target is None:
                return False, f"re-sharding stopped: {current.error}"
            if current.shards == count and current.target is None:
                print(render(current))
                return True, ""
            line = render(current).splitlines()[0]
            if line != shown:
                print(line, flush=True)
                shown = line
        await asyncio.sleep(0.5)
    return False, f"not done after {timeout_s:.0f} s (mtdesk shards show says where it is)"
