"""The ``quanyi`` command line. Exit 0 on success; otherwise a one-line reason on stderr."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import SQLAlchemyError

from quanyi.core.config import Settings
from quanyi.core.errors import QuanyiError


def _settings() -> Settings:
    return Settings()


async def _with_core(fn: Callable[[Any], Awaitable[int]], *, migrate_check: bool = True) -> int:
    from quanyi.core.services import build_core, open_checked

    settings = _settings()
    if not migrate_check:
        core = build_core(settings)
    else:
        db, keyring = await open_checked(settings)
        core = build_core(settings, db=db, keyring=keyring)
    try:
        return await fn(core)
    finally:
        await core.close()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from quanyi.core.audit_chain import Chain, anchor_first
    from quanyi.core.db import Database
    from quanyi.core.keycheck import init_keys
    from quanyi.core.migrate import upgrade

    async def run() -> int:
        settings = _settings()
        db = Database(settings.resolved_database_url)
        try:
            await upgrade(db.engine)
            from quanyi.core import risk

            async with db.transaction() as session:
                await risk.ensure_defaults(session)  # the default risk rules, on; edits stay
            # Keys for a new database; an existing one must match the keys configured.
            keys = await init_keys(settings, db)
            db.audit_chain = Chain(keys.keyring.audit_key)
            first = await anchor_first(db, settings.data_dir, settings.admin_id_list)
        finally:
            await db.dispose()
        print(f"database is at the latest schema ({_redact_url(settings.resolved_database_url)})")
        if keys.created:
            print(f"created the encryption keys in {keys.source} (0600): back it up with the database")
        if first is not None and first.ok:
            print(f"audit chain of {first.checked} records verified and anchored for the first time")
        elif first is not None:
            print(f"audit chain broken at record {first.first_bad_seq or '?'}: {first.problem}; not anchored")
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
                category=args.category,
                **_kind_options(args),
            )
        print(f"added {product.sku}: {product.name} ({product.kind}) at {price}" + (f" / {stars}" if stars else ""))
        for line in _kind_summary(product):
            print(f"  {line}")
        return 0

    return asyncio.run(_with_core(run))


def cmd_product_update(args: argparse.Namespace) -> int:
    from quanyi.core.catalog import update_product
    from quanyi.core.money import Money

    changes = [
        args.name,
        args.price,
        args.stars_price,
        args.instructions,
        args.description,
        args.active,
        args.floor,
        args.ceiling,
        args.category,
        *_kind_options(args).values(),
    ]
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
                floor=args.floor,
                ceiling=args.ceiling,
                category=args.category,
                **_kind_options(args),
            )
            price = Money(product.price, product.currency)
            stars_text = f"{product.stars_price} ⭐" if product.stars_price else "Stars from the rate"
            state = "on sale" if product.active else "off sale"
            limits = ""
            if product.floor_price is not None or product.ceiling_price is not None:
                floor = _money_or(product.floor_price, product.currency, "none")
                ceiling = _money_or(product.ceiling_price, product.currency, "none")
                limits = f"; floor {floor}, ceiling {ceiling}"
        print(f"updated {product.sku}: {product.name} at {price} / {stars_text}, {state}{limits}")
        for line in _kind_summary(product):
            print(f"  {line}")
        return 0

    return asyncio.run(_with_core(run))


def _kind_options(args: argparse.Namespace) -> dict[str, Any]:
    """The redeem_link / direct_recharge options given on the command line (None = not given)."""
    return {
        "entitlement": args.entitlement,
        "max_uses": args.max_uses,
        "valid_days": args.valid_days,
        "supplier": args.supplier,
        "supplier_code": args.supplier_code,
        "account_pattern": args.account_pattern,
        "account_hint": args.account_hint,
        "fallback_sku": args.fallback_sku,
    }


def _kind_summary(product: Any) -> list[str]:
    if product.kind == "redeem_link":
        expiry = f"valid {product.redeem_valid_days} days" if product.redeem_valid_days else "no expiry"
        grants = product.entitlement or product.name
        return [f"links: {product.redeem_max_uses or 1} use(s) each, {expiry}; grants: {grants}"]
    if product.kind == "direct_recharge":
        return [
            f"supplier: {product.supplier or '(none)'} code {product.supplier_product_code or '(none)'}",
            f"account pattern: {product.account_pattern or '(any)'}  hint: {product.account_hint or '(none)'}",
            f"fallback: {product.fallback_sku or '(refund)'}",
        ]
    return []


def _add_kind_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    clear = "; '' removes it" if update else ""
    parser.add_argument("--entitlement", help=f"redeem_link: what a link grants (default: the product name){clear}")
    parser.add_argument("--max-uses", type=int, help="redeem_link: uses per link (default 1)")
    parser.add_argument(
        "--valid-days",
        type=int,
        help="redeem_link: days a link stays valid" + ("; 0 = never expires" if update else ""),
    )
    parser.add_argument("--supplier", help=f"direct_recharge: supplier name, such as generic{clear}")
    parser.add_argument("--supplier-code", help=f"direct_recharge: the supplier's product code{clear}")
    parser.add_argument(
        "--account-pattern", help=f"direct_recharge: regular expression the whole account must match{clear}"
    )
    parser.add_argument("--account-hint", help=f"direct_recharge: what to enter, shown to the buyer{clear}")
    parser.add_argument(
        "--fallback-sku", help=f"direct_recharge: card_key product delivered instead when a recharge fails{clear}"
    )


def cmd_product_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from quanyi.core.catalog import catalogue
    from quanyi.core.models import Product

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            entries = await catalogue(session, include_inactive=True)
            categories = dict((await session.execute(select(Product.sku, Product.category))).all())
        _table(
            ["sku", "kind", "price", "stars", "available", "sale", "category", "name"],
            [
                [
                    e.sku,
                    e.kind,
                    e.price.format_plain() + " " + e.price.currency,
                    e.stars_price or "rate",
                    e.available if e.kind == "card_key" else "on demand",
                    "on" if e.active else "off",
                    categories.get(e.sku) or "-",
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
        limit = core.settings.max_stock_file_mb * 2**20
        report = await import_stock(
            core.db, core.keyring, args.sku, path, fmt=args.format, progress=progress, max_bytes=limit
        )
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
        limit = core.settings.max_stock_file_mb * 2**20
        report = await void_codes(core.db, core.keyring, args.sku, path, fmt=args.format, max_bytes=limit)
        print(
            f"{report.sku}: voided {report.voided}, already void {report.already_void}, "
            f"not found {report.not_found}, already sold {len(report.sold_orders)}"
        )
        if report.sold_orders:
            print("  sold in orders (follow up, refund or replace): " + ", ".join(sorted(set(report.sold_orders))))
        return 0

    return asyncio.run(_with_core(run))


def cmd_stock_show(args: argparse.Namespace) -> int:
    from quanyi.core.channels import pool_levels
    from quanyi.core.stock import staged_counts

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            levels = await pool_levels(session, args.sku)
            staged = await staged_counts(session, args.sku)
        rows: list[list[Any]] = []
        for lv in levels:
            free = f"{lv.unallocated}!" if lv.unallocated < 0 else lv.unallocated
            # Staged: written by an import still running (or one that died, until the next
            # import clears it), not yet sellable.
            rows.append(
                [lv.sku, lv.available, lv.reserved, lv.sold, lv.void, lv.expired, staged.get(lv.sku, 0)]
                + [lv.allocated_remaining, free, "pool", _threshold(lv.threshold), lv.name]
            )
            # A channel row keeps the first five columns numeric, as scripts read them: what it
            # may still sell, its own counters, and 0 void/expired (codes are voided or expire
            # in the pool, never in an allocation). The warning for over-allocation is on stderr.
            for a in lv.allocations:
                quota = a.mode == "quota"
                rows.append(
                    [f"  ↳{a.channel}", a.remaining if quota else max(lv.unallocated, 0), a.reserved, a.sold, 0, 0, ""]
                    + [a.allocated if quota else "-", "", a.mode, _threshold(a.threshold), a.channel_name]
                )
        headers = ["sku", "available", "reserved", "sold", "void", "expired", "staged", "allocated", "unallocated"]
        _table([*headers, "mode", "threshold", "name"], rows)
        over = [lv.sku for lv in levels if lv.unallocated < 0]
        if over:
            print(
                f"quanyi: warning: over-allocated: {', '.join(over)}: quotas hold more units than the pool has "
                "(codes voided or expired); take some back: `quanyi stock allocate SKU --to CHANNEL --take-back N`",
                file=sys.stderr,
            )
        return 0

    return asyncio.run(_with_core(run))


def cmd_stock_allocate(args: argparse.Namespace) -> int:
    from quanyi.core import channels

    if args.units is None and args.take_back is None and not args.shared and args.threshold is None:
        raise QuanyiError("give --units N, --take-back N, --shared or --threshold N (see --help)")

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            if args.units is not None:
                await channels.allocate(session, args.sku, args.to, args.units)
            elif args.take_back is not None:
                await channels.take_back(session, args.sku, args.to, args.take_back)
            elif args.shared:
                await channels.share_pool(session, args.sku, args.to)
            if args.threshold is not None:
                await channels.set_threshold(session, args.sku, args.threshold, holder=args.to)
            code = (await channels.resolve_holder(session, args.to)).code
            (pool,) = await channels.pool_levels(session, args.sku)
        held = next((a for a in pool.allocations if a.channel == code), None)
        if held is None:
            raise QuanyiError(f"{code} has no allocation of {pool.sku}")
        if held.mode == "quota":
            state = (
                f"quota, allocated {held.allocated}, reserved {held.reserved}, sold {held.sold}, "
                f"remaining {held.remaining}"
            )
        else:
            state = f"shared pool (no cap of its own), reserved {held.reserved}, sold {held.sold}"
        print(
            f"{pool.sku} -> {code} ({held.channel_name}): {state}, threshold {_threshold(held.threshold)}; "
            f"pool unallocated {pool.unallocated}"
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_stock_threshold(args: argparse.Namespace) -> int:
    from quanyi.core.channels import set_threshold

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            await set_threshold(session, args.sku, args.threshold)
        print(f"{args.sku}: pool low-stock threshold {_threshold(args.threshold)}")
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
    from quanyi.core.redeem import redemptions

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            details = await order_details(session, args.number)
            records = await redemptions(session, details.order.id)
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
        if records:
            print("redemptions:")
            for record in records:
                line_no = details.line_numbers.get(record.order_line_id, "?") if record.order_line_id else "?"
                print(
                    f"  {record.at:%Y-%m-%d %H:%M} UTC  line {line_no} link #{record.token_id} use {record.use_no}"
                    f"  by {record.by} via {record.channel}"
                )
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


def cmd_channel_add(args: argparse.Namespace) -> int:
    from quanyi.core.channels import add_channel

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            channel = await add_channel(session, args.code, args.name, args.kind)
        print(f"added channel {channel.code}: {channel.name} ({channel.kind})")
        return 0

    return asyncio.run(_with_core(run))


def cmd_channel_list(args: argparse.Namespace) -> int:
    from quanyi.core.channels import list_channels

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:  # creates the bot channel on first use
            rows = [[c.code, c.kind, "yes" if c.active else "no", c.name] for c in await list_channels(session)]
        _table(["code", "kind", "active", "name"], rows)
        return 0

    return asyncio.run(_with_core(run))


def cmd_channel_price(args: argparse.Namespace) -> int:
    from quanyi.core.catalog import get_product
    from quanyi.core.channels import resolve_holder, set_channel_price
    from quanyi.core.money import Money

    price_text = _price_or_remove(args.price, args.remove)

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            product = await get_product(session, args.sku)
            price = Money.parse(price_text, product.currency) if price_text is not None else None
            await set_channel_price(session, args.channel, args.sku, price.minor if price else None)
            code = (await resolve_holder(session, args.channel)).code
            listed = Money(product.price, product.currency)
        if price is None:
            print(f"{code}: removed its price of {product.sku}; it sells at the list price {listed}")
        else:
            print(f"{code}: sells {product.sku} at {price} (list price {listed})")
        return 0

    return asyncio.run(_with_core(run))


def cmd_distributor_invite(args: argparse.Namespace) -> int:
    from quanyi.core.distributors import INVITE_PREFIX, create_invite

    async def run(core: Any) -> int:
        settings = core.settings
        async with core.db.transaction() as session:
            invite = await create_invite(
                session,
                created_by="cli",
                tier=args.tier,
                invite_limit=args.invite_limit,
                hours=args.hours if args.hours is not None else settings.invite_hours,
                max_depth=settings.max_distributor_depth,
            )
        start = INVITE_PREFIX + invite.token
        link = _start_link(settings, start)
        terms = f"tier {invite.tier}, may invite {invite.invite_limit} sub-distributors"
        if link:
            print(f"invite link (one use; {terms}): {link}")
        else:
            print(f"invite start parameter (one use; {terms}): {start}")
            print("set QUANYI_BOT_USERNAME to print it as a https://t.me/<bot>?start=... link")
        print(f"expires {invite.expires_at:%Y-%m-%d %H:%M} UTC")
        return 0

    return asyncio.run(_with_core(run))


def cmd_distributor_list(args: argparse.Namespace) -> int:
    from quanyi.core.distributors import REFERRAL_PREFIX, list_distributors
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            rows = await list_distributors(session)
        user_ids = {d.id: d.user_id for d, _ in rows}
        _table(
            ["user", "username", "tier", "parent", "depth", "balance", "subs/limit", "active", "referral", "name"],
            [
                [
                    d.user_id,
                    f"@{username}" if username else "-",
                    d.tier,
                    user_ids.get(d.parent_id, "-") if d.parent_id is not None else "-",
                    d.depth,
                    f"{format_minor(d.balance, d.currency)} {d.currency}",
                    f"{d.sub_count}/{d.invite_limit}",
                    "yes" if d.active else "no",
                    _start_link(core.settings, REFERRAL_PREFIX + d.referral_code) or REFERRAL_PREFIX + d.referral_code,
                    d.name,
                ]
                for d, username in rows
            ],
        )
        return 0

    return asyncio.run(_with_core(run))


def cmd_distributor_update(args: argparse.Namespace) -> int:
    from quanyi.core.distributors import update_distributor

    if args.tier is None and args.invite_limit is None and args.active is None:
        raise QuanyiError("nothing to change: give --tier, --invite-limit, --active or --inactive")

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            d = await update_distributor(
                session, args.ref, tier=args.tier, invite_limit=args.invite_limit, active=args.active
            )
        state = "active" if d.active else "inactive"
        print(f"updated distributor {d.user_id} ({d.name}): tier {d.tier}, invite limit {d.invite_limit}, {state}")
        return 0

    return asyncio.run(_with_core(run))


def _balance_change(args: argparse.Namespace, *, sign: int, reason: str) -> int:
    from quanyi.core.distributors import adjust_balance, resolve
    from quanyi.core.money import Money

    if args.amount.strip().startswith("-"):
        other = "debit" if sign > 0 else "credit"
        raise QuanyiError(f"the amount must be positive; to go the other way use `quanyi distributor {other}`")

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            d = await resolve(session, args.ref)
            amount = Money.parse(args.amount, d.currency)
            after = await adjust_balance(
                session, d, sign * amount.minor, reason=reason, actor="cli", note=args.note or ""
            )
        done = "credited" if sign > 0 else "debited"
        print(f"{done} {amount} for distributor {d.user_id} ({d.name}): balance {Money(after, d.currency)}")
        return 0

    return asyncio.run(_with_core(run))


def cmd_distributor_credit(args: argparse.Namespace) -> int:
    return _balance_change(args, sign=1, reason="top_up")


def cmd_distributor_debit(args: argparse.Namespace) -> int:
    return _balance_change(args, sign=-1, reason="adjustment")


def cmd_distributor_price(args: argparse.Namespace) -> int:
    from quanyi.core.catalog import get_product
    from quanyi.core.distributors import set_cost_price
    from quanyi.core.money import Money

    price_text = _price_or_remove(args.price, args.remove)

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            product = await get_product(session, args.sku)
            price = Money.parse(price_text, product.currency) if price_text is not None else None
            await set_cost_price(
                session, args.sku, price.minor if price else None, tier=args.tier, distributor=args.distributor
            )
            listed = Money(product.price, product.currency)
        who = f"tier {args.tier.strip().lower()}" if args.tier is not None else f"distributor {args.distributor}"
        if price is None:
            print(f"{product.sku}: removed the cost price of {who}")
        else:
            print(f"{product.sku}: {who} pays {price} per unit (list price {listed})")
        return 0

    return asyncio.run(_with_core(run))


def cmd_commission_rate(args: argparse.Namespace) -> int:
    from quanyi.core.commissions import format_rate, parse_rate, set_rate

    rate = parse_rate(args.rate)

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            await set_rate(session, args.level, rate)
        print(f"level {args.level} commission: {format_rate(rate)} of the line amount")
        return 0

    return asyncio.run(_with_core(run))


def cmd_commission_rates(args: argparse.Namespace) -> int:
    from quanyi.core.commissions import format_rate, rates

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            levels = await rates(session)
        _table(["level", "rate"], [[level, format_rate(bp)] for level, bp in sorted(levels.items())])
        return 0

    return asyncio.run(_with_core(run))


def cmd_commission_list(args: argparse.Namespace) -> int:
    from quanyi.core.commissions import format_rate, list_commissions
    from quanyi.core.distributors import resolve
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            distributor = await resolve(session, args.distributor) if args.distributor else None
            rows = await list_commissions(
                session,
                distributor_id=distributor.id if distributor else None,
                order_number=args.order,
                limit=args.limit,
            )
        _table(
            ["order", "line", "distributor", "level", "kind", "base", "rate", "amount", "status"],
            [
                [
                    r.order_number,
                    r.line_no,
                    f"{r.distributor_user_id} {r.distributor_name}",
                    r.commission.level,
                    r.commission.kind,
                    format_minor(r.commission.base_amount, r.commission.currency),
                    format_rate(r.commission.rate_bp) if r.commission.kind == "level" else "-",
                    f"{format_minor(r.commission.amount, r.commission.currency)} {r.commission.currency}",
                    r.commission.status,
                ]
                for r in rows
            ],
        )
        totals: dict[tuple[str, str], int] = {}
        for r in rows:
            key = (r.commission.status, r.commission.currency)
            totals[key] = totals.get(key, 0) + r.commission.amount
        for (status, currency), amount in sorted(totals.items()):
            print(f"total {status}: {format_minor(amount, currency)} {currency}")
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


def cmd_supplier_sim(args: argparse.Namespace) -> int:
    import signal

    from quanyi.core.suppliers.sim import DEFAULT_SECRET, SimOptions, SupplierSim

    configured = _settings().supplier_generic_secret
    options = SimOptions(
        secret=args.secret or configured or DEFAULT_SECRET,
        fail_rate=args.fail_rate,
        timeout_rate=args.timeout_rate,
        hang_seconds=args.hang_seconds,
        complete_after=args.complete_after,
        callback_delay=args.callback_delay,
        duplicate_callbacks=args.duplicate_callbacks,
        out_of_order=args.out_of_order,
        callbacks=not args.no_callbacks,
        seed=args.seed,
    )
    logging.getLogger("quanyi.supplier_sim").setLevel(logging.INFO)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with SupplierSim(options, host=args.host, port=args.port) as sim:
            print(f"supplier simulator listening on {sim.base_url} (seed {sim.seed})", flush=True)
            if args.secret or configured:
                print(f"point quanyi at it: QUANYI_SUPPLIER_GENERIC_URL={sim.base_url}", flush=True)
            else:
                print(
                    f"point quanyi at it: QUANYI_SUPPLIER_GENERIC_URL={sim.base_url} "
                    f"QUANYI_SUPPLIER_GENERIC_SECRET={DEFAULT_SECRET}",
                    flush=True,
                )
            await stop.wait()
        print("supplier simulator stopped", flush=True)
        return 0

    return asyncio.run(run())


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(none)")


def _threshold(value: int) -> str:
    return str(value) if value else "off"


def _money_or(minor: int | None, currency: str, default: str) -> str:
    from quanyi.core.money import Money

    return str(Money(minor, currency)) if minor is not None else default


def _price_or_remove(price: str | None, remove: bool) -> str | None:
    """PRICE or --remove, exactly one of them; None means remove."""
    if (price is None) == (not remove):
        raise QuanyiError("give a PRICE or --remove")
    return price


def _start_link(settings: Settings, start: str) -> str | None:
    """The t.me deep link for a /start parameter, when the bot's username is configured."""
    bot = settings.bot_username.strip().lstrip("@")
    return f"https://t.me/{bot}?start={start}" if bot else None


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr too; the full usage is in --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"quanyi: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quanyi", description="Sell virtual rights through chat.")
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
    add.add_argument("--category", help="a label coupons and promotions can be scoped to, e.g. video")
    _add_kind_arguments(add, update=False)
    add.set_defaults(fn=cmd_product_add)
    upd = product.add_parser("update", help="change a product's name, prices, texts or whether it is on sale")
    upd.add_argument("sku")
    upd.add_argument("--name")
    upd.add_argument("--price", help="decimal text in the product's currency; placed orders keep theirs")
    upd.add_argument("--stars-price", help="whole Telegram Stars")
    upd.add_argument("--derived-stars-price", action="store_true", help="use price × QUANYI_STARS_RATE again")
    upd.add_argument("--instructions")
    upd.add_argument("--description")
    upd.add_argument("--floor", help="lowest price any channel or distributor may sell at; '' removes it")
    upd.add_argument("--ceiling", help="highest resale price a distributor may set; '' removes it")
    upd.add_argument("--category", help="a label coupons and promotions can be scoped to; '' removes it")
    sale = upd.add_mutually_exclusive_group()
    sale.add_argument("--on-sale", dest="active", action="store_true", default=None)
    sale.add_argument("--off-sale", dest="active", action="store_false", help="hide it from the catalogue")
    _add_kind_arguments(upd, update=True)
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

    channel = sub.add_parser("channel", help="sales channels and their prices").add_subparsers(
        dest="channel_command", required=True
    )
    cadd = channel.add_parser("add", help="add a sales channel (partner API client, storefront)")
    cadd.add_argument("code", help="2-32 lowercase letters, digits, '_' or '-'")
    cadd.add_argument("--name", required=True)
    cadd.add_argument("--kind", choices=["partner", "distributor"], default="partner")
    cadd.set_defaults(fn=cmd_channel_add)
    channel.add_parser("list", help="all channels").set_defaults(fn=cmd_channel_list)
    cprice = channel.add_parser(
        "price", help="a channel's own price for a product (never under the product's floor), or --remove it"
    )
    cprice.add_argument("channel", help="channel code, or a distributor by user id or @username")
    cprice.add_argument("sku")
    cprice.add_argument("price", nargs="?", help="decimal text in the product's currency")
    cprice.add_argument("--remove", action="store_true", help="sell at the list price again")
    cprice.set_defaults(fn=cmd_channel_price)

    from quanyi.cli_partner import add_partner_parser

    add_partner_parser(sub)

    dist = sub.add_parser("distributor", help="distributors (代理)").add_subparsers(
        dest="distributor_command", required=True
    )
    dinv = dist.add_parser(
        "invite",
        help="a one-time invite link that makes its user a level-1 distributor",
        description="Prints https://t.me/<QUANYI_BOT_USERNAME>?start=inv_<token> (or the start parameter when "
        "QUANYI_BOT_USERNAME is not set) and when it expires.",
    )
    dinv.add_argument("--tier", default="default", help="cost-price tier (default: default)")
    dinv.add_argument("--invite-limit", type=int, default=0, metavar="N", help="sub-distributors it may invite")
    dinv.add_argument("--hours", type=int, metavar="H", help="valid for H hours (default: QUANYI_INVITE_HOURS)")
    dinv.set_defaults(fn=cmd_distributor_invite)
    dist.add_parser("list", help="all distributors with balance and referral link").set_defaults(
        fn=cmd_distributor_list
    )
    dupd = dist.add_parser("update", help="change a distributor's tier, invite limit or whether it is active")
    dupd.add_argument("ref", help="Telegram user id, @username or storefront channel code")
    dupd.add_argument("--tier")
    dupd.add_argument("--invite-limit", type=int, metavar="N")
    state = dupd.add_mutually_exclusive_group()
    state.add_argument("--active", dest="active", action="store_true", default=None)
    state.add_argument("--inactive", dest="active", action="store_false", help="it can no longer sell or invite")
    dupd.set_defaults(fn=cmd_distributor_update)
    dcredit = dist.add_parser("credit", help="top up a distributor's prepaid balance")
    dcredit.add_argument("ref", help="Telegram user id, @username or storefront channel code")
    dcredit.add_argument("amount", help="decimal text in the distributor's currency, e.g. 500.00")
    dcredit.add_argument("--note", help="e.g. the bank transfer reference")
    dcredit.set_defaults(fn=cmd_distributor_credit)
    ddebit = dist.add_parser("debit", help="take from a distributor's balance (a correction); never below zero")
    ddebit.add_argument("ref", help="Telegram user id, @username or storefront channel code")
    ddebit.add_argument("amount", help="decimal text in the distributor's currency")
    ddebit.add_argument("--note", required=True, help="why (kept with the balance entry)")
    ddebit.set_defaults(fn=cmd_distributor_debit)
    dprice = dist.add_parser(
        "price",
        help="cost price a tier or one distributor pays per unit, or --remove it",
        description="A distributor pays its own cost price, else its tier's, else the list price.",
    )
    dprice.add_argument("sku")
    dprice.add_argument("price", nargs="?", help="decimal text in the product's currency")
    whom = dprice.add_mutually_exclusive_group(required=True)
    whom.add_argument("--tier")
    whom.add_argument("--distributor", metavar="REF", help="Telegram user id, @username or storefront channel code")
    dprice.add_argument("--remove", action="store_true")
    dprice.set_defaults(fn=cmd_distributor_price)

    commission = sub.add_parser("commission", help="distributor commissions").add_subparsers(
        dest="commission_command", required=True
    )
    crate = commission.add_parser(
        "rate",
        help="commission for chain level N (1 = the buyer's own distributor) as a share of the line amount",
    )
    crate.add_argument("level", type=int)
    crate.add_argument("rate", help="5%%, 2.5%% or 250bp; 0 turns the level off")
    crate.set_defaults(fn=cmd_commission_rate)
    commission.add_parser("rates", help="commission rate per level").set_defaults(fn=cmd_commission_rates)
    clist = commission.add_parser("list", help="commission rows, newest first, with totals per status")
    clist.add_argument("--distributor", metavar="REF", help="Telegram user id, @username or storefront channel code")
    clist.add_argument("--order", metavar="NUMBER")
    clist.add_argument("--limit", type=int, default=500, help="newest N rows (the totals add up these rows)")
    clist.set_defaults(fn=cmd_commission_list)

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

    from quanyi.cli_ledger import add_ledger_parser

    add_ledger_parser(sub)
    from quanyi.cli_pricing import add_pricing_parsers

    add_pricing_parsers(sub)

    from quanyi.cli_reconcile import add_reconcile_parser

    add_reconcile_parser(sub)
    from quanyi.cli_withdraw import add_withdrawal_parser

    add_withdrawal_parser(sub)

    from quanyi.cli_report import add_report_parser

    add_report_parser(sub)
    from quanyi.cli_settle import add_settle_parser

    add_settle_parser(sub)
    from quanyi.cli_risk import add_risk_parser

    add_risk_parser(sub)
    from quanyi.cli_keys import add_keys_parser

    add_keys_parser(sub)
    from quanyi.cli_audit import add_audit_parser

    add_audit_parser(sub)

    sub.add_parser("demo", help="load the demo catalogue with stock (idempotent)").set_defaults(fn=cmd_demo)
    sub.add_parser("serve", help="HTTP server + bot + scheduler in one process").set_defaults(fn=cmd_serve)
    sim = sub.add_parser(
        "supplier-sim",
        help="run a recharge supplier simulator (generic signed JSON protocol) for the demo",
        description="Serves POST /orders and GET /orders/<number> as docs/suppliers.md specifies and posts "
        "signed callbacks to each order's callback_url. The secret is --secret, else "
        "QUANYI_SUPPLIER_GENERIC_SECRET, else a fixed demo secret. Stop it with Ctrl-C.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--secret", help="HMAC secret shared with quanyi")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share of orders that fail, 0 to 1 (e.g. 0.2)")
    sim.add_argument(
        "--timeout-rate", type=float, default=0.0, help="share of requests answered only after --hang-seconds"
    )
    sim.add_argument("--hang-seconds", type=float, default=60.0, help="how long a timed-out request hangs")
    sim.add_argument("--complete-after", type=float, default=1.0, help="seconds from accepting an order to its outcome")
    sim.add_argument("--callback-delay", type=float, default=0.0, help="seconds from the outcome to its callback")
    sim.add_argument("--duplicate-callbacks", action="store_true", help="send every final callback twice")
    sim.add_argument(
        "--out-of-order", action="store_true", help="after the final callback, send a stale processing one"
    )
    sim.add_argument("--no-callbacks", action="store_true", help="never call back (quanyi must query)")
    sim.add_argument("--seed", type=int, help="make the failures and timeouts repeatable")
    sim.set_defaults(fn=cmd_supplier_sim)
    return parser


def _audit_command(args: argparse.Namespace) -> None:
    """A command that changed something goes on the audit trail (its words and options, never secrets)."""
    from quanyi.cli_audit import changes_something, record_cli_command

    if not changes_something(args):
        return
    try:
        record_cli_command(args)
    except Exception as exc:  # the change is made: say the record is missing, do not hide it
        print(
            f"quanyi: warning: the audit record of this command was not written ({type(exc).__name__})", file=sys.stderr
        )


def _run_acting(args: argparse.Namespace) -> int | None:
    """Run the command; what a changing command does to audited rows is recorded with old and new values."""
    from quanyi.cli_audit import changes_something, cli_actor
    from quanyi.core import audit

    if not changes_something(args):
        return args.fn(args)
    with audit.acting(cli_actor(), "cli"):
        return args.fn(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = int(_run_acting(args) or 0)
        if code == 0:
            _audit_command(args)
        return code
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
