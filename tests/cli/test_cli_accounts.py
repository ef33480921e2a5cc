"""``mtdesk apikey`` and ``mtdesk user`` against the test Redis: the same keys the API
authenticates, a bad id or name told by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from redis import Redis as SyncRedis

from mtdesk.cli.main import main
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import connect
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import Tenants
from mtdesk.core.users import Users


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> Iterator[SyncRedis]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTDESK_REDIS_URL", redis_url)
    client = redis_sync.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def authenticates(redis_url: str, key: str) -> str | None:
    async def check() -> str | None:
        redis = connect(redis_url)
        try:
            return await Tenants(redis, SystemClock()).authenticate(key)
        finally:
            await redis.aclose()
    return asyncio.run(check())


def test_an_operator_makes_rotates_and_revokes_a_tenants_api_key(
        env: SyncRedis, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tenant", "create", "--name", "Acme", "--email", "o@acme.test",
                       "--json")
    tenant = json.loads(out)["id"]
    code, out, _ = run(capsys, "apikey", "create", "--tenant", tenant, "--name", "crm", "--json")
    assert code == 0
    made = json.loads(out)
    assert authenticates(redis_url, made["api_key"]) == tenant
    code, out, _ = run(capsys, "apikey", "list", "--tenant", tenant, "--json")
    assert sorted(k["id"] for k in json.loads(out)) == sorted(["initial", made["id"]])
    assert made["api_key"] not in out
    code, out, _ = run(capsys, "apikey", "rotate", "--tenant", tenant, "--id", made["id"], "--json")
    rotated = json.loads(out)
    assert authenticates(redis_url, made["api_key"]) is None
    assert authenticates(redis_url, rotated["api_key"]) == tenant
    code, _, _ = run(capsys, "apikey", "revoke", "--tenant", tenant, "--id", rotated["id"])
    assert code == 0 and authenticates(redis_url, rotated["api_key"]) is None
    code, _, err = run(capsys, "apikey", "revoke", "--tenant", tenant, "--id", "k_nope")
    assert code == 2 and "k_nope" in err
    code, _, err = run(capsys, "apikey", "create", "--tenant", tenant, "--name", " ")
    assert code == 2 and "name" in err


def test_user_list_shows_who_signs_in(env: SyncRedis, redis_url: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> str:
        redis = connect(redis_url)
        try:
            record, _ = await Tenants(redis, SystemClock()).create_without_key("Acme", "a@a.test")
            await Users(redis, SystemClock()).add(record.id, "Ana", "a@a.test", "owner",
                                                   Secret("correct horse battery"))
            return record.id
        finally:
            await redis.aclose()
    tenant = asyncio.run(seed())
    code, out, _ = run(capsys, "user", "list", "--tenant", tenant, "--json")
    assert code == 0
    [user] = json.loads(out)
    assert (user["email"], user["role"], user["status"]) == ("a@a.test", "owner", "active")
    assert "password" not in user
    code, _, err = run(capsys, "user", "list", "--tenant", "t_missing")
    assert code == 2 and "t_missing" in err
