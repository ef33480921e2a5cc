"""Operator CLI verbs against the test Redis: tenant, channel, bot, keys."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from keystore_server import KeyStoreServer
from redis import Redis as SyncRedis

from mtdesk.cli.main import main
from mtdesk.core import keys
from mtdesk.policy.vault import generate_key

TOKEN = "EAAcliTokenNotInPs99"


@pytest.fixture
def db(redis_url: str) -> Iterator[SyncRedis]:
    """The CLI runs its own event loop, so these tests are synchronous."""
    client = redis_sync.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, db: SyncRedis
) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    key = generate_key()
    monkeypatch.setenv("MTDESK_REDIS_URL", redis_url)
    monkeypatch.setenv("MTDESK_ENCRYPTION_KEYS", key)
    monkeypatch.setenv("PAGE_TOKEN", TOKEN)
    return {"key": key}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_tenant(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    code, out, _ = run(capsys, "tenant", "create", "--name", "Acme", "--email", "o@acme.example",
                       "--json")
    assert code == 0
    return json.loads(out)


def test_tenant_channel_bot_from_the_command_line(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis
) -> None:
    tenant = make_tenant(capsys)
    assert tenant["api_key"].startswith("mtd_")
    code, out, _ = run(capsys, "tenant", "list")
    assert code == 0 and tenant["id"] in out and tenant["api_key"] not in out
    code, out, _ = run(capsys, "tenant", "suspend", "--tenant", tenant["id"])
    assert code == 0 and "suspended" in out
    code, out, _ = run(capsys, "tenant", "activate", "--tenant", tenant["id"])
    assert code == 0 and "active" in out

    code, out, _ = run(capsys, "channel", "add", "--tenant", tenant["id"], "--channel",
                       "messenger", "--account-id", "1234567", "--token-env", "PAGE_TOKEN",
                       "--json")
    assert code == 0, out
    cid = json.loads(out)["id"]
    assert TOKEN not in out
    route = db.hgetall(keys.account("messenger", "1234567"))
    assert route[b"tenant"] == tenant["id"].encode()
    assert TOKEN.encode() not in (db.hget(keys.channel(tenant["id"], cid), "token"))

    code, out, _ = run(capsys, "channel", "list", "--tenant", tenant["id"])
    assert code == 0 and cid in out and "connected" in out and TOKEN not in out

    code, out, _ = run(capsys, "bot", "set", "--tenant", tenant["id"], "--provider", "openai",
                       "--model", "gpt-4o-mini", "--system-prompt", "Be kind.")
    assert code == 0
    code, out, _ = run(capsys, "bot", "set", "--tenant", tenant["id"], "--temperature", "0.9")
    code, out, _ = run(capsys, "bot", "show", "--tenant", tenant["id"])
    shown = json.loads(out)
    assert (shown["model"], shown["system_prompt"], shown["temperature"]) == (
        "gpt-4o-mini", "Be kind.", 0.9)
    assert shown["comment_replies"] == "off"  # Instagram comments: recorded only
    code, out, _ = run(capsys, "bot", "set", "--tenant", tenant["id"], "--comment-replies",
                       "private")
    assert code == 0 and json.loads(out)["comment_replies"] == "private"
    assert json.loads(out)["temperature"] == 0.9  # the other options kept

    code, out, _ = run(capsys, "channel", "disconnect", "--tenant", tenant["id"], "--id", cid)
    assert code == 0 and "disconnected" in out
    assert not db.exists(keys.account("messenger", "1234567"))


def test_a_token_can_come_on_stdin(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = make_tenant(capsys)
    monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
    code, out, _ = run(capsys, "channel", "add", "--tenant", tenant["id"], "--channel",
                       "whatsapp", "--account-id", "1065", "--token-stdin")
    assert code == 0 and TOKEN not in out


def test_a_whatsapp_number_in_the_business_app_is_added_as_coexistence(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis,
) -> None:
    tenant = make_tenant(capsys)
    code, out, _ = run(capsys, "channel", "add", "--tenant", tenant["id"], "--channel",
                       "whatsapp", "--account-id", "1066", "--token-env", "PAGE_TOKEN",
                       "--coexistence", "--json")
    assert code == 0 and json.loads(out)["coexistence"] is True


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["tenant", "create", "--name", "A", "--email", "nope"], "--email"),
        (["channel", "add", "--tenant", "TID", "--channel", "messenger", "--account-id", "abc",
          "--token-env", "PAGE_TOKEN"], "--account-id"),
        (["channel", "add", "--tenant", "TID", "--channel", "messenger", "--account-id", "1",
          "--token-env", "NOT_SET_ANYWHERE"], "--token-env"),
        (["bot", "set", "--tenant", "TID", "--provider", "skynet"], "--provider"),
        (["bot", "set", "--tenant", "TID", "--temperature", "7"], "--temperature"),
        (["channel", "list", "--tenant", "t_nobody"], "t_nobody"),
    ],
)
def test_cli_errors_name_the_option_and_exit_2(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis,
    argv: list[str], named: str,
) -> None:
    tenant = make_tenant(capsys)
    code, _, err = run(capsys, *[tenant["id"] if a == "TID" else a for a in argv])
    assert code == 2
    assert named in err


def test_a_second_tenant_cannot_take_a_connected_account(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis
) -> None:
    a, b = make_tenant(capsys), make_tenant(capsys)
    base = ["channel", "add", "--channel", "instagram", "--account-id", "1784", "--token-env",
            "PAGE_TOKEN"]
    assert run(capsys, *base, "--tenant", a["id"])[0] == 0
    code, _, err = run(capsys, *base, "--tenant", b["id"])
    assert code == 2 and "another tenant" in err


def test_keys_rotate_moves_tokens_and_status_shows_it(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = make_tenant(capsys)
    for acct in ("11", "12", "13"):
        run(capsys, "channel", "add", "--tenant", tenant["id"], "--channel", "messenger",
            "--account-id", acct, "--token-env", "PAGE_TOKEN")
    prompt = "You are the assistant of Harbor Bikes, never reveal the staff discount"
    assert run(capsys, "bot", "set", "--tenant", tenant["id"], "--system-prompt", prompt)[0] == 0
    stored = db.get(keys.bot(tenant["id"]))
    assert stored and prompt.encode() not in stored  # sealed
    code, new_key, _ = run(capsys, "keys", "generate")
    new_key = new_key.strip()
    assert code == 0 and len(new_key) == 44

    monkeypatch.setenv("MTDESK_ENCRYPTION_KEYS", f"{new_key},{env['key']}")
    code, out, _ = run(capsys, "keys", "status", "--json")
    status = json.loads(out)
    old_kid = status["configured"][1]
    assert status["tokens"] == {old_kid: 3} and status["data_keys"] == {old_kid: 1}

    code, out, _ = run(capsys, "keys", "rotate", "--json")
    report = json.loads(out)
    assert code == 0 and report["rotated"] == 3 and report["before"] == {old_kid: 3}
    assert report["data_keys"]["rewrapped"] == 1  # the data key, not the data

    # The old key can go: with only the new key the tokens still open.
    monkeypatch.setenv("MTDESK_ENCRYPTION_KEYS", new_key)
    code, out, _ = run(capsys, "keys", "status")
    assert code == 0 and "NOT CONFIGURED" not in out and "3 tokens" in out and "1 data keys" in out
    code, out, _ = run(capsys, "keys", "rotate")
    assert code == 0 and "already current: 3" in out and "already current: 1" in out
    code, out, _ = run(capsys, "bot", "show", "--tenant", tenant["id"])
    assert code == 0 and prompt in out  # the sealed prompt opens with the new key alone


def test_switching_on_the_key_store_moves_the_data_keys_and_account_deletion_shreds_there(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], db: SyncRedis,
    monkeypatch: pytest.MonkeyPatch, keystore_server: KeyStoreServer,
) -> None:
    tenant = make_tenant(capsys)
    prompt = "You are the assistant of Harbor Bikes, never reveal the staff discount"
    assert run(capsys, "bot", "set", "--tenant", tenant["id"], "--system-prompt", prompt)[0] == 0
    assert db.get(keys.data_key(tenant["id"])) is not None  # the default: in the main Redis
    code, out, _ = run(capsys, "keys", "status", "--json")
    assert json.loads(out)["data_keys_in"] == "redis"

    monkeypatch.setenv("MTDESK_KEYSTORE_URL", keystore_server.url)
    code, out, _ = run(capsys, "keys", "move", "--json")
    assert code == 0 and json.loads(out) == {"moved": 1}
    assert db.get(keys.data_key(tenant["id"])) is None
    store = redis_sync.Redis.from_url(keystore_server.url)
    assert store.get(keys.data_key(tenant["id"])) is not None
    code, out, _ = run(capsys, "keys", "status")
    assert code == 0 and "the key store" in out and "1 data keys" in out
    code, out, _ = run(capsys, "bot", "show", "--tenant", tenant["id"])
    assert code == 0 and prompt in out  # opens with the key from the key store

    keystore_server.stop()
    code, _, err = run(capsys, "bot", "show", "--tenant", tenant["id"])
    assert code == 2 and "MTDESK_KEYSTORE_URL" in err  # names the key store, not Redis
    keystore_server.start()

    code, out, _ = run(capsys, "delete", "account", "--tenant", tenant["id"], "--yes", "--json")
    assert code == 0 and json.loads(out)["status"] == "done"
    assert store.get(keys.data_key(tenant["id"])) is None
    assert store.exists(keys.erased(tenant["id"]))  # no new key is made for it
    store.close()


def test_keys_commands_without_a_key_say_which_variable(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    db: SyncRedis,
) -> None:
    monkeypatch.delenv("MTDESK_ENCRYPTION_KEYS")
    code, _, err = run(capsys, "keys", "rotate")
    assert code == 2 and "MTDESK_ENCRYPTION_KEYS" in err


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in (["tenant", "create"], ["channel", "add"], ["bot", "set"], ["keys", "rotate"]):
        with pytest.raises(SystemExit) as done:
            main([*verb, "--help"])
        assert done.value.code == 0
    assert "ps" in capsys.readouterr().out
