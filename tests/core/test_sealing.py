"""Per-tenant data keys: values sealed for (tenant, family, id) open only there; a
destroyed key opens nothing; rotation re-wraps keys without touching data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core import keys
from mtdesk.core.errors import DecryptionError
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import KeyRing, TenantCipher, TenantKey, is_sealed
from mtdesk.core.secret import Secret
from mtdesk.policy.vault import generate_key

OLD, NEW = generate_key(), generate_key()


def cipher(redis: Redis, *master: str) -> TenantCipher:
    return TenantCipher(redis, KeyRing([Secret(k) for k in master or (OLD,)]))


async def test_a_sealed_value_opens_only_for_its_tenant_family_and_id(redis: Redis) -> None:
    c = cipher(redis)
    sealed = await c.seal("t_a", "msg", "m1", b"Ana's address is 5 Main St")
    assert b"Main St" not in sealed and is_sealed(sealed)
    assert await c.open("t_a", "msg", "m1", sealed) == b"Ana's address is 5 Main St"
    await c.seal("t_b", "msg", "m1", b"x")  # t_b gets a key of its own
    for tenant, family, ident in (("t_b", "msg", "m1"), ("t_a", "ctx", "m1"), ("t_a", "msg", "m2")):
        with pytest.raises(DecryptionError, match="failed authentication"):
            await c.open(tenant, family, ident, sealed)
    stored = await redis.get(keys.data_key("t_a"))
    assert stored is not None and stored.startswith(b"v1.")


async def test_plaintext_stored_before_sealing_still_reads(redis: Redis) -> None:
    c = cipher(redis)
    assert await c.open("t_a", "msg", "m1", b"\x85old msgpack") == b"\x85old msgpack"


async def test_the_key_is_read_once_and_then_served_from_the_process(redis: Redis) -> None:
    writer, reader = cipher(redis), cipher(redis)
    sealed = [await writer.seal("t_a", "msg", str(i), b"hello") for i in range(50)]
    for i, value in enumerate(sealed):
        assert await reader.open("t_a", "msg", str(i), value) == b"hello"
    assert reader.reads == 1


async def test_destroying_the_key_makes_every_copy_unreadable_and_no_new_one_is_made(
    redis: Redis,
) -> None:
    c = cipher(redis)
    sealed = await c.seal("t_a", "msg", "m1", b"secret words")
    await redis.set(keys.erased("t_a"), "1")
    assert await c.destroy("t_a")
    fresh = cipher(redis)
    with pytest.raises(DecryptionError, match="no data key"):
        await fresh.open("t_a", "msg", "m1", sealed)
    late = await fresh.seal("t_a", "msg", "m2", b"more")  # a write still in flight
    assert await redis.get(keys.data_key("t_a")) is None  # sealed under no stored key
    with pytest.raises(DecryptionError):
        await cipher(redis).open("t_a", "msg", "m2", late)


async def test_rotation_rewraps_data_keys_and_old_values_still_open(redis: Redis) -> None:
    await redis.sadd(keys.TENANTS, "t_a", "t_b")
    before = cipher(redis, OLD)
    a = await before.seal("t_a", "msg", "1", b"alpha")
    b = await before.seal("t_b", "msg", "1", b"beta")
    after = cipher(redis, NEW, OLD)
    assert await after.status() == {before.ring.current_kid: 2}  # type: ignore[union-attr]
    report = await after.rewrap()
    assert (report.rewrapped, report.failed) == (2, 0)
    only_new = cipher(redis, NEW)
    assert await only_new.open("t_a", "msg", "1", a) == b"alpha"
    assert await only_new.open("t_b", "msg", "1", b) == b"beta"
    assert await only_new.status() == {only_new.ring.current_kid: 2}  # type: ignore[union-attr]
    assert (await only_new.rewrap()).already_current == 2


async def test_without_master_keys_values_are_stored_as_given(redis: Redis) -> None:
    c = TenantCipher.disabled()
    assert await c.seal("t_a", "msg", "1", b"plain") == b"plain"
    assert not c.enabled and await redis.get(keys.data_key("t_a")) is None


def test_keys_and_ciphers_never_print_or_pickle_a_key() -> None:
    import pickle

    ring = KeyRing([Secret(OLD)])
    key = TenantKey("t_a", b"k" * 32)
    assert OLD not in repr(ring) and "kkkk" not in repr(key)
    for thing in (ring, key):
        with pytest.raises(TypeError):
            pickle.dumps(thing)


@given(st.binary(max_size=2000), st.text(max_size=30), st.text(max_size=30))
def test_seal_then_open_gives_back_any_bytes(data: bytes, family: str, ident: str) -> None:
    key = TenantKey("t_a", b"\x07" * 32)
    sealed = key.seal(family, ident, data)
    assert is_sealed(sealed) and key.open(family, ident, sealed) == data


@given(st.binary(min_size=1, max_size=200))
def test_a_tampered_value_never_opens_to_garbage(noise: bytes) -> None:
    key = TenantKey("t_a", b"\x07" * 32)
    sealed = bytearray(key.seal("msg", "1", b"the original"))
    for i, byte in enumerate(noise):
        sealed[2 + (i % (len(sealed) - 2))] ^= byte or 1
    try:
        assert key.open("msg", "1", bytes(sealed)) == b"the original"
    except DecryptionError:
        pass
