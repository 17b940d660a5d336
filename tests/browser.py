"""Headless Chromium for the UI tests (the MLflow UI, the Ray dashboard, the HTML report): Debian's
``chromium`` at /usr/bin/chromium driven by Playwright (``pip install -e '.[test]'``; never
``playwright install``). Without either the tests fail with the command to install it: a silently
skipped UI test would prove nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page(tmp_path):
    """A fresh page of a headless Chromium with its own profile under ``tmp_path``, 1440 x 900."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, as .ci/run "
                    "does); this test must not pass without a browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[test]'` (never `playwright install`: "
                    "it drives /usr/bin/chromium)")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
                                                   args=CHROMIUM_FLAGS, headless=True,
                                                   viewport={"width": 1440, "height": 900})
        try:
            yield ctx.new_page()
        finally:
            ctx.close()
