"""VaultCredentials: the sender gets a freshly decrypted token, or a clear NotFound."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from mtdesk.actors.credentials import VaultCredentials
from mtdesk.core.clock import FakeClock
from mtdesk.core.errors import DecryptionError, NotFound
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import Channels, Tenants
from mtdesk.policy.vault import TokenVault, generate_key

TOKEN = "EAAsenderTokenNeverLogged77"


def disconnected_total(channel: str) -> float:
    return REGISTRY.get_sample_value(
        "mtdesk_channels_disconnected_total", {"channel": channel}
    ) or 0.0


async def setup(redis: Redis, vault: TokenVault) -> tuple[str, str, Channels, FakeClock]:
    clock = FakeClock()
    tenant, _ = await Tenants(redis, clock).create("Acme", "a@acme.example")
    channels = Channels(redis, clock, vault.encrypt)
    rec = await channels.connect(tenant.id, "whatsapp", "106540352242922", TOKEN)
    return tenant.id, rec.id, channels, clock


async def test_credentials_resolve_the_tenant_and_decrypt_the_token(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    vault = TokenVault([Secret(generate_key())])
    tid, cid, _, clock = await setup(redis, vault)
    creds = VaultCredentials(redis, vault, clock=clock)
    got = await creds.credentials("whatsapp", "106540352242922")
    assert (got.tenant_id, got.channel_id, got.account_id) == (tid, cid, "106540352242922")
    assert isinstance(got.access_token, Secret) and got.access_token.reveal() == TOKEN
    assert TOKEN not in repr(got) and TOKEN not in repr(creds)
    assert TOKEN not in caplog.text


async def test_unknown_account_is_not_found(redis: Redis) -> None:
    creds = VaultCredentials(redis, TokenVault([Secret(generate_key())]))
    with pytest.raises(NotFound):
        await creds.credentials("messenger", "999")


async def test_a_dead_token_marks_the_channel_and_counts_it(redis: Redis) -> None:
    vault = TokenVault([Secret(generate_key())])
    tid, cid, channels, clock = await setup(redis, vault)
    creds = VaultCredentials(redis, vault, clock=clock, cache_ttl_s=0.0)
    await creds.credentials("whatsapp", "106540352242922")
    before = disconnected_total("whatsapp")
    await creds.mark_disconnected("whatsapp", "106540352242922", "graph error 190")
    assert disconnected_total("whatsapp") == before + 1
    rec = await channels.get(tid, cid)
    assert (rec.status, rec.disconnected_reason) == ("disconnected", "graph error 190")
    # Inbound keeps being routed to the tenant, but nothing more is sent.
    assert await channels.resolve("whatsapp", "106540352242922") == (tid, cid)
    with pytest.raises(NotFound, match="disconnected"):
        await creds.credentials("whatsapp", "106540352242922")
    # A re-connect with a fresh token brings it back.
    await channels.connect(tid, "whatsapp", "106540352242922", "EAAfresh")
    assert (await creds.credentials("whatsapp", "106540352242922")).access_token.reveal() == "EAAfresh"


async def test_a_wrong_key_is_a_clear_error_not_garbage(redis: Redis) -> None:
    _, _, _, clock = await setup(redis, TokenVault([Secret(generate_key())]))
    creds = VaultCredentials(redis, TokenVault([Secret(generate_key())]), clock=clock)
    with pytest.raises(DecryptionError, match="MTDESK_ENCRYPTION_KEYS"):
        await creds.credentials("whatsapp", "106540352242922")


async def test_the_cache_holds_ciphertext_only_and_is_dropped_on_disconnect(redis: Redis) -> None:
    vault = TokenVault([Secret(generate_key())])
    _, _, _, clock = await setup(redis, vault)
    creds = VaultCredentials(redis, vault, clock=clock, cache_ttl_s=60.0)
    await creds.credentials("whatsapp", "106540352242922")
    assert TOKEN not in repr(creds._cache)  # the cache is the class's own business
    await creds.mark_disconnected("whatsapp", "106540352242922", "graph error 190")
    with pytest.raises(NotFound):
        await creds.credentials("whatsapp", "106540352242922")
