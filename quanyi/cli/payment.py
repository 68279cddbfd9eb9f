"""``quanyi payment list`` and ``refund``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import print_table, with_core


def cmd_payment_list(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        rows = await core.sales.recent_payments(review_only=args.review, limit=args.limit)
        print_table(
            ["id", "order", "method", "transaction", "amount", "outcome", "refunded", "at (UTC)"],
            [
                [
                    p.id,
                    p.order_number,
                    p.method,
                    p.provider_txn_id[:32],
                    f"{format_minor(p.amount, p.currency)} {p.currency}",
                    p.outcome,
                    "yes" if p.refunded else "",
                    f"{p.created_at:%Y-%m-%d %H:%M}",
                ]
                for p in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_payment_refund(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        result = await core.sales.refund_payment(args.payment_id, reason=args.reason, actor="cli", manual=args.manual)
        if result.status == "already":
            print(f"payment {args.payment_id}: already refunded, nothing done")
        else:
            amount = f"{format_minor(result.amount, result.currency)} {result.currency}"
            print(f"payment {args.payment_id} of {result.order_number}: refunded {amount}, {result.status}")
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
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
