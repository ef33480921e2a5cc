"""``mtdesk retention run|status|set``: delete message data older than the retention
period now, show what the sweeps did, set a tenant's period."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.policy.retention import (
    RetentionReport,
    RetentionStatus,
    RetentionSweep,
    read_retention_status,
    set_retention_days,
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "retention", help="message retention: run a sweep, status, set a tenant's period",
        description="Message data is kept at most MTDESK_RETENTION_DAYS (default and maximum "
        "365); a tenant may set less. The service sweeps on a schedule; 'run' sweeps now.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    run = verbs.add_parser("run", help="sweep now", description="Delete expired message data "
                           "now, for every tenant or the ones given.")
    run.add_argument("--tenant", action="append", metavar="ID", help="only this tenant "
                     "(repeatable)")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(handler=_run)
    status = verbs.add_parser("status", help="what the sweeps deleted, and when",
                              description="Totals deleted by type and the last run's time.")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    put = verbs.add_parser("set", help="set a tenant's retention period",
                           description="Keep this tenant's messages N days (1..365).")
    put.add_argument("--tenant", required=True, metavar="ID")
    put.add_argument("--days", required=True, type=int, metavar="N")
    put.set_defaults(handler=_set)


def _run(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> RetentionReport:
        return await RetentionSweep(redis, settings, SystemClock()).run(args.tenant)

    report = run_with_store(job)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(f"swept {report.tenants} tenant(s)")
        for name, n in sorted(report.deleted.items()):
            print(f"  {name}: {n}")
        if not report.deleted:
            print("  nothing was older than the retention period")
    return 0


def _status(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> RetentionStatus:
        return await read_retention_status(redis)

    status = run_with_store(job)
    if args.json:
        print(msgspec.json.encode(status).decode())
        return 0
    print(f"last run: {status.last_run_ms or 'never'} (ms since the epoch)")
    for name, n in sorted(status.deleted.items()):
        print(f"  deleted {name}: {n}")
    return 0


def _set(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> int:
        return await set_retention_days(redis, settings, args.tenant, args.days)

    print(f"tenant {args.tenant}: messages kept {run_with_store(job)} days")
    return 0
