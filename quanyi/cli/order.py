"""``quanyi order list``, ``show`` and ``refund``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import print_table, with_core


def cmd_order_list(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        orders = await core.sales.recent_orders(status=args.status, limit=args.limit)
        print_table(
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

    return asyncio.run(with_core(run))


def cmd_order_show(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        order = await core.sales.order_sheet(args.number)
        print(f"order {order.number}  {order.status}  {format_minor(order.amount, order.currency)} {order.currency}")
        print(f"  buyer {order.user_id}  method {order.payment_method}  created {order.created_at:%Y-%m-%d %H:%M} UTC")
        if order.failure_reason:
            print(f"  note: {order.failure_reason}")
        if order.delivery:
            error = f" ({order.delivery_error})" if order.delivery_error else ""
            print(f"  delivery message: {order.delivery}{error}")
        print("lines:")
        for line in order.lines:
            refunded = " (refunded)" if line.refunded else ""
            print(
                f"  {line.line_no}. {line.sku} x{line.quantity}  {format_minor(line.amount, order.currency)}{refunded}"
            )
        print("payments:")
        for p in order.payments:
            amount = f"{format_minor(p.amount, p.currency)} {p.currency}"
            print(f"  #{p.id} {p.method} {p.provider_txn_id}  {amount}  {p.outcome}")
        if order.redemptions:
            print("redemptions:")
            for record in order.redemptions:
                line_no = record.line_no if record.line_no is not None else "?"
                print(
                    f"  {record.at:%Y-%m-%d %H:%M} UTC  line {line_no} link #{record.token_id} use {record.use_no}"
                    f"  by {record.by} via {record.channel}"
                )
        if order.refunds:
            print("refunds:")
            for r in order.refunds:
                scope = f"line {r.line_no}" if r.line_no is not None else r.scope
                error = f"  last error: {r.last_error}" if r.last_error else ""
                amount = format_minor(r.amount, r.currency)
                print(f"  #{r.id} {scope}  {amount} {r.currency}  {r.status}  by {r.initiated_by}: {r.reason}{error}")
        return 0

    return asyncio.run(with_core(run))


def cmd_order_refund(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        result = await core.sales.refund_order(
            args.number, line_no=args.line, reason=args.reason, actor="cli", manual=args.manual
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

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
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
