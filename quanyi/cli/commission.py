"""``quanyi commission rate``, ``rates`` and ``list``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import print_table, with_core


def cmd_commission_rate(args: argparse.Namespace) -> int:
    from quanyi.core.distributors.views import format_rate, parse_rate

    rate = parse_rate(args.rate)

    async def run(core: Any) -> int:
        await core.books.set_commission_rate(args.level, rate)
        print(f"level {args.level} commission: {format_rate(rate)} of the line amount")
        return 0

    return asyncio.run(with_core(run))


def cmd_commission_rates(args: argparse.Namespace) -> int:
    from quanyi.core.distributors.views import format_rate

    async def run(core: Any) -> int:
        levels = await core.books.commission_rates()
        print_table(["level", "rate"], [[level, format_rate(bp)] for level, bp in sorted(levels.items())])
        return 0

    return asyncio.run(with_core(run))


def cmd_commission_list(args: argparse.Namespace) -> int:
    from quanyi.core.distributors.views import format_rate
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        report = await core.books.commission_report(
            distributor=args.distributor or None, order_number=args.order, limit=args.limit
        )
        print_table(
            ["order", "line", "distributor", "level", "kind", "base", "rate", "amount", "status"],
            [
                [
                    c.order_number,
                    c.line_no,
                    f"{c.distributor_user_id} {c.distributor_name}",
                    c.level,
                    c.kind,
                    format_minor(c.base_amount, c.currency),
                    format_rate(c.rate_bp) if c.kind == "level" else "-",
                    f"{format_minor(c.amount, c.currency)} {c.currency}",
                    c.status,
                ]
                for c in report.lines
            ],
        )
        for total in report.totals:
            print(f"total {total.status}: {format_minor(total.amount, total.currency)} {total.currency}")
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
