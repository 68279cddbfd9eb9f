"""``quanyi settle``: settle a business day by hand (the scheduler does it after midnight)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import date, timedelta
from typing import Any

from quanyi.cli._common import print_table, with_core
from quanyi.core.errors import InvalidInput
from quanyi.core.models import utcnow
from quanyi.core.money import format_minor


def cmd_settle(args: argparse.Namespace) -> int:
    from quanyi.core.books.settlement import local_day, settle_day
    from quanyi.core.platform.audit_chain import anchor

    async def run(core: Any) -> int:
        settings = core.settings
        if args.day:
            try:
                day = date.fromisoformat(args.day)
            except ValueError:
                raise InvalidInput(f"--day: a date like 2025-03-10, not {args.day!r}") from None
        else:
            day = local_day(utcnow(), settings.timezone) - timedelta(days=1)
        result = await settle_day(
            core.db,
            day,
            tz=settings.timezone,
            confirm_days=settings.commission_confirm_days,
            admin_ids=settings.admin_id_list,
        )
        if result.already:
            state = "already settled" if result.status == "done" else "being settled by another run"
            print(f"{day.isoformat()} {state}")
        else:
            print(f"settled {day.isoformat()} ({settings.timezone})")
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
        if not result.already:
            # The day's records pinned outside the database, as the scheduler's settlement does.
            pinned = await anchor(core.db, settings.data_dir, settings.admin_id_list)
            if pinned is not None:
                print(f"audit chain anchored at record {pinned.seq}: {pinned.hash}")
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
