"""``mtdesk export``: a tenant's data (or one end user's messages) as JSON, streamed to a
file or stdout; never any token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.clock import SystemClock
from mtdesk.core.errors import ValidationError
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.params import validate_end_user
from mtdesk.policy.export import export_tenant, export_user


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "export", help="export a tenant's data (or one end user's) as JSON",
        description="Write a tenant's account, channels (never tokens), bot settings, "
        "knowledge sources and every conversation with its messages as one JSON document, "
        "streamed so a large tenant needs little memory. With --user, only that end user's "
        "conversations.",
    )
    parser.add_argument("--tenant", required=True, metavar="ID", help="tenant id")
    parser.add_argument("--user", metavar="CHANNEL:USER_ID",
                        help="only this end user, e.g. messenger:6254…, whatsapp:US.1029…")
    parser.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    parser.set_defaults(handler=_export)


def parse_user(value: str) -> tuple[str, str]:
    """``CHANNEL:USER_ID`` → (channel, user id); ValidationError naming ``--user``."""
    channel, sep, user_id = value.partition(":")
    if not sep or not channel or not user_id:
        raise ValidationError("--user", "must be CHANNEL:USER_ID, e.g. messenger:6254123456")
    try:
        return validate_end_user(channel, user_id)
    except ValidationError as exc:
        raise ValidationError("--user", exc.problem) from None


def _export(args: argparse.Namespace) -> int:
    user = parse_user(args.user) if args.user else None
    out_path = Path(args.out) if args.out else None

    async def job(redis: Redis, settings: Settings) -> int:
        clock = SystemClock()
        cipher = TenantCipher.from_settings(redis, settings)
        chunks = (export_user(redis, clock, args.tenant, *user, cipher=cipher) if user
                  else export_tenant(redis, clock, args.tenant, cipher=cipher))
        first = await chunks.__anext__()  # errors before a file is created
        target: IO[bytes] = out_path.open("wb") if out_path else sys.stdout.buffer
        target.write(first)
        size = len(first)
        try:
            async for chunk in chunks:
                target.write(chunk)
                size += len(chunk)
            if not out_path:
                target.write(b"\n")
        finally:
            if out_path:
                target.close()
            else:
                target.flush()
        return size

    size = run_with_store(job)
    if out_path:
        print(f"wrote {size} bytes to {out_path}", file=sys.stderr)
    return 0
