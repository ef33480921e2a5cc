"""``mtdesk tenant create|list``: tenants, for operators (directly against Redis)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants


def register(sub: Any) -> None:
    parser = sub.add_parser("tenant", help="create and list tenants",
                            description="Create and list tenants (operator).")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser(
        "create", help="create a tenant and print its API key (shown only once)",
        description="Create a tenant. Prints its id and API key; the key is stored only "
        "hashed and cannot be shown again.",
    )
    create.add_argument("--name", required=True, help="the business's name")
    create.add_argument("--email", required=True, help="contact e-mail address")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=_create)
    listing = verbs.add_parser("list", help="list tenants", description="List tenants.")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    for verb, status, text in (
        ("suspend", "suspended", "refuse the tenant's API key (channels stay connected)"),
        ("activate", "active", "accept the tenant's API key again"),
    ):
        change = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        change.add_argument("--tenant", required=True, help="tenant id")
        change.set_defaults(handler=_set_status, status=status)


def _create(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> tuple[Any, str]:
        record, key = await Tenants(redis, SystemClock()).create(args.name, args.email)
        return record, key.reveal()

    record, key = run_with_store(job)
    if args.json:
        print(json.dumps({"id": record.id, "api_key": key, "name": record.name,
                          "email": record.email}))
    else:
        print(f"tenant id: {record.id}")
        print(f"api key:   {key}")
        print("Store the API key now: it is kept only hashed and cannot be shown again.")
    return 0


def _list(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> list[Any]:
        return await Tenants(redis, SystemClock()).list()

    tenants = run_with_store(job)
    if args.json:
        print(msgspec.json.encode(tenants).decode())
    elif not tenants:
        print("no tenants")
    else:
        for t in tenants:
            print(f"{t.id}  {t.status:<9}  {t.name}  <{t.email}>")
    return 0


def _set_status(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> Any:
        return await Tenants(redis, SystemClock()).set_status(args.tenant, args.status)

    record = run_with_store(job)
    print(f"{record.id}  {record.status}")
    return 0
