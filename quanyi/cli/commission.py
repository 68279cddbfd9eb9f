"""``quanyi commission rate``, ``rates`` and ``list``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import print_table, with_core


def cmd_commission_rate(args: argparse.Namespace) -> int:
    from quanyi.core.books.commissions import format_rate, parse_rate, set_rate

    rate = parse_rate(args.rate)

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            await set_rate(session, args.level, rate)
        print(f"level {args.level} commission: {format_rate(rate)} of the line amount")
        return 0

    return asyncio.run(with_core(run))


def cmd_commission_rates(args: argparse.Namespace) -> int:
    from quanyi.core.books.commissions import format_rate, rates

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            levels = await rates(session)
        print_table(["level", "rate"], [[level, format_rate(bp)] for level, bp in sorted(levels.items())])
        return 0

    return asyncio.run(with_core(run))


def cmd_commission_list(args: argparse.Namespace) -> int:
    from quanyi.core.books.commissions import format_rate, list_commissions
    from quanyi.core.distributors.accounts import resolve
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
        print_table(
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

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
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
