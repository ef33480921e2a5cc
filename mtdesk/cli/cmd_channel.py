"""``mtdesk channel add|list|disconnect``: connect Meta accounts to a tenant (operator).

Access tokens are never taken as a plain argument (other users of the machine can read
command lines in ``ps``): give the NAME of an environment variable holding the token
(``--token-env``) or pipe it on standard input (``--token-stdin``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.clock import SystemClock
from mtdesk.core.errors import ValidationError
from mtdesk.core.events import CHANNELS
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import ChannelRecord, Channels, Tenants
from mtdesk.policy.vault import TokenVault


def register(sub: Any) -> None:
    parser = sub.add_parser("channel", help="connect, list and disconnect channels",
                            description="Connect Messenger Pages, Instagram accounts and "
                            "WhatsApp numbers to a tenant (operator).")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser(
        "add", help="connect an account (or update its token)",
        description="Connect an account to a tenant, or update its access token. The token "
        "is never a command-line argument (visible in ps): use --token-env VAR (the name of "
        "an environment variable holding it) or --token-stdin. It is stored encrypted with "
        "MTDESK_ENCRYPTION_KEYS.",
    )
    add.add_argument("--tenant", required=True, help="tenant id")
    add.add_argument("--channel", required=True, choices=CHANNELS, help="which channel")
    add.add_argument("--account-id", required=True,
                     help="Page id, Instagram account id or WhatsApp phone_number_id")
    src = add.add_mutually_exclusive_group(required=True)
    src.add_argument("--token-env", metavar="VAR",
                     help="name of the environment variable that holds the access token")
    src.add_argument("--token-stdin", action="store_true",
                     help="read the access token from standard input")
    add.add_argument("--connected-by", help="Meta app-scoped user id of who connected it")
    add.add_argument("--coexistence", action=argparse.BooleanOptionalAction, default=None,
                     help="WhatsApp: the number is also used in the WhatsApp Business app "
                     "(replies paced at 20 messages/s); left out, it is found from the "
                     "number's Business-app echoes")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add)

    listing = verbs.add_parser("list", help="list a tenant's channels (never tokens)",
                               description="List a tenant's channels and their status.")
    listing.add_argument("--tenant", required=True, help="tenant id")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    off = verbs.add_parser("disconnect", help="disconnect a channel",
                           description="Stop routing the account to the tenant and drop its "
                           "token; the channel record stays, marked disconnected.")
    off.add_argument("--tenant", required=True, help="tenant id")
    off.add_argument("--id", required=True, dest="channel_id", help="channel id")
    off.add_argument("--json", action="store_true", help="print JSON")
    off.set_defaults(handler=_disconnect)


def _read_token(args: argparse.Namespace) -> Secret:
    if args.token_env:
        value = os.environ.get(args.token_env)
        if value is None:
            raise ValidationError("--token-env", f"environment variable {args.token_env} is not set")
        return Secret(value.strip())
    value = sys.stdin.readline()
    if not value.strip():
        raise ValidationError("--token-stdin", "no token on standard input")
    return Secret(value.strip())


def _show(record: ChannelRecord, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(record).decode())
    else:
        print(f"{record.id}  {record.channel:<9}  {record.account_id:<18}  {record.status}"
              + (f"  ({record.disconnected_reason})" if record.disconnected_reason else ""))


def _add(args: argparse.Namespace) -> int:
    token = _read_token(args)

    async def job(redis: Redis, settings: Settings) -> ChannelRecord:
        vault = TokenVault.from_settings(settings)
        channels = Channels(redis, SystemClock(), vault.encrypt)
        return await channels.connect(
            args.tenant, args.channel, args.account_id, token, args.connected_by,
            coexistence=args.coexistence,
        )

    _show(run_with_store(job), args.json)
    return 0


def _list(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> list[ChannelRecord]:
        await Tenants(redis, SystemClock()).get(args.tenant)
        return await Channels(redis, SystemClock()).list(args.tenant)

    records = run_with_store(job)
    if args.json:
        print(msgspec.json.encode(records).decode())
    elif not records:
        print("no channels")
    for record in [] if args.json else records:
        _show(record, False)
    return 0


def _disconnect(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> ChannelRecord:
        return await Channels(redis, SystemClock()).disconnect(
            args.tenant, args.channel_id, "disconnected by the operator"
        )

    _show(run_with_store(job), args.json)
    return 0
