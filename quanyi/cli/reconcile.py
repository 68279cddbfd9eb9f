"""``quanyi reconcile FILE --provider NAME``: a payment provider's statement against our payments.

Exit 0 when everything matches, 3 when there are mismatches, 1 for a file that cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from quanyi.cli._common import print_table, with_core
from quanyi.core.books.views import MAX_STATEMENT_BYTES, Mismatch, Report, Section, mismatches_csv
from quanyi.core.errors import QuanyiError

EXIT_MISMATCHES = 3
TITLES = {
    Section.MISSING_WITH_THEM: "paid with us, not with them",
    Section.MISSING_WITH_US: "paid with them, not with us",
    Section.AMOUNT: "amount mismatches",
    Section.STATUS: "status mismatches",
}


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "reconcile",
        help="compare a payment provider's statement (CSV) with our payments",
        description="Reads a provider statement (docs/reconcile.md) and lists payments we have that the "
        "provider does not, payments the provider has that we do not, amount mismatches and status "
        "mismatches. Exit 0: everything matches; 3: mismatches found; 1: the file cannot be read.",
    )
    parser.add_argument("file", type=Path, help="the statement, CSV with a header line")
    parser.add_argument("--provider", required=True, help="the payment method: sandbox, epay, stripe, cryptobot, stars")
    parser.add_argument(
        "--margin", type=int, default=5, metavar="MINUTES", help="slack around the statement's time span (default 5)"
    )
    parser.add_argument("--out", type=Path, help="also write the mismatches as CSV to this file")
    parser.set_defaults(fn=cmd_reconcile)


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_STATEMENT_BYTES:
            raise QuanyiError(f"{path}: the file is larger than {MAX_STATEMENT_BYTES // 1_000_000} MB")
        return path.read_bytes()
    except OSError as exc:
        raise QuanyiError(f"cannot read {path}: {exc.strerror or exc}") from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    if args.margin < 0:
        raise QuanyiError("--margin cannot be negative")
    data = _read(args.file)

    async def run(core: Any) -> int:
        try:
            report = await core.books.reconcile(data, args.provider, margin=timedelta(minutes=args.margin))
        except QuanyiError as exc:
            raise QuanyiError(f"{args.file}: {exc.message}") from None
        _print(report, core.settings.timezone)
        if args.out is not None and not report.ok:
            args.out.write_bytes(mismatches_csv(report))
            print(f"mismatches written to {args.out}")
        return 0 if report.ok else EXIT_MISMATCHES

    return asyncio.run(with_core(run))


def _print(report: Report, tz: str) -> None:
    zone = ZoneInfo(tz)
    start, end = (f"{when.astimezone(zone):%Y-%m-%d %H:%M:%S}" for when in (report.start, report.end))
    print(
        f"{report.provider} statement: {report.transactions} transactions on {report.rows} rows, "
        f"{start} .. {end} ({tz}); {report.matched} match"
    )
    for section, title in TITLES.items():
        items = report.section(section)
        totals = ", ".join(str(total) for total in report.total(section)) or "-"
        print(f"\n{title}: {len(items)} ({totals})")
        if items:
            print_table(
                ["order", "txn", "theirs", "ours", "their status", "our status", "line"],
                [_cells(item) for item in items],
            )
    print("\neverything matches" if report.ok else f"\n{len(report.mismatches)} mismatches")


def _cells(item: Mismatch) -> list[str]:
    return [
        item.order_number or "-",
        item.provider_txn_id or "-",
        str(item.theirs) if item.theirs else "-",
        str(item.ours) if item.ours else "-",
        item.their_status or "-",
        item.our_status or "-",
        str(item.line) if item.line else "-",
    ]
