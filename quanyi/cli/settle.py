"""``quanyi settle``: settle a business day by hand (the scheduler does it after midnight)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import date
from typing import Any

from quanyi.cli._common import print_table, with_core
from quanyi.core.errors import InvalidInput
from quanyi.core.money import format_minor


def _day(text: str | None) -> date | None:
    if not text:
        return None  # the core's default: yesterday in QUANYI_TIMEZONE
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--day: a date like 2025-03-10, not {text!r}") from None


def cmd_settle(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        settled = await core.books.settle(_day(args.day))
        result = settled.result
        if result.already:
            state = "already settled" if result.status == "done" else "being settled by another run"
            print(f"{result.day.isoformat()} {state}")
        else:
            print(f"settled {result.day.isoformat()} ({settled.tz})")
        headers = ["scope", "key", "currency", "orders", "units", "gross", "discounts", "refunds", "net"]
        headers += ["commissions", "available"]
        print_table(
            headers,
            [
                [r.scope, r.key, r.currency, r.orders, r.units]
                + [
                    format_minor(a, r.currency)
                    for a in (r.gross, r.discounts, r.refunds, r.net, r.commissions, r.commissions_available)
                ]
                for r in result.rows
            ],
        )
        if settled.anchor is not None:
            print(f"audit chain anchored at record {settled.anchor.seq}: {settled.anchor.hash}")
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    settle = sub.add_parser(
        "settle",
        help="settle a business day: figures per channel and distributor, commissions made available",
        description="Settles the day once (running it again prints the stored figures). The day is a calendar "
        "day in QUANYI_TIMEZONE and must be over. Statements go to the operators and distributors in chat.",
    )
    settle.add_argument("--day", help="YYYY-MM-DD (default: yesterday in QUANYI_TIMEZONE)")
    settle.set_defaults(fn=cmd_settle)
