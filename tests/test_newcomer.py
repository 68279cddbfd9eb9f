"""A newcomer's first run is quiet and clear (issue 17, item 12): the package builds without
deprecated metadata, ``quanyi serve`` logs no scheduler chatter at the default level,
``.env.example`` names only real settings, and the API docs page renders its Markdown."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import tomllib
from pathlib import Path

import aiohttp
import pytest

from quanyi.core.platform.config import Settings
from quanyi.core.platform.logs import configure_logging
from quanyi.webhooks import create_app, markdown
from tests.conftest import make_settings
from tests.test_e2e import QUANYI, free_port

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
# What a real shop sets before anything else: the bot, who runs it, where it is reached,
# its money and clock, where it keeps its data, how buyers pay and whom they ask.
FIRST_SETTINGS = {
    "QUANYI_BOT_TOKEN",
    "QUANYI_ADMIN_IDS",
    "QUANYI_SUPPORT_CONTACT",
    "QUANYI_PUBLIC_URL",
    "QUANYI_CURRENCY",
    "QUANYI_TIMEZONE",
    "QUANYI_DATA_DIR",
    "QUANYI_DATABASE_URL",
    "QUANYI_EPAY_GATEWAY",
    "QUANYI_EPAY_PID",
    "QUANYI_EPAY_KEY",
    "QUANYI_STRIPE_SECRET_KEY",
    "QUANYI_STRIPE_WEBHOOK_SECRET",
    "QUANYI_CRYPTOBOT_TOKEN",
    "QUANYI_LOG_LEVEL",
}


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_the_package_metadata_uses_an_spdx_licence_string_not_the_deprecated_table():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    # setuptools reads a licence string (PEP 639) from 77 on; older ones refuse it.
    [setuptools] = [req for req in project["build-system"]["requires"] if req.startswith("setuptools")]
    assert setuptools == "setuptools>=77"


async def test_quanyi_serve_logs_no_scheduler_chatter_or_deprecations_at_the_default_level(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
    env.update(
        QUANYI_DATA_DIR=str(tmp_path / "data"),
        QUANYI_SANDBOX_PAY="1",
        QUANYI_HTTP_PORT=str(port),
        QUANYI_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    upgrade = await asyncio.create_subprocess_exec(
        str(QUANYI),
        "db",
        "upgrade",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(upgrade.communicate(), 60)
    assert upgrade.returncode == 0, err.decode()
    proc = await asyncio.create_subprocess_exec(
        str(QUANYI), "serve", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for _ in range(300):
                assert proc.returncode is None
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("quanyi serve did not answer /healthz")
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = (out + err).decode()
    assert proc.returncode == 0, output[-2000:]
    assert f"quanyi serving on http://127.0.0.1:{port}" in output and "quanyi stopped" in output
    # Start-up adds seven jobs and starts the scheduler: none of it is an operator's business.
    assert not re.search(r"INFO apscheduler", output), output
    assert not re.search(r"deprecat", output, re.IGNORECASE), output
    # Stopped right after start, while the first settle run may still be going: it is let finish,
    # not cancelled into a "job raised an exception" traceback; hypercorn says where it listens once.
    assert "Traceback" not in output and "raised an exception" not in output, output
    assert output.count("Running on") == 1, output


def test_the_scheduler_lines_come_back_at_debug_and_go_quiet_again_at_info(tmp_path):
    root, scheduler = logging.getLogger(), logging.getLogger("apscheduler.scheduler")
    saved = (list(root.handlers), root.level, logging.getLogger("apscheduler").level)
    try:
        configure_logging(make_settings(tmp_path, log_level="DEBUG"))
        assert scheduler.isEnabledFor(logging.INFO)
        configure_logging(make_settings(tmp_path, log_level="INFO"))
        assert not scheduler.isEnabledFor(logging.INFO) and scheduler.isEnabledFor(logging.WARNING)
        assert logging.getLogger("quanyi").isEnabledFor(logging.INFO)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("apscheduler").setLevel(saved[2])


def _env_example_names() -> list[str]:
    """Every QUANYI_ name the file sets or shows commented out."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return re.findall(r"^#?\s*(QUANYI_[A-Z0-9_]+)=", text, re.MULTILINE)


def test_env_example_names_only_real_settings_and_the_ones_a_shop_sets_first():
    names = _env_example_names()
    real = {"QUANYI_" + field.upper() for field in Settings.model_fields}
    assert sorted(set(names) - real) == []  # a typo would be ignored silently (extra="ignore")
    assert len(names) == len(set(names))
    assert set(names) >= FIRST_SETTINGS


def test_env_example_as_a_dot_env_starts_with_the_defaults(monkeypatch):
    for name in list(os.environ):
        if name.startswith("QUANYI_"):
            monkeypatch.delenv(name)
    from_file = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert from_file == Settings(_env_file=None)  # type: ignore[call-arg]
    # No secret in it: every secret-bearing line is empty or commented out.
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if re.search(r"(TOKEN|KEY|SECRET)$", name) and not name.startswith("#"):
            assert value == "", line


def test_markdown_is_escaped_before_it_is_converted():
    html = markdown.block(
        "Use `sk_<id>` and ``a&b``, **not** <b>this</b>: [docs](https://x.example/?a=1&b=2), "
        "[bad](javascript:alert(1)).\n\n1. one\n   more\n2. two\n\n- `x`"
    )
    assert html == (
        "<p>Use <code>sk_&lt;id&gt;</code> and <code>a&amp;b</code>, <strong>not</strong> "
        '&lt;b&gt;this&lt;/b&gt;: <a href="https://x.example/?a=1&amp;b=2">docs</a>, '
        "[bad](javascript:alert(1)).</p>\n<ol><li>one more</li><li>two</li></ol>\n<ul><li><code>x</code></li></ul>"
    )


async def test_the_api_docs_page_renders_its_markdown_with_no_literal_backticks(core):
    response = await create_app(core).test_client().get("/api/v1/docs")
    page = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "`" not in page
    assert "(<code>ak_…</code>)" in page and "<code>order_no</code>" in page
    assert "<ol><li>METHOD: upper case (<code>GET</code>, <code>POST</code>)</li>" in page
