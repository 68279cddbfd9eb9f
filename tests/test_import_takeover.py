"""An import killed mid-way is proved dead by the very next import, which clears its staged rows
and imports every line at once (no timeout to wait out); a live import is never taken over;
`stock show` counts what a running import has staged. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from quanyi.core.catalog.products import add_product
from quanyi.core.errors import Conflict
from quanyi.core.models import Product, StockBatch, StockItem
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.core.stock import items as stock
from quanyi.core.stock.items import abort_batch, import_stock, staged_counts
from tests.conftest import PG_URL

QUANYI = str(Path(sys.executable).with_name("quanyi"))
LINES = 60_000


# --- a real process, killed -----------------------------------------------------------------


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str | None]:
    """None for SQLite under the data dir; else a fresh PostgreSQL database, dropped afterwards."""
    if backend == "sqlite":
        yield None
        return
    name = "quanyi_takeover_" + uuid.uuid4().hex[:10]
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Operator:
    """The console script against one database, and plain SQL to look at that database."""

    def __init__(self, tmp_path: Path, database_url: str | None) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")}
        self.env["QUANYI_DATA_DIR"] = str(tmp_path / "data")
        self.db_file = tmp_path / "data" / "quanyi.db"
        self.database_url = database_url
        if database_url:
            self.env["QUANYI_DATABASE_URL"] = database_url

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([QUANYI, *args], env=self.env, capture_output=True, text=True, timeout=300)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [QUANYI, *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.database_url is None:
            with sqlite3.connect(self.db_file) as conn:
                return conn.execute(sql).fetchall()

        async def fetch() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.database_url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def staged(self) -> int:
        return int(self.rows("SELECT count(*) FROM stock_items WHERE status = 'staged'")[0][0])


def show_staged(stdout: str, sku: str) -> tuple[int, int]:
    """(available, staged) of ``sku`` in `stock show`."""
    lines = stdout.splitlines()
    headers = lines[0].split()
    for line in lines[2:]:
        cells = line.split()
        if cells[0] == sku:
            return int(cells[headers.index("available")]), int(cells[headers.index("staged")])
    raise AssertionError(f"{sku} not in {stdout!r}")


def test_an_import_killed_mid_way_is_taken_over_by_an_immediate_rerun_that_imports_every_line(
    tmp_path: Path, database_url: str | None
) -> None:
    op = Operator(tmp_path, database_url)
    assert op.run("db", "upgrade").returncode == 0
    added = op.run("product", "add", "--sku", "BIG", "--name", "Big", "--kind", "card_key", "--price", "1.00")
    assert added.returncode == 0, added.stderr
    big = tmp_path / "big.txt"
    big.write_text("".join(f"S{n:07d} code-{n:07d}-x\n" for n in range(LINES)))

    proc = op.start("stock", "import", "BIG", str(big))
    deadline = time.monotonic() + 120
    staged = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        staged = op.staged()
        if staged >= 10_000:
            proc.send_signal(signal.SIGSTOP)  # paused, alive, its lease held
            break
    assert staged >= 10_000, "the import finished before it could be stopped; raise LINES"
    try:
        # A running import's staged rows are on `stock show`, not yet available.
        shown = op.run("stock", "show", "BIG")
        assert shown.returncode == 0, shown.stderr
        assert show_staged(shown.stdout, "BIG") == (0, op.staged())
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        proc.wait(timeout=30)
    assert op.staged() >= 10_000

    # At once, no heartbeat faked and no timeout waited out.
    result = op.run("stock", "import", "BIG", str(big))

    assert result.returncode == 0, result.stderr
    assert f"BIG: imported {LINES}, duplicate 0, rejected 0" in result.stdout
    assert dict(op.rows("SELECT status, count(*) FROM stock_items GROUP BY status")) == {"available": LINES}
    assert dict(op.rows("SELECT status, count(*) FROM stock_batches GROUP BY status")) == {"aborted": 1, "done": 1}
    assert show_staged(op.run("stock", "show", "BIG").stdout, "BIG") == (LINES, 0)
    if database_url is None:
        assert not list(op.db_file.parent.glob("*.lock"))  # the dead import's lease file is gone too


# --- in this process -------------------------------------------------------------------------


async def card_product(core: Core, sku: str) -> None:
    async with core.db.transaction() as session:
        await add_product(session, sku=sku, name=sku, kind="card_key", price=Money.parse("1.00", "CNY"))


def codes_file(tmp_path: Path, name: str, prefix: str, n: int) -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{prefix}-{i}\n" for i in range(n)))
    return path


async def counts(core: Core) -> tuple[dict[str, int], dict[str, int]]:
    async with core.db.read() as session:
        items = dict((await session.execute(select(StockItem.status, func.count()).group_by(StockItem.status))).all())
        batches = dict(
            (await session.execute(select(StockBatch.status, func.count()).group_by(StockBatch.status))).all()
        )
    return items, batches  # type: ignore[return-value]


@pytest.fixture
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(stock, "BATCH_ROWS", 100)


async def test_a_live_import_is_never_taken_over_by_another_import(core, tmp_path, monkeypatch, small_chunks):
    await card_product(core, "A")
    await card_product(core, "B")
    first = codes_file(tmp_path, "a.txt", "a", 300)
    second = codes_file(tmp_path, "b.txt", "b", 150)
    seen: dict[str, Any] = {}
    original = stock._insert_rows

    async def then_another_import(db, keyring, aad, product_id, batch_id, lines, report):
        await original(db, keyring, aad, product_id, batch_id, lines, report)
        if not seen:  # the first import is alive and half-way: the second one runs now
            seen["second"] = None
            seen["second"] = await import_stock(core.db, core.keyring, "B", second)
            async with core.db.read() as session:
                seen["staged"] = await staged_counts(session)
            seen["during"] = await counts(core)

    monkeypatch.setattr(stock, "_insert_rows", then_another_import)
    report = await import_stock(core.db, core.keyring, "A", first)

    assert (seen["second"].imported, seen["second"].duplicates) == (150, 0)
    assert seen["staged"] == {"A": 100}
    assert seen["during"] == ({"staged": 100, "available": 150}, {"importing": 1, "done": 1})
    assert (report.imported, report.duplicates) == (300, 0)
    assert await counts(core) == ({"available": 450}, {"done": 2})


async def test_an_import_whose_process_holds_no_lease_is_cleared_even_with_a_fresh_heartbeat(core, tmp_path):
    await card_product(core, "A")
    codes = codes_file(tmp_path, "a.txt", "a", 50)
    # What a killed importer leaves: its batch importing, beating a second ago, rows staged.
    async with core.db.transaction() as session:
        product_id = await session.scalar(select(Product.id).where(Product.sku == "A"))
        dead = StockBatch(product_id=product_id, source="a.txt", status="importing")
        session.add(dead)
        await session.flush()
        dead_id = dead.id
    half = codes_file(tmp_path, "half.txt", "a", 25)
    await stock._write_staged(core.db, core.keyring, product_id, dead_id, half, None, stock.ImportReport("A"), None)
    assert await counts(core) == ({"staged": 25}, {"importing": 1})

    report = await import_stock(core.db, core.keyring, "A", codes)

    assert (report.imported, report.duplicates) == (50, 0)
    assert report.cleared == [dead_id]
    assert await counts(core) == ({"available": 50}, {"aborted": 1, "done": 1})


async def test_an_import_taken_over_mid_way_stops_and_leaves_nothing(core, tmp_path, monkeypatch, small_chunks):
    await card_product(core, "A")
    codes = codes_file(tmp_path, "a.txt", "a", 300)
    original = stock._insert_rows

    async def taken_over_after_one_chunk(db, keyring, aad, product_id, batch_id, lines, report):
        if report.imported:  # as a rerun that proved this import dead would
            await abort_batch(db, batch_id)
        await original(db, keyring, aad, product_id, batch_id, lines, report)

    monkeypatch.setattr(stock, "_insert_rows", taken_over_after_one_chunk)
    with pytest.raises(Conflict, match="taken over"):
        await import_stock(core.db, core.keyring, "A", codes)
    assert await counts(core) == ({}, {"aborted": 1})
