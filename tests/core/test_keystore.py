"""The key store (``MTDESK_KEYSTORE_URL``): the tenants' wrapped data keys live in a
redis-server of their own, never in the main Redis, so a copy of the main Redis holds
none; shredding deletes the key there first and a tombstone keeps a new one from being
made; a key left in the main Redis from before is moved on first read; the setting is
refused when it names the main Redis' own server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from keystore_server import KeyStoreServer

from mtdesk.core import keys
from mtdesk.core.errors import ConfigError, DecryptionError
from mtdesk.core.redis import Redis, connect
from mtdesk.core.sealing import KeyRing, TenantCipher
from mtdesk.core.secret import Secret
from mtdesk.core.settings import Settings
from mtdesk.policy.vault import generate_key

RING_KEY = Secret(generate_key())


def _settings(redis_url: str, keystore_url: str = "") -> Settings:
    return Settings(redis_url=redis_url, encryption_keys=(RING_KEY,), keystore_url=keystore_url)


@pytest.fixture
async def keystore(keystore_server: KeyStoreServer) -> Redis:
    client = connect(keystore_server.url)
    yield client  # type: ignore[misc]
    await client.aclose()


async def test_data_keys_are_written_to_the_key_store_and_never_to_the_main_redis(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer, keystore: Redis,
) -> None:
    await redis.sadd(keys.TENANTS, "t_a")
    cipher = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    sealed = await cipher.seal("t_a", "message", "m1", b"my pin is 9911")
    assert await redis.get(keys.data_key("t_a")) is None
    assert await keystore.get(keys.data_key("t_a")) is not None
    # Another process (a fresh cache) opens it from the key store.
    other = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    assert await other.open("t_a", "message", "m1", sealed) == b"my pin is 9911"
    assert await other.status() == {KeyRing([RING_KEY]).current_kid: 1}
    # With the main Redis alone (a restored copy of it), there is no key to open it with.
    with pytest.raises(DecryptionError):
        await TenantCipher(redis, KeyRing([RING_KEY])).open("t_a", "message", "m1", sealed)
    await cipher.aclose()
    await other.aclose()


async def test_shredding_deletes_the_key_in_the_key_store_and_no_new_key_is_made_for_the_account(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer, keystore: Redis,
) -> None:
    cipher = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    sealed = await cipher.seal("t_a", "message", "m1", b"the words")
    assert await cipher.destroy("t_a")
    assert await keystore.get(keys.data_key("t_a")) is None
    with pytest.raises(DecryptionError):
        await cipher.open("t_a", "message", "m1", sealed)
    # A reply still in flight seals under a throwaway key that is never stored.
    late = await cipher.seal("t_a", "reply", "r1", b"late reply")
    assert await keystore.get(keys.data_key("t_a")) is None
    assert await redis.get(keys.data_key("t_a")) is None
    fresh = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    with pytest.raises(DecryptionError):
        await fresh.open("t_a", "reply", "r1", late)
    # Another tenant is untouched.
    kept = await cipher.seal("t_b", "message", "m1", b"other words")
    assert await fresh.open("t_b", "message", "m1", kept) == b"other words"
    await cipher.aclose()
    await fresh.aclose()


async def test_a_key_left_in_the_main_redis_moves_into_the_key_store(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer, keystore: Redis,
) -> None:
    before = TenantCipher(redis, KeyRing([RING_KEY]))  # the default: keys in the main Redis
    one = await before.seal("t_one", "message", "m1", b"first tenant")
    two = await before.seal("t_two", "message", "m1", b"second tenant")
    await redis.sadd(keys.TENANTS, "t_one", "t_two")
    after = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    # Read on first use: moved, and gone from the main Redis.
    assert await after.open("t_one", "message", "m1", one) == b"first tenant"
    assert await redis.get(keys.data_key("t_one")) is None
    assert await keystore.get(keys.data_key("t_one")) is not None
    # The rest at once (`mtdesk keys move`).
    assert await after.move_to_keystore() == 1
    assert await redis.get(keys.data_key("t_two")) is None
    fresh = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    assert await fresh.open("t_two", "message", "m1", two) == b"second tenant"
    await after.aclose()
    await fresh.aclose()


async def test_an_account_erased_in_the_key_store_does_not_get_its_old_key_back_from_the_main_redis(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer,
) -> None:
    before = TenantCipher(redis, KeyRing([RING_KEY]))
    sealed = await before.seal("t_a", "message", "m1", b"words")
    after = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    await after.shred_in_keystore("t_a")  # the erasure's first step; the main copy is next
    with pytest.raises(DecryptionError):
        await after.open("t_a", "message", "m1", sealed)
    await after.aclose()


async def test_rotation_rewraps_the_keys_in_the_key_store(
    redis: Redis, redis_url: str, keystore_server: KeyStoreServer, keystore: Redis,
) -> None:
    await redis.sadd(keys.TENANTS, "t_a")
    cipher = TenantCipher.from_settings(redis, _settings(redis_url, keystore_server.url))
    sealed = await cipher.seal("t_a", "message", "m1", b"words")
    new = Secret(generate_key())
    rotated = Settings(redis_url=redis_url, encryption_keys=(new, RING_KEY),
                       keystore_url=keystore_server.url)
    report = await TenantCipher.from_settings(redis, rotated).rewrap()
    assert report.rewrapped == 1 and report.failed == 0
    only_new = Settings(redis_url=redis_url, encryption_keys=(new,), keystore_url=keystore_server.url)
    assert await TenantCipher.from_settings(redis, only_new).open("t_a", "message", "m1", sealed) == b"words"
    await cipher.aclose()


def test_the_key_store_setting_is_read_with_its_tls_files_and_refused_on_the_main_server(
    tmp_path: object,
) -> None:
    base = {"MTDESK_REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert Settings.from_env(base, dotenv=None).keystore_url == ""
    got = Settings.from_env({**base, "MTDESK_KEYSTORE_URL": "redis://10.0.0.9:6380/0"}, dotenv=None)
    assert got.keystore_url == "redis://10.0.0.9:6380/0"
    for same in ("redis://127.0.0.1:6379/1", "redis://localhost:6379/3", "redis://127.0.0.1/2"):
        with pytest.raises(ConfigError) as err:
            Settings.from_env({**base, "MTDESK_KEYSTORE_URL": same}, dotenv=None)
        assert err.value.variable == "MTDESK_KEYSTORE_URL" and "same redis-server" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**base, "MTDESK_KEYSTORE_URL": "http://10.0.0.9"}, dotenv=None)
    assert err.value.variable == "MTDESK_KEYSTORE_URL"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**base, "MTDESK_KEYSTORE_URL": "redis://10.0.0.9:6380/0",
                           "MTDESK_KEYSTORE_TLS_CA": "/etc/hostname"}, dotenv=None)
    assert err.value.variable == "MTDESK_KEYSTORE_TLS_CA" and "rediss://" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**base, "MTDESK_KEYSTORE_TLS_CA": "/etc/hostname"}, dotenv=None)
    assert err.value.variable == "MTDESK_KEYSTORE_TLS_CA"
    tls = Settings.from_env({**base, "MTDESK_KEYSTORE_URL": "rediss://10.0.0.9:6380/0",
                             "MTDESK_KEYSTORE_TLS_CA": "/etc/hostname"}, dotenv=None)
    assert tls.keystore_url == "rediss://10.0.0.9:6380/0?ssl_ca_certs=/etc/hostname"


async def test_a_key_store_that_refuses_to_rewrite_its_files_is_reported_and_shredding_still_holds(
    redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = KeyStoreServer(tmp_path / "ks", "--rename-command", "BGREWRITEAOF", "")
    server.start()
    try:
        cipher = TenantCipher.from_settings(redis, _settings(redis_url, server.url))
        sealed = await cipher.seal("t_a", "message", "m1", b"words")
        assert await cipher.destroy("t_a")
        with caplog.at_level(logging.WARNING, logger="mtdesk.core.sealing"):
            assert await cipher.compact_keystore() is False
        assert "BGREWRITEAOF refused" in caplog.text and "t_a" not in caplog.text
        with pytest.raises(DecryptionError):
            await cipher.open("t_a", "message", "m1", sealed)
        await cipher.aclose()
    finally:
        server.stop()
