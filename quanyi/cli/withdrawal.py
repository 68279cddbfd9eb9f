"""``quanyi withdrawal``: list distributors' withdrawals, approve or reject them, mark them paid."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from zoneinfo import ZoneInfo

from quanyi.cli._common import print_table, with_core
from quanyi.core.money import Money


def cmd_withdrawal_list(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        rows = await core.books.list_withdrawals(status=args.status, limit=args.limit)
        tz = ZoneInfo(core.settings.timezone)
        print_table(
            ["id", "requested", "distributor", "user", "source", "amount", "payout account", "status", "by", "reason"],
            [
                [
                    w.id,
                    w.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                    w.distributor_name,
                    w.distributor_user_id,
                    w.source,
                    Money(w.amount, w.currency),
                    w.payout_account,
                    "paid" if w.paid_at is not None else w.status,
                    w.decided_by or "-",
                    w.reason or "-",
                ]
                for w in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_withdrawal_approve(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        w = await core.books.approve_withdrawal(args.id, actor="cli")
        amount = Money(w.amount, w.currency)
        print(
            f"withdrawal {args.id} approved: pay {amount} to {w.payout_account}, then run "
            f"`quanyi withdrawal paid {args.id}` (the distributor is told it is paid only then)"
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_withdrawal_paid(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        w = await core.books.mark_withdrawal_paid(args.id, actor="cli")
        print(
            f"withdrawal {args.id} marked paid: {Money(w.amount, w.currency)} to {w.payout_account}; "
            "the distributor is told"
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_withdrawal_reject(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        w = await core.books.reject_withdrawal(args.id, actor="cli", reason=args.reason)
        print(f"withdrawal {args.id} rejected: {Money(w.amount, w.currency)} is back in the distributor's {w.source}")
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    """``withdrawal list|approve|paid|reject`` under the ``quanyi`` parser."""
    withdrawal = sub.add_parser("withdrawal", help="distributors' withdrawals").add_subparsers(
        dest="withdrawal_command", required=True
    )
    wlist = withdrawal.add_parser("list", help="withdrawals, newest first")
    wlist.add_argument("--status", choices=["requested", "approved", "rejected"])
    wlist.add_argument("--limit", type=int, default=50)
    wlist.set_defaults(fn=cmd_withdrawal_list)
    approve = withdrawal.add_parser(
        "approve", help="approve a requested withdrawal (the frozen amount leaves the ledger; pay it, then `paid`)"
    )
    approve.add_argument("id", type=int)
    approve.set_defaults(fn=cmd_withdrawal_approve)
    paid = withdrawal.add_parser(
        "paid", help="mark an approved withdrawal paid once the money was sent (the distributor is told)"
    )
    paid.add_argument("id", type=int)
    paid.set_defaults(fn=cmd_withdrawal_paid)
    reject = withdrawal.add_parser("reject", help="reject a requested withdrawal and unfreeze its amount")
    reject.add_argument("id", type=int)
    reject.add_argument("--reason", required=True, help="shown to the distributor")
    reject.set_defaults(fn=cmd_withdrawal_reject)
