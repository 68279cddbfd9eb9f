"""Real-browser fixtures for the web console: the app served by Hypercorn on a free port of
127.0.0.1 in the test's own event loop (so a test scripts sales through ``core`` and looks at them
in the page), and Debian's Chromium driven by Playwright (``/usr/bin/chromium``; no browser is
downloaded — scripts/browser.sh installs the package when it is missing).

Browser tests run on SQLite only: the pages they drive are the same handlers the Quart test
client runs on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from quanyi.core.services import Core
from quanyi.webhooks import create_app
from tests.console import OWNER

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def served(core: Core) -> AsyncIterator[str]:
    """The console on a real port; ``core.settings.public_url`` points at it (sign-in links)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    core.settings = core.settings.model_copy(update={"public_url": base})
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    task = asyncio.create_task(hypercorn_serve(create_app(core), config, shutdown_trigger=stop.wait))
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.02)
    yield base
    stop.set()
    await asyncio.wait_for(task, 10)


def _chromium_present() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    assert _chromium_present(), "Debian's chromium is missing: bash scripts/browser.sh installs it"
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        await launched.close()


async def new_page(browser: Any, *, lang: str = "zh-CN", phone: bool = False) -> Any:
    size = {"width": 390, "height": 844} if phone else {"width": 1360, "height": 900}
    context = await browser.new_context(locale=lang, viewport=size, is_mobile=phone, has_touch=phone)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    return page


async def sign_in(page: Any, core: Core, user_id: int = OWNER) -> None:
    """Open a one-time link as a person would, landing signed in on the dashboard."""
    url = await core.staff.login_link(user_id, actor="test", front="cli")
    await page.goto(url)
    await page.wait_for_selector("[data-testid=me]", state="attached")


async def shoot(page: Any, name: str) -> None:
    """A screenshot for docs/console/ (README shows them): taken by the test run, not drawn."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
