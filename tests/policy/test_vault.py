"""The token vault: tokens open only with the right key and owner; rotation is online."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import ConfigError, DecryptionError
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import Channels, Tenants, channel_token_aad
from mtdesk.policy.vault import _CAS_TOKEN, TokenVault, ciphertext_key_id, generate_key, key_id

TOKEN = "EAAGm0PX4ZCpsBAKzSecretPageToken123"
AAD = channel_token_aad("t_a", "ch_1")


def vault(*raw: str) -> TokenVault:
    return TokenVault([Secret(k) for k in raw])


def test_round_trip_gives_back_the_token_and_never_shows_it() -> None:
    k = generate_key()
    v = vault(k)
    sealed = v.encrypt(Secret(TOKEN), AAD)
    assert TOKEN not in sealed
    assert sealed.startswith(f"v1.{v.current_kid}.")
    assert v.decrypt(sealed, AAD).reveal() == TOKEN
    assert TOKEN not in repr(v.decrypt(sealed, AAD))
    assert k not in repr(v) and k not in str(v)
    # Same plaintext twice: different ciphertexts (fresh nonce).
    assert v.encrypt(Secret(TOKEN), AAD) != sealed


def test_a_key_that_is_not_configured_is_a_clear_error() -> None:
    old, other = generate_key(), generate_key()
    sealed = vault(old).encrypt(Secret(TOKEN), AAD)
    with pytest.raises(DecryptionError, match="not in MTDESK_ENCRYPTION_KEYS"):
        vault(other).decrypt(sealed, AAD)


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old, new = generate_key(), generate_key()
    under_old = vault(old).encrypt(Secret(TOKEN), AAD)
    both = vault(new, old)
    assert both.current_kid != ciphertext_key_id(under_old)
    assert both.decrypt(under_old, AAD).reveal() == TOKEN
    assert ciphertext_key_id(both.encrypt(Secret(TOKEN), AAD)) == both.current_kid


@pytest.mark.parametrize("where", [5, 20, -1])
def test_tampered_ciphertext_does_not_open(where: int) -> None:
    v = vault(generate_key())
    sealed = v.encrypt(Secret(TOKEN), AAD)
    prefix, body = sealed.rsplit(".", 1)
    pos = where % len(body)
    flipped = body[:pos] + ("A" if body[pos] != "A" else "B") + body[pos + 1 :]
    with pytest.raises(DecryptionError):
        v.decrypt(f"{prefix}.{flipped}", AAD)


def test_a_ciphertext_moved_to_another_channel_does_not_open() -> None:
    v = vault(generate_key())
    sealed = v.encrypt(Secret(TOKEN), channel_token_aad("t_a", "ch_1"))
    with pytest.raises(DecryptionError, match="another owner"):
        v.decrypt(sealed, channel_token_aad("t_b", "ch_1"))
    with pytest.raises(DecryptionError):
        v.decrypt(sealed, channel_token_aad("t_a", "ch_2"))


@pytest.mark.parametrize("junk", ["", "v1", "v2.abcd1234.AAAA", "v1.x.!!!!", "v1.x.AAAA", TOKEN])
def test_malformed_ciphertext_is_a_decryption_error(junk: str) -> None:
    v = vault(generate_key())
    with pytest.raises(DecryptionError):
        v.decrypt(junk.replace("x", v.current_kid), AAD)


def test_keys_are_validated_and_required() -> None:
    with pytest.raises(ConfigError, match="MTDESK_ENCRYPTION_KEYS"):
        TokenVault([])
    with pytest.raises(ConfigError, match="32 bytes"):
        vault("c2hvcnQ=")


def test_key_id_is_derived_from_the_key() -> None:
    import base64

    k = generate_key()
    assert vault(k).current_kid == key_id(base64.urlsafe_b64decode(k))
    assert vault(k).current_kid != vault(generate_key()).current_kid


async def _tenant_with_channels(redis: Redis, v: TokenVault, n: int) -> tuple[str, list[str]]:
    clock = FakeClock()
    tenant, _ = await Tenants(redis, clock).create("Shop", "shop@example.com")
    channels = Channels(redis, clock, v.encrypt)
    ids = []
    for i in range(n):
        rec = await channels.connect(tenant.id, "messenger", str(1000 + i), f"{TOKEN}{i}")
        ids.append(rec.id)
    return tenant.id, ids


async def test_rotation_moves_every_token_to_the_new_key_and_the_old_key_can_go(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old, new = generate_key(), generate_key()
    tid, ids = await _tenant_with_channels(redis, vault(old), 6)
    rotating = vault(new, old)
    assert await rotating.status(redis) == {vault(old).current_kid: 6}

    report = await rotating.rotate(redis)
    assert (report.scanned, report.rotated, report.failed) == (6, 6, 0)
    assert report.before == {vault(old).current_kid: 6}
    assert await rotating.status(redis) == {rotating.current_kid: 6}

    # Second run: nothing left to do.
    again = await rotating.rotate(redis)
    assert (again.rotated, again.already_current) == (0, 6)

    only_new = vault(new)
    for i, cid in enumerate(ids):
        sealed = (await redis.hget(keys.channel(tid, cid), "token")).decode()
        assert only_new.decrypt(sealed, channel_token_aad(tid, cid)).reveal() == f"{TOKEN}{i}"
    assert TOKEN not in caplog.text


async def test_rotation_reports_tokens_no_configured_key_opens(redis: Redis) -> None:
    lost = generate_key()
    await _tenant_with_channels(redis, vault(lost), 2)
    report = await vault(generate_key()).rotate(redis)
    assert report.failed == 2 and report.rotated == 0
    assert all("not in MTDESK_ENCRYPTION_KEYS" in f for f in report.failures)
    assert TOKEN not in " ".join(report.failures)


async def test_rotation_concurrent_with_reconnects_loses_no_update(redis: Redis) -> None:
    old, new = generate_key(), generate_key()
    tid, ids = await _tenant_with_channels(redis, vault(old), 40)
    service = vault(new, old)  # the running service already has the new key first
    channels = Channels(redis, FakeClock(), service.encrypt)

    async def reconnect_all() -> None:
        for i in range(40):
            await channels.connect(tid, "messenger", str(1000 + i), f"fresh{i}")
            await asyncio.sleep(0)

    report, _ = await asyncio.gather(service.rotate(redis), reconnect_all())
    assert report.failed == 0
    only_new = vault(new)
    for i, cid in enumerate(ids):
        sealed = (await redis.hget(keys.channel(tid, cid), "token")).decode()
        assert only_new.decrypt(sealed, channel_token_aad(tid, cid)).reveal() == f"fresh{i}"


async def test_rotation_compare_and_set_keeps_a_token_written_after_the_read(
    redis: Redis,
) -> None:
    """A write between rotation's read and its write wins over the rotated older token."""
    old, new = generate_key(), generate_key()
    tid, ids = await _tenant_with_channels(redis, vault(old), 1)
    hkey = keys.channel(tid, ids[0])
    service = vault(new, old)
    original = (await redis.hget(hkey, "token")).decode()
    fresh = service.encrypt(Secret("newer"), channel_token_aad(tid, ids[0]))
    # What rotate does with the value it read, after a concurrent writer stored ``fresh``:
    await redis.hset(hkey, "token", fresh)
    cas = redis.register_script(_CAS_TOKEN)
    rotated = service.reencrypt(original, channel_token_aad(tid, ids[0]))
    assert await cas(keys=[hkey], args=["token", original, rotated]) == 0
    sealed = (await redis.hget(hkey, "token")).decode()
    assert service.decrypt(sealed, channel_token_aad(tid, ids[0])).reveal() == "newer"
