"""An import killed half-way leaves nothing sellable, and re-running it later imports every code."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

QUANYI = str(Path(sys.executable).with_name("quanyi"))


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QUANYI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_killed_import_is_recovered_by_the_next_import(tmp_path: Path) -> None:
    env = {**os.environ, "QUANYI_DATA_DIR": str(tmp_path / "data")}
    env.pop("QUANYI_DATABASE_URL", None)
    assert _run(env, "db", "upgrade").returncode == 0
    assert (
        _run(env, "product", "add", "--sku", "BIG", "--name", "Big", "--kind", "card_key", "--price", "1.00").returncode
        == 0
    )
    lines = 150_000
    stock = tmp_path / "big.txt"
    stock.write_text("".join(f"S{n:07d} code-{n:07d}-x\n" for n in range(lines)))

    db_file = tmp_path / "data" / "quanyi.db"
    proc = subprocess.Popen(
        [QUANYI, "stock", "import", "BIG", str(stock)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    staged = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        with sqlite3.connect(db_file) as conn:
            staged = conn.execute("SELECT count(*) FROM stock_items WHERE status='staged'").fetchone()[0]
        if staged >= 10_000:
            proc.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
            break
    proc.wait(timeout=30)
    assert staged >= 10_000, "the import finished before it could be killed; raise the line count"

    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM stock_items WHERE status='available'").fetchone()[0] == 0
        # Ten silent minutes later the crashed batch counts as dead.
        conn.execute("UPDATE stock_batches SET heartbeat_at = datetime('now', '-1 hour') WHERE status='importing'")

    result = _run(env, "stock", "import", "BIG", str(stock))
    assert result.returncode == 0, result.stderr
    assert f"imported {lines}, duplicate 0, rejected 0" in result.stdout
    with sqlite3.connect(db_file) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM stock_items GROUP BY status").fetchall())
        batches = dict(conn.execute("SELECT status, count(*) FROM stock_batches GROUP BY status").fetchall())
    assert counts == {"available": lines}
    assert batches == {"aborted": 1, "done": 1}


async def test_two_imports_of_overlapping_codes_at_once_store_each_code_once(core, tmp_path: Path) -> None:
    import asyncio

    from sqlalchemy import func, select

    from quanyi.core.catalog.products import add_product
    from quanyi.core.models import StockItem
    from quanyi.core.money import Money
    from quanyi.core.stock.items import import_stock

    async with core.db.transaction() as session:
        await add_product(session, sku="DUP", name="dup", kind="card_key", price=Money.parse("1.00", "CNY"))
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    first.write_text("".join(f"code-{n}\n" for n in range(0, 12_000)))
    second.write_text("".join(f"code-{n}\n" for n in range(6_000, 18_000)))

    reports = await asyncio.gather(*(import_stock(core.db, core.keyring, "DUP", path) for path in (first, second)))

    assert sum(r.imported for r in reports) == 18_000
    assert sum(r.duplicates for r in reports) == 6_000
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).where(StockItem.status == "available")) == 18_000
