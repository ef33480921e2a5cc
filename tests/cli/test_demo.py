"""`mtdesk demo` (the README's first command): the whole product, offline, answers every
simulated customer exactly once on all three channels, from the sample knowledge."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.ray
def test_demo_answers_each_customer_message_once_from_the_knowledge_base(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    env["MTDESK_KB_EMBEDDER"] = "lexical"  # the base install's offline default
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "demo", "--no-wait"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "6 customer messages (one delivered twice), 6 replies: each answered once" in out
    bot_lines = [line for line in out.splitlines() if " bot ← " in line]
    assert len(bot_lines) == 6
    for channel in ("Messenger", "Instagram", "WhatsApp"):
        assert any(channel in line for line in bot_lines)
    # grounded: the Saturday hours come from the FAQ, the surfboard question is not known
    assert any("Saturday 10:00-17:00" in line for line in bot_lines)
    assert any("don't know" in line for line in bot_lines)
