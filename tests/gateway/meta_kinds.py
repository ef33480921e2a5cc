"""The per-kind Meta payloads of ``tests/fixtures/meta/kinds``, with current timestamps."""

from __future__ import annotations

import time
from pathlib import Path

KINDS = Path(__file__).resolve().parents[1] / "fixtures" / "meta" / "kinds"

PAGE = "112233445566778"
IG_ID = "17841400000000001"
PSID = "6543210987654321"
PHONE_ID = "106540352242922"
BSUID = "US.10293847561029384756"
WA = "16505551234"


def names() -> list[str]:
    return sorted(p.stem for p in KINDS.glob("*.json"))


def load(name: str, now: float | None = None) -> bytes:
    """The body of fixture ``name`` as Meta would post it at ``now`` (default: now)."""
    t = time.time() if now is None else now
    text = (KINDS / f"{name}.json").read_text(encoding="utf-8")
    text = (text.replace("__NOW_S_NUM__", str(int(t)))
            .replace("__NOW_MS__", str(int(t * 1000)))
            .replace("__NOW_S__", str(int(t))))
    return text.encode("utf-8")
