"""Import rate and peak memory of `quanyi stock import` on a 1,000,000-line file.

Runs the real command line in a child process on a fresh SQLite database and reports
lines per second and the child's peak resident memory, beside the raw ceiling measured
in the same run: plain sqlite3 inserting the same number of (already encrypted-size)
rows with executemany in one transaction.

    .venv/bin/python bench/stock_import.py [--lines 1000000] [--format txt|csv]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUANYI = str(Path(sys.executable).with_name("quanyi"))
INSERT = "INSERT INTO stock_items (product_id, serial, key_id, secret_ct, secret_hash, status) VALUES (?,?,?,?,?,?)"


def write_file(path: Path, lines: int, fmt: str) -> None:
    with path.open("w") as handle:
        if fmt == "csv":
            handle.write("serial,secret\n")
        for n in range(lines):
            serial = f"S{n:09d}"
            secret = secrets.token_hex(12)
            handle.write(f"{serial},{secret}\n" if fmt == "csv" else f"{serial} {secret}\n")


def raw_ceiling(path: Path, lines: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE stock_items (id INTEGER PRIMARY KEY, product_id INTEGER, serial TEXT, key_id TEXT, "
        "secret_ct BLOB, secret_hash BLOB UNIQUE, status TEXT)"
    )
    started = time.perf_counter()
    conn.execute("BEGIN")
    batch = []
    for n in range(lines):
        batch.append((1, f"S{n:09d}", "k1", os.urandom(52), os.urandom(32), "available"))
        if len(batch) == 5000:
            conn.executemany(INSERT, batch)
            batch = []
    if batch:
        conn.executemany(
            "INSERT INTO stock_items (product_id, serial, key_id, secret_ct, secret_hash, status) VALUES (?,?,?,?,?,?)",
            batch,
        )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return lines / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["txt", "csv"], default="txt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stock = tmp / f"stock.{args.format}"
        write_file(stock, args.lines, args.format)
        size_mb = stock.stat().st_size / 1e6
        ceiling = raw_ceiling(tmp / "raw.db", args.lines)
        env = {**os.environ, "QUANYI_DATA_DIR": str(tmp / "data")}
        env.pop("QUANYI_DATABASE_URL", None)
        run = lambda *cmd: subprocess.run([QUANYI, *cmd], env=env, check=True, capture_output=True, text=True)  # noqa: E731
        run("db", "upgrade")
        run("product", "add", "--sku", "BENCH", "--name", "bench", "--kind", "card_key", "--price", "1.00")
        started = time.perf_counter()
        result = run("stock", "import", "BENCH", str(stock))
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rate = args.lines / elapsed
        print(f"stock import: {args.lines:,} lines ({size_mb:.0f} MB {args.format})")
        print(result.stdout.strip().splitlines()[0])
        print(f"{'raw ceiling (sqlite3 executemany)':<36} {ceiling:>10,.0f} rows/s")
        print(f"{'quanyi stock import':<36} {rate:>10,.0f} lines/s   ratio {rate / ceiling:.1%}   {elapsed:.1f} s")
        print(f"{'peak memory of the import process':<36} {peak_mb:>10,.0f} MB   (file: {size_mb:.0f} MB)")


if __name__ == "__main__":
    main()
