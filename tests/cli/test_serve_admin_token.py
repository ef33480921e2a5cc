"""`mtdesk serve` with a guessable operator token stops at once, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet


def test_serve_with_a_short_operator_token_exits_2_naming_it(redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    env.update(
        MTDESK_REDIS_URL=redis_url, MTDESK_META_APP_SECRET="secret", MTDESK_META_VERIFY_TOKEN="vt",
        MTDESK_ENCRYPTION_KEYS=Fernet.generate_key().decode(), MTDESK_ADMIN_TOKEN="a",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "serve", "--no-actors"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "MTDESK_ADMIN_TOKEN" in proc.stderr
    assert "32 characters" in proc.stderr
