"""The privacy verbs of the ``mtdesk`` command: delete, export, retention."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _privacy_world import PARTITIONS, World, build_world, make_settings, where_found

from mtdesk.cli.main import main
from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.history import StoredMessage, encode_message
from mtdesk.core.redis import connect

REDIS_URL = os.environ.get("MTDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")  # as conftest


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MTDESK_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("MTDESK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MTDESK_PARTITIONS", str(PARTITIONS))
    monkeypatch.chdir(tmp_path)  # no stray .env

    async def build() -> World:
        redis = connect(REDIS_URL)
        await redis.flushdb()
        try:
            return await build_world(redis, make_settings(tmp_path), FakeClock())
        finally:
            await redis.aclose()

    yield asyncio.run(build())


def found(w: World, needles: list[str]) -> list[str]:
    async def look() -> list[str]:
        redis = connect(REDIS_URL)
        try:
            return await where_found(redis, w.data_dir, needles)
        finally:
            await redis.aclose()

    return asyncio.run(look())


def test_delete_user_runs_the_job_and_prints_its_audit(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    assert main(["delete", "user", "--tenant", w.a.id, "--user",
                 f"messenger:{w.alice.user_id}", "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    # the message, the record of its picture, the reply
    assert job["status"] == "done" and job["counts"]["messages"] == 3
    assert found(w, w.alice.identifiers()) == []
    assert main(["delete", "status", job["id"]]) == 0
    assert f"job {job['id']}: user done" in capsys.readouterr().out


def test_delete_account_needs_yes_then_erases(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    assert main(["delete", "account", "--tenant", w.a.id]) == 2
    assert "--yes" in capsys.readouterr().err
    assert found(w, [w.a.id])
    assert main(["delete", "account", "--tenant", w.a.id, "--yes"]) == 0
    assert found(w, [w.a.id, w.alice.text, w.bob.text]) == []
    assert found(w, [w.b.id, w.dave.text])


def test_delete_channel_with_no_wait_only_schedules(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    cid = w.a.channels["2220002"]
    assert main(["delete", "channel", "--tenant", w.a.id, "--channel", cid, "--no-wait",
                 "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["status"] == "queued"
    assert found(w, [w.bob.text])  # not erased yet: the service's worker will
    assert found(w, [w.tokens["2220002"]]) == []  # but the token is gone at once


def test_unknown_things_are_clear_errors(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete", "channel", "--tenant", world.a.id, "--channel", "ch_nope"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["delete", "user", "--tenant", world.a.id, "--user", "nochannel"]) == 2
    assert "--user" in capsys.readouterr().err
    assert main(["delete", "status", "0" * 24]) == 2


def test_export_to_a_file_holds_all_messages_and_no_token(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    out = tmp_path / "export.json"
    assert main(["export", "--tenant", w.a.id, "--out", str(out)]) == 0
    raw = out.read_bytes()
    doc = json.loads(raw)
    texts = {m.get("text") for c in doc["conversations"] for m in c["messages"]}
    assert {w.alice.text, w.carol.text, w.bob.text} <= texts
    for token in w.tokens.values():
        assert token.encode() not in raw
    assert main(["export", "--tenant", w.a.id, "--user", f"whatsapp:{w.bob.user_id}"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert [c["conversation"] for c in one["conversations"]] == [w.bob.conv]


def test_retention_set_run_and_status(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    assert main(["retention", "set", "--tenant", w.a.id, "--days", "400"]) == 2
    assert "--days" in capsys.readouterr().err
    assert main(["retention", "set", "--tenant", w.a.id, "--days", "30"]) == 0
    capsys.readouterr()
    old_conv = "messenger:1110001:9000000000000777"

    async def seed_old(tid: str) -> None:
        redis = connect(REDIS_URL)
        at = int(time.time() * 1000) - 40 * 86_400_000
        msg = StoredMessage(direction="in", message_id="m_old", kind="message",
                            channel="messenger", account_id="1110001",
                            user_id="9000000000000777", timestamp_ms=at, text="forty days ago")
        await redis.xadd(keys.history(tid, old_conv), {"m": encode_message(msg)}, id=f"{at}-*")
        await redis.zadd(keys.conversations(tid), {old_conv: at})
        await redis.aclose()

    asyncio.run(seed_old(w.a.id))
    asyncio.run(seed_old(w.b.id))
    assert main(["retention", "run", "--tenant", w.a.id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tenants"] == 1
    assert report["deleted"]["messages"] == 1 and report["deleted"]["conversations"] == 1
    assert found(w, ["forty days ago"]) == [f"'forty days ago' in {keys.history(w.b.id, old_conv)}"]
    assert found(w, [w.alice.text])  # stored today: kept
    assert main(["retention", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["messages"] == 1
