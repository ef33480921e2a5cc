"""``rediss://`` on every path: redis-py clients, the pipelined client's shared link and
the gateway's lean link, against a redis-server that speaks only TLS and wants a client
certificate, with the CA and certificates given as MTDESK_REDIS_TLS_* settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_redis import TlsFiles, make_certificates, start_tls_redis

from mtdesk.core import keys
from mtdesk.core.errors import ConfigError
from mtdesk.core.events import Message, decode_event
from mtdesk.core.pipelined import connect_pipelined, link_for
from mtdesk.core.redis import connect
from mtdesk.core.settings import Settings
from mtdesk.gateway.ingest import IngestBatcher, Outcome, build_call


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsFiles, int]]:
    directory = tmp_path_factory.mktemp("tls-redis")
    files = make_certificates(directory)
    proc, port = start_tls_redis(directory, files)
    try:
        yield files, port
    finally:
        proc.terminate()
        proc.wait(10)


def tls_settings(files: TlsFiles, port: int, **extra: str) -> Settings:
    return Settings.from_env({
        "MTDESK_REDIS_URL": f"rediss://127.0.0.1:{port}/2",
        "MTDESK_REDIS_TLS_CA": str(files.ca),
        "MTDESK_REDIS_TLS_CERT": str(files.client_cert),
        "MTDESK_REDIS_TLS_KEY": str(files.client_key),
        **extra,
    }, dotenv=None)


async def test_a_redis_py_client_talks_tls_with_the_configured_ca_and_client_certificate(
    tls_server: tuple[TlsFiles, int],
) -> None:
    files, port = tls_server
    client = connect(tls_settings(files, port).redis_url)
    try:
        await client.set("tls:probe", "over tls")
        assert await client.get("tls:probe") == b"over tls"
    finally:
        await client.aclose()


async def test_the_lean_links_talk_tls_too(tls_server: tuple[TlsFiles, int]) -> None:
    files, port = tls_server
    url = tls_settings(files, port).redis_url
    pipelined = connect_pipelined(url)
    link = link_for(connect(url))
    assert link is not None and pipelined.link is not None
    try:
        assert "tls" in repr(link) and "tls" in repr(pipelined.link)
        assert await link.call_many([("SET", "tls:lean", "1"), ("INCR", "tls:lean")]) == [b"OK", 2]
        assert await pipelined.incr("tls:lean") == 3  # through the shared pipelined link
        assert await pipelined.get("tls:lean") == b"3"
    finally:
        link.close()
        await pipelined.aclose()


async def test_the_gateway_ingest_writes_events_over_tls(tls_server: tuple[TlsFiles, int]) -> None:
    files, port = tls_server
    redis = connect(tls_settings(files, port).redis_url)
    batcher = IngestBatcher(redis, dedup_ttl_s=60)
    await batcher.start()
    try:
        await redis.flushdb()
        await redis.hset(keys.account("messenger", "page-tls"), "tenant", "t_tls")
        event = Message(event_id="m_tls", channel="messenger", account_id="page-tls", user_id="u1",
                        timestamp_ms=1, text="hello over tls")
        call = build_call([event], partitions=1, received_ms=1, stale_before_ms=0)
        assert await batcher.submit(call) == [Outcome.ENQUEUED]
        [(_id, fields)] = await redis.xrange(keys.inbound(0))
        assert decode_event(fields[b"e"]) == event
    finally:
        await batcher.aclose()
        await redis.aclose()


async def test_without_a_client_certificate_the_server_refuses(tls_server: tuple[TlsFiles, int]) -> None:
    files, port = tls_server
    client = connect(f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={files.ca}")
    try:
        with pytest.raises(Exception):  # noqa: B017 - redis-py's ConnectionError, or an SSL error
            await client.ping()
    finally:
        await client.aclose()
    link = link_for(connect(f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={files.ca}"))
    assert link is not None
    with pytest.raises(ConnectionError):
        await link.call(("PING",))
    link.close()


def test_tls_settings_name_the_variable_when_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as plain:
        Settings.from_env({"MTDESK_REDIS_URL": "redis://127.0.0.1:6379/0",
                           "MTDESK_REDIS_TLS_CA": str(tmp_path)}, dotenv=None)
    assert plain.value.variable == "MTDESK_REDIS_TLS_CA" and "rediss://" in plain.value.problem
    with pytest.raises(ConfigError) as missing:
        Settings.from_env({"MTDESK_REDIS_URL": "rediss://127.0.0.1:6379/0",
                           "MTDESK_REDIS_TLS_CERT": str(tmp_path / "nope.pem")}, dotenv=None)
    assert missing.value.variable == "MTDESK_REDIS_TLS_CERT"
    given = Settings.from_env({"MTDESK_REDIS_URL": "rediss://h:1/0?ssl_ca_certs=/etc/ca.pem",
                               "MTDESK_REDIS_TLS_CA": str(tmp_path)}, dotenv=None)
    assert given.redis_url == "rediss://h:1/0?ssl_ca_certs=/etc/ca.pem"  # the URL's own wins
    assert Settings.from_env({"MTDESK_REDIS_URL": "redis://h:1/0"}, dotenv=None).redis_url == "redis://h:1/0"


async def test_the_key_store_talks_tls_with_its_own_settings(
    tls_server: tuple[TlsFiles, int], redis_url: str,
) -> None:
    """MTDESK_KEYSTORE_URL as rediss:// with MTDESK_KEYSTORE_TLS_*: the data keys are
    written to and read from the TLS-only key store (the main Redis here is plain)."""
    from mtdesk.core.sealing import TenantCipher
    from mtdesk.policy.vault import generate_key

    files, port = tls_server
    settings = Settings.from_env({
        "MTDESK_REDIS_URL": redis_url,
        "MTDESK_ENCRYPTION_KEYS": generate_key(),
        "MTDESK_KEYSTORE_URL": f"rediss://127.0.0.1:{port}/3",
        "MTDESK_KEYSTORE_TLS_CA": str(files.ca),
        "MTDESK_KEYSTORE_TLS_CERT": str(files.client_cert),
        "MTDESK_KEYSTORE_TLS_KEY": str(files.client_key),
    }, dotenv=None)
    redis = connect(redis_url)
    cipher = TenantCipher.from_settings(redis, settings)
    reader = TenantCipher.from_settings(redis, settings)
    try:
        sealed = await cipher.seal("t_tls", "message", "m1", b"over tls")
        assert cipher.keystore is not None
        assert await cipher.keystore.get(keys.data_key("t_tls")) is not None
        assert await redis.get(keys.data_key("t_tls")) is None
        assert await reader.open("t_tls", "message", "m1", sealed) == b"over tls"
        assert await cipher.destroy("t_tls")
        await cipher.keystore.delete(keys.erased("t_tls"))
    finally:
        await cipher.aclose()
        await reader.aclose()
        await redis.aclose()
