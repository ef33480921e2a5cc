"""The console's browser tests: headless Debian chromium driven by Playwright.

``needs_browser`` skips a module, saying what is missing, where chromium or playwright is
not installed; ``browser_tab()`` yields a tab and, when it closes, fails the test on any
script error or anything the CSP refused.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 15_000
_missing = [what for what, present in (
    (f"{CHROMIUM} (apt-get install -y chromium)", os.path.exists(CHROMIUM)),
    ("the playwright package (pip install -e '.[test]')",
     importlib.util.find_spec("playwright") is not None),
) if not present]
needs_browser = pytest.mark.skipif(bool(_missing), reason="browser test needs " + " and ".join(_missing))


@asynccontextmanager
async def browser_tab() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox"])
        tab = await (await browser.new_context()).new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        tab.on("pageerror", lambda exc: problems.append(str(exc)))
        tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        try:
            yield tab
        finally:
            await browser.close()
        # no script error and nothing the CSP refused (the API's 4xx answers the tests
        # ask for, and the favicon's 404, are logged as failed loads: not problems)
        assert [p for p in problems if not p.startswith("Failed to load resource")] == []
