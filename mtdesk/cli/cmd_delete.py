"""``mtdesk delete account|channel|user|status``: erasure jobs from the command line.

By default the job is scheduled AND run here, then its audit record is printed (the
running service's deletion worker would pick it up too; running it twice is harmless).
``--no-wait`` only schedules it.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from mtdesk.cli.cmd_export import parse_user
from mtdesk.cli.store_session import run_with_store
from mtdesk.core.clock import Clock, SystemClock
from mtdesk.core.errors import ValidationError
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Channels
from mtdesk.policy.erasure.jobs import DeletionJob, DeletionJobs, DeletionWorker


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "delete", help="erase a tenant account, a channel's data or one end user",
        description="Schedule (and by default run) a deletion job. Jobs are idempotent and "
        "audited (kind, counts, times; no personal data).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="WHAT", required=True)

    account = verbs.add_parser("account", help="everything of a tenant",
                               description="Erase everything of a tenant: messages, "
                               "channels and tokens, knowledge, API keys, billing references. "
                               "Its API key stops working at once.")
    account.add_argument("--tenant", required=True, metavar="ID")
    account.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    _common(account)
    account.set_defaults(handler=_account)

    channel = verbs.add_parser("channel", help="disconnect a channel and erase its data",
                               description="Disconnect a channel now (token and routing "
                               "dropped) and erase all of its Platform Data.")
    channel.add_argument("--tenant", required=True, metavar="ID")
    channel.add_argument("--channel", required=True, metavar="CHANNEL_ID", help="e.g. ch_…")
    _common(channel)
    channel.set_defaults(handler=_channel)

    user = verbs.add_parser("user", help="erase one end user",
                            description="Erase one end user (PSID, IGSID, WhatsApp user id or "
                            "wa_id) across the tenant's accounts of that channel.")
    user.add_argument("--tenant", required=True, metavar="ID")
    user.add_argument("--user", required=True, metavar="CHANNEL:USER_ID")
    _common(user)
    user.set_defaults(handler=_user)

    status = verbs.add_parser("status", help="a deletion job's audit record",
                              description="Print a deletion job's status and counts.")
    status.add_argument("job", metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true",
                        help="only schedule; the service's deletion worker runs it")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _print(job: DeletionJob, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(job).decode())
        return
    print(f"job {job.id}: {job.kind} {job.status}")
    for name, n in sorted(job.counts.items()):
        print(f"  {name}: {n}")


def _run(args: argparse.Namespace, schedule: Any) -> int:
    async def job(redis: Redis, settings: Settings) -> DeletionJob:
        clock = SystemClock()
        worker = DeletionWorker(redis, settings, clock, consumer="cli")
        try:
            scheduled: DeletionJob = await schedule(redis, clock, worker.cipher)
            if args.no_wait:
                return scheduled
            return await worker.execute(scheduled.id)
        finally:
            await worker.cipher.aclose()

    done = run_with_store(job)
    _print(done, args.json)
    return 0 if done.status in ("queued", "done") else 1


def _account(args: argparse.Namespace) -> int:
    if not args.yes:
        raise ValidationError("--yes", "account deletion cannot be undone; add --yes to confirm")
    return _run(args, lambda r, c, k: DeletionJobs(r, c, cipher=k).schedule_account(
        args.tenant, source="cli"))


def _channel(args: argparse.Namespace) -> int:
    async def schedule(redis: Redis, clock: Clock, _cipher: TenantCipher) -> DeletionJob:
        await Channels(redis, clock).disconnect(args.tenant, args.channel,
                                                reason="data deletion requested")
        return await DeletionJobs(redis, clock).schedule_channel(
            args.tenant, args.channel, source="cli")

    return _run(args, schedule)


def _user(args: argparse.Namespace) -> int:
    channel, user_id = parse_user(args.user)
    return _run(args, lambda r, c, _k: DeletionJobs(r, c).schedule_user(
        args.tenant, channel, user_id, source="cli"))


def _status(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> DeletionJob:
        return await DeletionJobs(redis, SystemClock()).get(args.job)

    _print(run_with_store(job), args.json)
    return 0
