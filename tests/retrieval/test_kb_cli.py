"""``mtdesk kb``: add, list, search and delete knowledge from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mtdesk.cli.main import main
from mtdesk.core.clock import SystemClock
from mtdesk.core.redis import connect
from mtdesk.core.tenants import Tenants


def _tenant(url: str) -> str:
    async def go() -> str:
        redis = connect(url)
        try:
            await redis.flushdb()
            record, _ = await Tenants(redis, SystemClock()).create("Acme", "ops@acme.test")
            return record.id
        finally:
            await redis.aclose()

    return asyncio.run(go())


@pytest.fixture
def tenant(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTDESK_REDIS_URL", redis_url)
    monkeypatch.setenv("MTDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MTDESK_KB_EMBEDDER", "lexical")
    return _tenant(redis_url)


def test_add_list_search_and_delete_from_the_cli(tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text("question,answer\nDo you ship abroad?,\"Yes, to 40 countries.\"\n", encoding="utf-8")
    assert main(["kb", "add-qa", "--tenant", tenant, "--from", str(faq), "--name", "FAQ"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["status"] == "ready" and added["chunks"] == 1
    doc = tmp_path / "hours.md"
    doc.write_text("# Hours\n\nWe open at nine on weekdays.\n", encoding="utf-8")
    assert main(["kb", "add-file", "--tenant", tenant, str(doc)]) == 0
    capsys.readouterr()
    assert main(["kb", "list", "--tenant", tenant]) == 0
    listing = capsys.readouterr().out
    assert "FAQ" in listing and "hours.md" in listing and listing.count("ready") == 2
    assert main(["kb", "search", "--tenant", tenant, "when do you open", "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == "hours.md"
    assert main(["kb", "delete", "--tenant", tenant, added["id"]]) == 0
    assert "1 chunks" in capsys.readouterr().out


def test_cli_errors_name_the_option(tenant: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kb", "add-url", "--tenant", tenant, "http://127.0.0.1:9/"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["kb", "add-qa", "--tenant", tenant, "--q", "only a question"]) == 2
    assert "--q/--a" in capsys.readouterr().err
