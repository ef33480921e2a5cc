"""Running ``mtdesk drill NAME --short`` as an operator would: in a process of its own,
with none of the caller's MTDESK_ variables, its JSON read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_drill(name: str, tmp_path: Path, timeout_s: float = 540,
              extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The drill's JSON result and its stdout; fails the test when it exits non-zero."""
    out = tmp_path / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "drill", name, "--short", "--json", str(out), *extra],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    return json.loads(out.read_text()), proc.stdout
