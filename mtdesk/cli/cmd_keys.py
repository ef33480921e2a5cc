"""``mtdesk keys generate|status|rotate|move``: the master keys (MTDESK_ENCRYPTION_KEYS)
and where the tenants' data keys live (``move``: into the key store, MTDESK_KEYSTORE_URL).

They encrypt the channel tokens and wrap each tenant's data key (which seals its data).
Rotation: ``mtdesk keys generate``, put the new key FIRST in MTDESK_ENCRYPTION_KEYS
(keep the old one after it), restart the service, ``mtdesk keys rotate`` (tokens are
re-encrypted and data keys re-wrapped; the data itself is not touched); once
``mtdesk keys status`` shows no token and no data key under the old key id, remove the
old key.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import RewrapReport, TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.policy.vault import RotationReport, TokenVault, generate_key

_PROCEDURE = (
    "Rotation: run 'mtdesk keys generate', put the new key FIRST in MTDESK_ENCRYPTION_KEYS "
    "(keep the old one after it), restart every process, run 'mtdesk keys rotate'; when "
    "'mtdesk keys status' shows no token and no data key under the old key id, remove the "
    "old key. Rotation re-wraps the tenants' data keys; it does not re-encrypt their data."
)


def register(sub: Any) -> None:
    parser = sub.add_parser("keys", help="token-encryption keys: generate, status, rotate",
                            description="Manage MTDESK_ENCRYPTION_KEYS. " + _PROCEDURE)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    gen = verbs.add_parser("generate", help="print a new key",
                           description="Print a new key (32 random bytes, urlsafe base64).")
    gen.set_defaults(handler=_generate)
    status = verbs.add_parser("status", help="stored tokens and data keys per key id",
                              description="Count stored channel tokens and tenant data "
                              "keys per key id and say which key ids are configured.")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    rotate = verbs.add_parser("rotate", help="re-encrypt tokens, re-wrap data keys under "
                              "the current key",
                              description="Re-encrypt every stored channel token and re-wrap "
                              "every tenant data key under the first key of "
                              "MTDESK_ENCRYPTION_KEYS, while the service runs. " + _PROCEDURE)
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(handler=_rotate)
    move = verbs.add_parser("move", help="move the data keys into the key store",
                            description="Move every tenant data key still in the main Redis "
                            "into the key store (MTDESK_KEYSTORE_URL) and delete it from the "
                            "main Redis. Backups of Redis taken before still hold them: "
                            "rotate the master key afterwards (see 'rotate') to close those "
                            "too (docs/privacy.md, 'The key store').")
    move.add_argument("--json", action="store_true", help="print JSON")
    move.set_defaults(handler=_move)


def _generate(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _status(args: argparse.Namespace) -> int:
    async def job(
        redis: Redis, settings: Settings
    ) -> tuple[TokenVault, dict[str, int], dict[str, int]]:
        vault = TokenVault.from_settings(settings)
        cipher = TenantCipher.from_settings(redis, settings)
        return vault, await vault.status(redis), await cipher.status()

    vault, counts, data_keys = run_with_store(job)
    settings = Settings.from_env()
    where = "keystore" if settings.keystore_url else "redis"
    if args.json:
        print(msgspec.json.encode({"current": vault.current_kid, "configured": vault.key_ids,
                                   "tokens": counts, "data_keys": data_keys,
                                   "data_keys_in": where}).decode())
        return 0
    print(f"current key id: {vault.current_kid}")
    print("data keys kept in: " + ("the key store (MTDESK_KEYSTORE_URL)" if settings.keystore_url
          else "the main Redis (its backups carry them; see MTDESK_KEYSTORE_URL)"))
    for kid in vault.key_ids:
        role = "current" if kid == vault.current_kid else "retired: can go when both are 0"
        print(f"  {kid}  {counts.get(kid, 0):>6} tokens  {data_keys.get(kid, 0):>6} data keys"
              f"  ({role})")
    for kid in sorted(set(counts) | set(data_keys)):
        if kid not in vault.key_ids:
            print(f"  {kid}  {counts.get(kid, 0):>6} tokens  {data_keys.get(kid, 0):>6} data keys"
                  "  (NOT CONFIGURED: these cannot be decrypted)")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> tuple[RotationReport, RewrapReport]:
        tokens = await TokenVault.from_settings(settings).rotate(redis)
        return tokens, await TenantCipher.from_settings(redis, settings).rewrap()

    report, rewrap = run_with_store(job)
    if args.json:
        print(msgspec.json.encode({**msgspec.to_builtins(report),
                                   "data_keys": msgspec.to_builtins(rewrap)}).decode())
    else:
        before = ", ".join(f"{k}: {v}" for k, v in sorted(report.before.items())) or "none"
        print(f"tokens scanned: {report.scanned} (by key id before: {before})")
        print(f"re-encrypted under {report.current_kid}: {report.rotated}; "
              f"already current: {report.already_current}; "
              f"updated meanwhile: {report.changed_concurrently}; failed: {report.failed}")
        for failure in report.failures:
            print(f"  failed: {failure}")
        print(f"data keys scanned: {rewrap.scanned}; re-wrapped under {rewrap.current_kid}: "
              f"{rewrap.rewrapped}; already current: {rewrap.already_current}; "
              f"failed: {rewrap.failed}")
        for failure in rewrap.failures:
            print(f"  failed: {failure}")
        if report.failed == 0 and rewrap.failed == 0:
            print("Every token and data key is under the current key: older keys can be removed.")
    return 1 if report.failed or rewrap.failed else 0


def _move(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> int:
        cipher = TenantCipher.from_settings(redis, settings)
        try:
            return await cipher.move_to_keystore()
        finally:
            await cipher.aclose()

    moved = run_with_store(job)
    if args.json:
        print(msgspec.json.encode({"moved": moved}).decode())
    else:
        print(f"data keys moved into the key store: {moved}. Backups of Redis taken before "
              "still hold them under the current master key: rotate it to close them.")
    return 0
