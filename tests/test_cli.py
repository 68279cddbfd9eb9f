"""The `quanyi` console script as operators run it: exit 0 on success, else one line on stderr.

A few tests start the real console script (`Cli`); the rest call its code in this process
(`LocalCli`), which gives the same output and exit codes without a process start per call."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from quanyi import cli as quanyi_cli
from tests.conftest import PG_URL, make_settings
from tests.helpers import new_order, sandbox_event

QUANYI = str(Path(sys.executable).with_name("quanyi"))


class Cli:
    def __init__(self, tmp_path: Path, database_url: str | None = None) -> None:
        self.data_dir = tmp_path / "data"
        self.cwd = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
        self.env["QUANYI_DATA_DIR"] = str(self.data_dir)
        if database_url:
            self.env["QUANYI_DATABASE_URL"] = database_url

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QUANYI, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def fails(self, *args: str) -> str:
        """Run a command that must fail; returns its one-line reason."""
        result = self.run(*args)
        assert result.returncode != 0, (args, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("quanyi: "), lines
        return lines[0]


_one_at_a_time = threading.Lock()  # os.environ, the working directory and sys.stdout are global


@contextlib.contextmanager
def _quanyi_environ(env: dict[str, str]) -> Iterator[None]:
    """The QUANYI_* variables of ``env`` in os.environ, and no others, until exit."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("QUANYI_")}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("QUANYI_")})
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("QUANYI_")]:
            del os.environ[key]
        os.environ.update(saved)


class LocalCli(Cli):
    """``Cli`` running ``quanyi.cli.main`` in this process with this runner's QUANYI_* environment
    and working directory (in a thread: it runs its own event loop)."""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()

        def call() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    return quanyi_cli.main(list(args))
                except SystemExit as exc:  # argparse usage errors
                    return exc.code if isinstance(exc.code, int) else 1

        with _one_at_a_time, _quanyi_environ(self.env), contextlib.chdir(self.cwd), ThreadPoolExecutor(1) as pool:
            code = pool.submit(call).result()
        return subprocess.CompletedProcess([QUANYI, *args], code, out.getvalue(), err.getvalue())


def stock_table(stdout: str) -> dict[str, dict[str, int]]:
    """`stock show` output as {sku: {column: count}}."""
    lines = stdout.strip().splitlines()
    headers = lines[0].split()
    table = {}
    for line in lines[2:]:
        cells = line.split()
        if cells == ["(none)"]:
            continue
        table[cells[0]] = {h: int(c) for h, c in zip(headers[1:6], cells[1:6], strict=True)}
    return table


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def local_cli(tmp_path: Path) -> LocalCli:
    return LocalCli(tmp_path)


