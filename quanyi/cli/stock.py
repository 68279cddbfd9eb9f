"""``quanyi stock``: import, void, show, allocate and the low-stock threshold."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quanyi.cli._common import print_table, with_core
from quanyi.core.errors import InvalidInput, QuanyiError

if TYPE_CHECKING:
    from quanyi.core.services import Core


def cmd_stock_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise QuanyiError(f"no such file: {path}")
    started = time.monotonic()
    interactive = sys.stderr.isatty()

    def progress(line: int) -> None:
        rate = line / max(time.monotonic() - started, 1e-6)
        text = f"  line {line:,}  ({rate:,.0f} lines/s)"
        if interactive:
            print("\r" + text, end="", file=sys.stderr, flush=True)
        elif line % 100_000 < 5000:
            print(text, file=sys.stderr, flush=True)

    async def run(core: Core) -> int:
        report = await core.stock.import_file(args.sku, path, fmt=args.format, progress=progress)
        if interactive:
            print(file=sys.stderr)
        print(
            f"{report.sku}: imported {report.imported}, duplicate {report.duplicates}, "
            f"rejected {report.rejected} ({time.monotonic() - started:.1f}s)"
        )
        for rejected in report.rejected_examples:
            print(f"  rejected line {rejected.line}: {rejected.reason}")
        return 0

    return asyncio.run(with_core(run))


def cmd_stock_void(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise QuanyiError(f"no such file: {path}")

    async def run(core: Core) -> int:
        report = await core.stock.void_file(args.sku, path, fmt=args.format)
        print(
            f"{report.sku}: voided {report.voided}, already void {report.already_void}, "
            f"not found {report.not_found}, already sold {len(report.sold_orders)}"
        )
        if report.sold_orders:
            print("  sold in orders (follow up, refund or replace): " + ", ".join(sorted(set(report.sold_orders))))
        return 0

    return asyncio.run(with_core(run))


def cmd_stock_show(args: argparse.Namespace) -> int:
    from quanyi.core.stock.views import AllocationMode

    async def run(core: Core) -> int:
        pools = await core.stock.pools(args.sku)
        rows: list[list[Any]] = []
        for pool in pools:
            lv = pool.level
            free = f"{lv.unallocated}!" if pool.over_allocated else lv.unallocated
            # Staged: written by an import still running (or one that died, until the next
            # import clears it), not yet sellable.
            # Sellable: what the shop's bot sells now, the figure the web catalogue and the bot show.
            sellable = "on-demand" if pool.figure.on_demand else pool.figure.units
            rows.append(
                [lv.sku, lv.available, lv.reserved, pool.sold, lv.void, lv.expired, pool.staged]
                + [lv.allocated_remaining, free, sellable, "pool", _threshold(lv.threshold), lv.name]
            )
            # A channel row keeps the first five columns numeric, as scripts read them: what it
            # may still sell, its own counters, and 0 void/expired (codes are voided or expire
            # in the pool, never in an allocation). The warning for over-allocation is on stderr.
            for a in lv.allocations:
                quota = a.mode == AllocationMode.QUOTA
                rows.append(
                    [f"  ↳{a.channel}", pool.sellable_by(a), a.reserved, a.sold, 0, 0, ""]
                    + [a.allocated if quota else "-", "", "", a.mode, _threshold(a.threshold), a.channel_name]
                )
        headers = ["sku", "available", "reserved", "sold", "void", "expired", "staged", "allocated", "unallocated"]
        headers.append("sellable")
        print_table([*headers, "mode", "threshold", "name"], rows)
        over = [pool.level.sku for pool in pools if pool.over_allocated]
        if over:
            print(
                f"quanyi: warning: over-allocated: {', '.join(over)}: quotas hold more units than the pool has "
                "(codes voided or expired); take some back: `quanyi stock allocate SKU --to CHANNEL --take-back N`",
                file=sys.stderr,
            )
        return 0

    return asyncio.run(with_core(run))


def cmd_stock_allocate(args: argparse.Namespace) -> int:
    from quanyi.core.stock.service import AllocationChange
    from quanyi.core.stock.views import AllocationMode

    change = AllocationChange(
        args.sku, args.to, units=args.units, take_back=args.take_back, shared=args.shared, threshold=args.threshold
    )

    async def run(core: Core) -> int:
        try:
            held = await core.stock.change_allocation(change)
        except InvalidInput as exc:
            if exc.details.get("change") == "none":
                raise QuanyiError("give --units N, --take-back N, --shared or --threshold N (see --help)") from None
            raise
        a = held.allocation
        if a.mode == AllocationMode.QUOTA:
            state = f"quota, allocated {a.allocated}, reserved {a.reserved}, sold {a.sold}, remaining {a.remaining}"
        else:
            state = f"shared pool (no cap of its own), reserved {a.reserved}, sold {a.sold}"
        print(
            f"{held.sku} -> {held.channel} ({a.channel_name}): {state}, threshold {_threshold(a.threshold)}; "
            f"pool unallocated {held.pool_unallocated}"
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_stock_threshold(args: argparse.Namespace) -> int:
    async def run(core: Core) -> int:
        await core.stock.set_threshold(args.sku, args.threshold)
        print(f"{args.sku}: pool low-stock threshold {_threshold(args.threshold)}")
        return 0

    return asyncio.run(with_core(run))


def _threshold(value: int) -> str:
    return str(value) if value else "off"


def add_parser(sub: Any) -> None:
    stock = sub.add_parser("stock", help="card-key stock").add_subparsers(dest="stock_command", required=True)
    imp = stock.add_parser(
        "import",
        help="import card keys from CSV (serial,secret[,expires_at] with a header) or TXT",
        description="Imports all or nothing: a malformed file (wrong column count, undecodable bytes) "
        "imports nothing and names the line. Duplicates (in the file or already stored) are skipped and counted.",
    )
    imp.add_argument("sku")
    imp.add_argument("file")
    imp.add_argument("--format", choices=["csv", "txt"], help="default: from the file name")
    imp.set_defaults(fn=cmd_stock_import)
    void = stock.add_parser(
        "void",
        help="void listed codes of a product (leaked, disputed): they are never sold",
        description="Reads a file like `stock import` does. Available and reserved codes become void; "
        "codes already sold are listed with their orders.",
    )
    void.add_argument("sku")
    void.add_argument("file")
    void.add_argument("--format", choices=["csv", "txt"], help="default: from the file name")
    void.set_defaults(fn=cmd_stock_void)
    show = stock.add_parser(
        "show",
        help="stock levels per product, with what each channel holds of it",
        description="One row per product (mode pool): available, reserved, sold, void and expired codes; "
        "allocated = units its quotas still hold; unallocated = what is left for the shared pool (negative, "
        "marked !, when voided or expired codes left the quotas larger than the pool). Under it one row per "
        "channel allocation: available = what that channel may still sell (a shared one: the unallocated pool), "
        "its reserved and sold units, allocated = units given to it in total, its mode and threshold.",
    )
    show.add_argument("sku", nargs="?")
    show.set_defaults(fn=cmd_stock_show)
    alloc = stock.add_parser(
        "allocate",
        help="give a channel or distributor a quota of a product, take units back, or let it sell from the pool",
        description="--to is a channel code, or a distributor by Telegram user id or @username. Give exactly one "
        "of --units, --take-back, --shared; --threshold may come with one of them or alone.",
    )
    alloc.add_argument("sku")
    alloc.add_argument("--to", required=True, metavar="CHANNEL_OR_DISTRIBUTOR")
    how = alloc.add_mutually_exclusive_group()
    how.add_argument("--units", type=int, metavar="N", help="give N more units from the unallocated pool")
    how.add_argument(
        "--take-back", type=int, metavar="N", help="return N of its remaining units (never reserved or sold ones)"
    )
    how.add_argument(
        "--shared", action="store_true", help="sell from the shared pool with no cap; a quota's rest goes back"
    )
    alloc.add_argument("--threshold", type=int, metavar="N", help="low-stock alert when N or fewer are left; 0 = off")
    alloc.set_defaults(fn=cmd_stock_allocate)
    thr = stock.add_parser("threshold", help="low-stock alert threshold of a product's pool (0 = off)")
    thr.add_argument("sku")
    thr.add_argument("threshold", type=int, metavar="N")
    thr.set_defaults(fn=cmd_stock_threshold)
