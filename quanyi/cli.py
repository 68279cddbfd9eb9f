"""The ``quanyi`` command line. Exit 0 on success; otherwise a one-line reason on stderr."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from quanyi.core.config import Settings
from quanyi.core.errors import QuanyiError


def _settings() -> Settings:
    return Settings()


async def _with_core(fn: Callable[[Any], Awaitable[int]], *, migrate_check: bool = True) -> int:
    from quanyi.core.migrate import require_current
    from quanyi.core.services import build_core

    core = build_core(_settings())
    try:
        if migrate_check:
            await require_current(core.db.engine)
        return await fn(core)
    finally:
        await core.close()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from quanyi.core.db import Database
    from quanyi.core.migrate import upgrade

    async def run() -> int:
        settings = _settings()
        db = Database(settings.resolved_database_url)
        try:
            await upgrade(db.engine)
        finally:
            await db.dispose()
        print(f"database is at the latest schema ({_redact_url(settings.resolved_database_url)})")
        return 0

    return asyncio.run(run())


def cmd_product_add(args: argparse.Namespace) -> int:
    from quanyi.core.catalog import add_product
    from quanyi.core.money import Money

    async def run(core: Any) -> int:
        price = Money.parse(args.price, args.currency.upper())
        stars = Money.parse(args.stars_price, "XTR") if args.stars_price is not None else None
        async with core.db.transaction() as session:
            product = await add_product(
                session,
                sku=args.sku,
                name=args.name,
                kind=args.kind,
                price=price,
                description=args.description or "",
                instructions=args.instructions or "",
                stars_price=stars.minor if stars else None,
            )
        print(f"added {product.sku}: {product.name} ({product.kind}) at {price}" + (f" / {stars}" if stars else ""))
        return 0

    return asyncio.run(_with_core(run))


def cmd_product_update(args: argparse.Namespace) -> int:
    from quanyi.core.catalog import update_product
    from quanyi.core.money import Money

    changes = [args.name, args.price, args.stars_price, args.instructions, args.description, args.active]
    if all(change is None for change in changes) and not args.derived_stars_price:
        raise QuanyiError("nothing to change: give at least one option (see --help)")

    async def run(core: Any) -> int:
        stars = Money.parse(args.stars_price, "XTR").minor if args.stars_price is not None else None
        async with core.db.transaction() as session:
            product = await update_product(
                session,
                args.sku,
                name=args.name,
                price=args.price,
                stars_price=stars,
                clear_stars_price=args.derived_stars_price,
                instructions=args.instructions,
                description=args.description,
                active=args.active,
            )
            price = Money(product.price, product.currency)
            stars_text = f"{product.stars_price} ⭐" if product.stars_price else "Stars from the rate"
            state = "on sale" if product.active else "off sale"
        print(f"updated {product.sku}: {product.name} at {price} / {stars_text}, {state}")
        return 0

    return asyncio.run(_with_core(run))


def cmd_product_list(args: argparse.Namespace) -> int:
    from quanyi.core.catalog import catalogue

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            entries = await catalogue(session, include_inactive=True)
        _table(
            ["sku", "kind", "price", "stars", "available", "sale", "name"],
            [
                [
                    e.sku,
                    e.kind,
                    e.price.format_plain() + " " + e.price.currency,
                    e.stars_price or "rate",
                    e.available,
                    "on" if e.active else "off",
                    e.name,
                ]
                for e in entries
            ],
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_stock_import(args: argparse.Namespace) -> int:
    from quanyi.core.stock import import_stock

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

    async def run(core: Any) -> int:
        report = await import_stock(core.db, core.keyring, args.sku, path, fmt=args.format, progress=progress)
        if interactive:
            print(file=sys.stderr)
        print(
            f"{report.sku}: imported {report.imported}, duplicate {report.duplicates}, "
            f"rejected {report.rejected} ({time.monotonic() - started:.1f}s)"
        )
        for rejected in report.rejected_examples:
            print(f"  rejected line {rejected.line}: {rejected.reason}")
        return 0

    return asyncio.run(_with_core(run))


def cmd_stock_void(args: argparse.Namespace) -> int:
    from quanyi.core.stock import void_codes

    path = Path(args.file)
    if not path.is_file():
        raise QuanyiError(f"no such file: {path}")

    async def run(core: Any) -> int:
        report = await void_codes(core.db, core.keyring, args.sku, path, fmt=args.format)
        print(
            f"{report.sku}: voided {report.voided}, already void {report.already_void}, "
            f"not found {report.not_found}, already sold {len(report.sold_orders)}"
        )
        if report.sold_orders:
            print("  sold in orders (follow up, refund or replace): " + ", ".join(sorted(set(report.sold_orders))))
        return 0

    return asyncio.run(_with_core(run))


def cmd_stock_show(args: argparse.Namespace) -> int:
    from quanyi.core.stock import stock_levels

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            levels = await stock_levels(session, args.sku)
        _table(
            ["sku", "available", "reserved", "sold", "void", "expired", "name"],
            [[lv.sku, lv.available, lv.reserved, lv.sold, lv.void, lv.expired, lv.name] for lv in levels],
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_order_list(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor
    from quanyi.core.orders import list_orders

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            orders = await list_orders(session, status=args.status, limit=args.limit)
        _table(
            ["number", "status", "amount", "method", "buyer", "created (UTC)", "note"],
            [
                [
                    o.number,
                    o.status,
                    f"{format_minor(o.amount, o.currency)} {o.currency}",
                    o.payment_method,
                    o.user_id or "",
                    f"{o.created_at:%Y-%m-%d %H:%M}",
                    o.failure_reason or "",
                ]
                for o in orders
            ],
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_order_show(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor
    from quanyi.core.orders import order_details

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            details = await order_details(session, args.number)
        order = details.order
        print(f"order {order.number}  {order.status}  {format_minor(order.amount, order.currency)} {order.currency}")
        print(f"  buyer {order.user_id}  method {order.payment_method}  created {order.created_at:%Y-%m-%d %H:%M} UTC")
        if order.failure_reason:
            print(f"  note: {order.failure_reason}")
        if details.delivery:
            error = f" ({details.delivery_error})" if details.delivery_error else ""
            print(f"  delivery message: {details.delivery}{error}")
        print("lines:")
        for line in order.lines:
            refunded = " (refunded)" if line.id in details.refunded_lines else ""
            print(
                f"  {line.line_no}. {line.sku} x{line.quantity}  {format_minor(line.amount, order.currency)}{refunded}"
            )
        print("payments:")
        for p in details.payments:
            amount = f"{format_minor(p.amount, p.currency)} {p.currency}"
            print(f"  #{p.id} {p.method} {p.provider_txn_id}  {amount}  {p.outcome}")
        if details.refunds:
            print("refunds:")
            for r in details.refunds:
                scope = f"line {details.line_numbers.get(r.order_line_id, '?')}" if r.order_line_id else r.scope
                error = f"  last error: {r.last_error}" if r.last_error else ""
                amount = format_minor(r.amount, r.currency)
                print(f"  #{r.id} {scope}  {amount} {r.currency}  {r.status}  by {r.initiated_by}: {r.reason}{error}")
        return 0

    return asyncio.run(_with_core(run))


def cmd_order_refund(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor
    from quanyi.core.refunds import refund_order

    async def run(core: Any) -> int:
        result = await refund_order(
            core, args.number, line_no=args.line, reason=args.reason, actor="cli", manual=args.manual
        )
        if result.status == "already":
            print(f"{result.order_number}: already refunded, nothing done")
            return 0
        lines = ", ".join(str(n) for n in result.lines) or "-"
        ref = f" (provider refund {result.provider_refund_id})" if result.provider_refund_id else ""
        print(
            f"{result.order_number}: refunded {format_minor(result.amount, result.currency)} {result.currency}, "
            f"lines {lines}, {result.status}{ref}; their codes are void"
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_payment_list(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor
    from quanyi.core.orders import list_payments

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            rows = await list_payments(session, review_only=args.review, limit=args.limit)
        _table(
            ["id", "order", "method", "transaction", "amount", "outcome", "refunded", "at (UTC)"],
            [
                [
                    p.id,
                    number,
                    p.method,
                    p.provider_txn_id[:32],
                    f"{format_minor(p.amount, p.currency)} {p.currency}",
                    p.outcome,
                    "yes" if refunded else "",
                    f"{p.created_at:%Y-%m-%d %H:%M}",
                ]
                for p, number, refunded in rows
            ],
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_payment_refund(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor
    from quanyi.core.refunds import refund_payment

    async def run(core: Any) -> int:
        result = await refund_payment(core, args.payment_id, reason=args.reason, actor="cli", manual=args.manual)
        if result.status == "already":
            print(f"payment {args.payment_id}: already refunded, nothing done")
        else:
            amount = f"{format_minor(result.amount, result.currency)} {result.currency}"
            print(f"payment {args.payment_id} of {result.order_number}: refunded {amount}, {result.status}")
        return 0

    return asyncio.run(_with_core(run))


def cmd_demo(args: argparse.Namespace) -> int:
    from quanyi.core.demo import load_demo

    async def run(core: Any) -> int:
        added = await load_demo(core.db, core.keyring)
        print("demo catalogue loaded: " + (", ".join(added) if added else "already present, nothing to add"))
        return 0

    return asyncio.run(_with_core(run))


def cmd_serve(args: argparse.Namespace) -> int:
    from quanyi.app import serve

    return asyncio.run(serve(_settings()))


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(none)")


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quanyi", description="Sell virtual rights through chat.")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create or migrate the database to the latest schema").set_defaults(fn=cmd_db_upgrade)

    product = sub.add_parser("product", help="products").add_subparsers(dest="product_command", required=True)
    add = product.add_parser("add", help="add a product")
    add.add_argument("--sku", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, help="card_key, redeem_link, direct_recharge or bundle")
    add.add_argument("--price", required=True, help="decimal text such as 15.00")
    add.add_argument("--currency", default="CNY")
    add.add_argument(
        "--stars-price", help="price in whole Telegram Stars; default: price × QUANYI_STARS_RATE, rounded up"
    )
    add.add_argument("--description")
    add.add_argument("--instructions", help="redemption instructions sent with every delivery")
    add.set_defaults(fn=cmd_product_add)
    upd = product.add_parser("update", help="change a product's name, prices, texts or whether it is on sale")
    upd.add_argument("sku")
    upd.add_argument("--name")
    upd.add_argument("--price", help="decimal text in the product's currency; placed orders keep theirs")
    upd.add_argument("--stars-price", help="whole Telegram Stars")
    upd.add_argument("--derived-stars-price", action="store_true", help="use price × QUANYI_STARS_RATE again")
    upd.add_argument("--instructions")
    upd.add_argument("--description")
    sale = upd.add_mutually_exclusive_group()
    sale.add_argument("--on-sale", dest="active", action="store_true", default=None)
    sale.add_argument("--off-sale", dest="active", action="store_false", help="hide it from the catalogue")
    upd.set_defaults(fn=cmd_product_update)
    product.add_parser("list", help="list products with units available").set_defaults(fn=cmd_product_list)

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
    show = stock.add_parser("show", help="stock levels per product")
    show.add_argument("sku", nargs="?")
    show.set_defaults(fn=cmd_stock_show)

    order = sub.add_parser("order", help="orders").add_subparsers(dest="order_command", required=True)
    olist = order.add_parser("list", help="recent orders, newest first")
    olist.add_argument("--status", choices=["pending", "paid", "delivered", "cancelled", "failed", "refunded"])
    olist.add_argument("--limit", type=int, default=50)
    olist.set_defaults(fn=cmd_order_list)
    oshow = order.add_parser("show", help="one order with its lines, payments and refunds (never its codes)")
    oshow.add_argument("number")
    oshow.set_defaults(fn=cmd_order_show)
    orefund = order.add_parser(
        "refund",
        help="refund an order, or one line of it, through its payment method",
        description="Refunds through the order's payment method (Stars, Stripe, sandbox) and voids the refunded "
        "codes. Running it again refunds nothing twice and retries a refund the provider did not confirm. "
        "For methods without a refund API (EPay, Crypto Pay) pay the buyer back yourself and record it with --manual.",
    )
    orefund.add_argument("number")
    orefund.add_argument("--line", type=int, help="line number (default: every line)")
    orefund.add_argument("--reason", required=True)
    orefund.add_argument("--manual", action="store_true", help="record a refund made outside quanyi")
    orefund.set_defaults(fn=cmd_order_refund)

    payment = sub.add_parser("payment", help="payments").add_subparsers(dest="payment_command", required=True)
    plist = payment.add_parser("list", help="recent payments, newest first")
    plist.add_argument("--review", action="store_true", help="only payments kept for review (late or double)")
    plist.add_argument("--limit", type=int, default=50)
    plist.set_defaults(fn=cmd_payment_list)
    prefund = payment.add_parser("refund", help="give back a payment kept for review (the order is untouched)")
    prefund.add_argument("payment_id", type=int)
    prefund.add_argument("--reason", required=True)
    prefund.add_argument("--manual", action="store_true", help="record a refund made outside quanyi")
    prefund.set_defaults(fn=cmd_payment_refund)

    sub.add_parser("demo", help="load the demo catalogue with stock (idempotent)").set_defaults(fn=cmd_demo)
    sub.add_parser("serve", help="HTTP server + bot + scheduler in one process").set_defaults(fn=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args) or 0)
    except QuanyiError as exc:
        print(f"quanyi: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("quanyi: interrupted", file=sys.stderr)
        return 130
    except (OSError, SQLAlchemyError) as exc:  # database or file unreachable: say why, in one line
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"quanyi: {type(exc).__name__}: {reason[0] if reason else 'no details'}", file=sys.stderr)
        return 2
    except Exception as exc:  # a last line of defence: one line, no traceback with values in it
        print(f"quanyi: unexpected {type(exc).__name__}; see the log", file=sys.stderr)
        logging.getLogger("quanyi").debug("unexpected error", exc_info=True)
        return 2