def test_commands_refuse_a_database_that_was_never_upgraded(cli):
    reason = cli.fails("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    assert "quanyi db upgrade" in reason
    assert "latest schema" in cli.ok("db", "upgrade")
    assert "latest schema" in cli.ok("db", "upgrade")  # running it again is harmless
    assert stock_table(cli.ok("stock", "show")) == {}


def test_product_add_takes_valid_products_and_refuses_bad_ones_with_one_line(local_cli):
    local_cli.ok("db", "upgrade")
    out = local_cli.ok(
        "product", "add", "--sku", "VIP-1M", "--name", "视频会员", "--kind", "card_key", "--price", "15.00"
    )
    assert "VIP-1M" in out and "15.00" in out

    # (Money.parse and add_product refuse many more; their unit tests list them.)
    base = ["product", "add", "--name", "X", "--kind", "card_key"]
    assert "already exists" in local_cli.fails(
        "product", "add", "--sku", "VIP-1M", "--name", "Again", "--kind", "card_key", "--price", "9.00"
    )
    assert "2 decimals" in local_cli.fails(*base, "--sku", "P1", "--price", "1.001")
    assert "not an amount" in local_cli.fails(*base, "--sku", "P2", "--price", "-1")
    reason = local_cli.fails("product", "add", "--sku", "P3", "--name", "X", "--kind", "voucher", "--price", "1.00")
    assert "kind must be one of" in reason and "card_key" in reason

    listed = local_cli.ok("product", "list")
    assert "VIP-1M" in listed and "15.00 CNY" in listed and "Again" not in listed
    assert not any(f"P{n}" in listed for n in range(1, 4))  # nothing refused was added


def test_stock_import_prints_counts_and_a_malformed_file_changes_nothing(local_cli, tmp_path):
    local_cli.ok("db", "upgrade")
    local_cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    good = tmp_path / "keys.csv"
    good.write_text("serial,secret\nS1,CODE-1\nS2,CODE-2\nS3,CODE-1\nS4,\nS5,CODE-5\n")
    out = local_cli.ok("stock", "import", "VIP", str(good))
    assert "VIP: imported 3, duplicate 1, rejected 1" in out
    assert "rejected line 5: empty secret" in out
    before = local_cli.ok("stock", "show")
    assert stock_table(before)["VIP"] == {"available": 3, "reserved": 0, "sold": 0, "void": 0, "expired": 0}

    bad_columns = tmp_path / "bad.csv"
    bad_columns.write_text("serial,secret\nS7,CODE-7\nS8,CODE-8\nS9,CODE-9,2099-01-01\nS10,CODE-10\n")
    reason = local_cli.fails("stock", "import", "VIP", str(bad_columns))
    assert "line 4" in reason and "CODE-9" not in reason
    undecodable = tmp_path / "bad.txt"
    undecodable.write_bytes(b"CODE-11\nCODE-12\n\xff\xfeCODE-13\n")
    assert "line 3" in local_cli.fails("stock", "import", "VIP", str(undecodable))
    assert local_cli.ok("stock", "show") == before
    assert "no such file" in local_cli.fails("stock", "import", "VIP", str(tmp_path / "missing.csv"))


async def test_demo_is_idempotent_and_order_list_shows_orders(local_cli, tmp_path):
    local_cli.ok("db", "upgrade")
    first = local_cli.ok("demo")
    assert "VIDEO-VIP-1M" in first
    # The demo partner's API key is printed once and works (its balance is ¥500.00).
    import re

    access_key = re.search(r"access key (ak_\w+)", first).group(1)
    secret = re.search(r"secret (sk_[\w-]+)", first).group(1)
    levels = local_cli.ok("stock", "show")
    assert stock_table(levels)["VIDEO-VIP-1M"]["available"] == 40
    assert "nothing to add" in local_cli.ok("demo")
    assert local_cli.ok("stock", "show") == levels

    # A sale made by the server process (here: in-process, same data dir and key file).
    from quanyi.core.services import build_core

    core = build_core(make_settings(tmp_path))
    try:
        from quanyi.webhooks import create_app
        from tests.apihelp import Creds, call

        creds = Creds("partner-shop", 0, access_key, secret)
        status, balance = await call(create_app(core).test_client(), creds, "GET", "/api/v1/balance")
        assert (status, balance["balance"], balance["partner"]) == (200, 50000, "partner-shop")
        placed = await new_order(core, sku="GAME-100", quantity=2)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        pending = await new_order(core, sku="GAME-100", user_id=2002)
    finally:
        await core.close()

    listed = local_cli.ok("order", "list")
    assert placed.order.number in listed and pending.order.number in listed
    delivered_row = next(line for line in listed.splitlines() if placed.order.number in line)
    assert "delivered" in delivered_row and "20.00 CNY" in delivered_row
    only_pending = local_cli.ok("order", "list", "--status", "pending")
    assert pending.order.number in only_pending and placed.order.number not in only_pending


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path):
    cli = Cli(tmp_path, "postgresql+asyncpg://root@127.0.0.1:1/nowhere")
    reason = cli.fails("db", "upgrade")
    assert "Connect" in reason and "unexpected" not in reason
    missing = Cli(tmp_path, PG_URL.rsplit("/", 1)[0] + "/quanyi_no_such_db_" + uuid.uuid4().hex[:8])
    assert "does not exist" in missing.fails("stock", "show")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = "quanyi_cli_" + uuid.uuid4().hex[:10]
    admin_dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_same_operator_flow_on_postgresql(tmp_path, pg_database):
    cli = LocalCli(tmp_path, pg_database)
    cli.ok("db", "upgrade")
    cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    stock = tmp_path / "keys.csv"
    stock.write_text("serial,secret,expires_at\nS1,PG-1,2099-01-01\nS2,PG-2,\nS3,PG-1,\nS4,PG-4,not-a-date\n")
    assert "VIP: imported 2, duplicate 1, rejected 1" in cli.ok("stock", "import", "VIP", str(stock))
    before = cli.ok("stock", "show")
    bad = tmp_path / "bad.csv"
    bad.write_text("serial,secret\nS5,PG-5\nS6\n")
    assert "line 3" in cli.fails("stock", "import", "VIP", str(bad))
    assert cli.ok("stock", "show") == before
    assert stock_table(before)["VIP"]["available"] == 2
    assert "(none)" in cli.ok("order", "list")
