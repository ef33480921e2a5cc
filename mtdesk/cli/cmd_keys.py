"""``mtdesk keys generate|status|rotate``: the token-encryption keys.

Rotation: ``mtdesk keys generate``, put the new key FIRST in MTDESK_ENCRYPTION_KEYS
(keep the old one after it), restart the service, ``mtdesk keys rotate``; once
``mtdesk keys status`` shows no token under the old key id, remove the old key.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.policy.vault import RotationReport, TokenVault, generate_key

_PROCEDURE = (
    "Rotation: run 'mtdesk keys generate', put the new key FIRST in MTDESK_ENCRYPTION_KEYS "
    "(keep the old one after it), restart every process, run 'mtdesk keys rotate'; when "
    "'mtdesk keys status' shows no token under the old key id, remove the old key."
)


def register(sub: Any) -> None:
    parser = sub.add_parser("keys", help="token-encryption keys: generate, status, rotate",
                            description="Manage MTDESK_ENCRYPTION_KEYS. " + _PROCEDURE)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    gen = verbs.add_parser("generate", help="print a new key",
                           description="Print a new key (32 random bytes, urlsafe base64).")
    gen.set_defaults(handler=_generate)
    status = verbs.add_parser("status", help="stored tokens per key id",
                              description="Count stored channel tokens per key id and say "
                              "which key ids are configured.")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    rotate = verbs.add_parser("rotate", help="re-encrypt every token under the current key",
                              description="Re-encrypt every stored channel token under the "
                              "first key of MTDESK_ENCRYPTION_KEYS, while the service runs. "
                              + _PROCEDURE)
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(handler=_rotate)


def _generate(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _status(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> tuple[TokenVault, dict[str, int]]:
        vault = TokenVault.from_settings(settings)
        return vault, await vault.status(redis)

    vault, counts = run_with_store(job)
    if args.json:
        print(msgspec.json.encode({"current": vault.current_kid, "configured": vault.key_ids,
                                   "tokens": counts}).decode())
        return 0
    print(f"current key id: {vault.current_kid}")
    for kid in vault.key_ids:
        role = "current" if kid == vault.current_kid else "retired: can go when count is 0"
        print(f"  {kid}  {counts.get(kid, 0):>6} tokens  ({role})")
    for kid, n in sorted(counts.items()):
        if kid not in vault.key_ids:
            print(f"  {kid}  {n:>6} tokens  (NOT CONFIGURED: these cannot be decrypted)")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> RotationReport:
        return await TokenVault.from_settings(settings).rotate(redis)

    report = run_with_store(job)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        before = ", ".join(f"{k}: {v}" for k, v in sorted(report.before.items())) or "none"
        print(f"tokens scanned: {report.scanned} (by key id before: {before})")
        print(f"re-encrypted under {report.current_kid}: {report.rotated}; "
              f"already current: {report.already_current}; "
              f"updated meanwhile: {report.changed_concurrently}; failed: {report.failed}")
        for failure in report.failures:
            print(f"  failed: {failure}")
        if report.failed == 0:
            print("Every token is under the current key: older keys can be removed.")
    return 1 if report.failed else 0
