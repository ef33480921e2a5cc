"""``mtdesk apikey list|create|rotate|revoke`` and ``mtdesk user list``: a tenant's API
keys for machines and the people who sign in, for operators (directly against Redis,
the same services as ``/admin/api/v1/keys`` and ``/team``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.apikeys import ApiKeyRecord, ApiKeys
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants
from mtdesk.core.users import UserRecord, Users


def register(sub: Any) -> None:
    parser = sub.add_parser("apikey", help="a tenant's API keys: list, create, rotate, revoke",
                            description="API keys for a tenant's machines. A new key is "
                            "printed once; only its SHA-256 is kept.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (("list", "list the tenant's keys (never the keys themselves)"),
                       ("create", "make a key and print it once"),
                       ("rotate", "replace a key by a new one of the same name (printed once)"),
                       ("revoke", "revoke a key: calls with it get 401 at once")):
        p = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--tenant", required=True, help="tenant id")
        if verb == "create":
            p.add_argument("--name", required=True, help="what the key is for, e.g. 'CRM sync'")
        if verb in ("rotate", "revoke"):
            p.add_argument("--id", required=True, help="key id (from 'mtdesk apikey list')")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=_run, verb=verb)
    users = sub.add_parser("user", help="the people who sign in to a tenant",
                           description="People who sign in to a tenant's console (owners, "
                           "agents). They sign up and are invited in the console.")
    user_verbs = users.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = user_verbs.add_parser("list", help="list a tenant's users",
                                    description="List a tenant's users and their roles.")
    listing.add_argument("--tenant", required=True, help="tenant id")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_users)


def _run(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> tuple[list[ApiKeyRecord], str | None]:
        clock = SystemClock()
        await Tenants(redis, clock).get(args.tenant)
        store = ApiKeys(redis, clock)
        if args.verb == "list":
            return await store.list(args.tenant), None
        if args.verb == "revoke":
            return [await store.revoke(args.tenant, args.id)], None
        record, key = (await store.create(args.tenant, args.name) if args.verb == "create"
                       else await store.rotate(args.tenant, args.id))
        return [record], key.reveal()

    records, key = run_with_store(job)
    if args.json:
        out: Any = msgspec.to_builtins(records if args.verb == "list" else records[0])
        if key is not None:
            out["api_key"] = key
        print(json.dumps(out))
        return 0
    for r in records:
        print(f"{r.id}\t{r.name}\t{r.prefix}…")
    if key is not None:
        print(f"api key: {key}")
        print("Store the API key now: it is kept only hashed and cannot be shown again.")
    elif args.verb == "revoke":
        print("revoked")
    return 0


def _users(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> list[UserRecord]:
        clock = SystemClock()
        await Tenants(redis, clock).get(args.tenant)
        return await Users(redis, clock).list(args.tenant)

    users = run_with_store(job)
    if args.json:
        print(json.dumps(msgspec.to_builtins(users)))
        return 0
    for u in users:
        print(f"{u.id}\t{u.role}\t{u.status}\t{u.email}\t{u.name}")
    return 0
