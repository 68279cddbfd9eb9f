"""``quanyi ledger check`` and ``quanyi ledger balances``: the books from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from quanyi.cli._common import print_table, with_core
from quanyi.core.money import format_minor


def cmd_ledger_check(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        report = await core.books.check_ledger()
        print(f"{report.entries} journal entries, {report.postings} postings")
        for ref, currency, total in report.unbalanced:
            print(f"UNBALANCED {ref}: postings sum to {total} {currency}")
        for mismatch in report.mismatches:
            print(f"MISMATCH {mismatch}")
        if not report.ok:
            print(
                f"quanyi: the ledger does not balance ({len(report.unbalanced)} entries, "
                f"{len(report.mismatches)} mismatches)",
                file=sys.stderr,
            )
            return 1
        print("the ledger balances: every entry sums to zero per currency, and balances agree")
        return 0

    return asyncio.run(with_core(run))


def cmd_ledger_balances(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        held = await core.books.balances(args.prefix or "", include_zero=args.all)
        rows = [[b.account, b.currency, format_minor(b.amount, b.currency)] for b in held]
        print_table(["account", "currency", "balance (debit +)"], rows)
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    ledger_parser = sub.add_parser("ledger", help="the double-entry ledger").add_subparsers(
        dest="ledger_command", required=True
    )
    ledger_parser.add_parser(
        "check",
        help="prove the ledger balances; exits 1 naming what does not",
        description="Every journal entry must sum to zero per currency, and each distributor's balance "
        "must equal its balance account in the ledger.",
    ).set_defaults(fn=cmd_ledger_check)
    balances = ledger_parser.add_parser("balances", help="account balances (debit positive)")
    balances.add_argument("--prefix", help="accounts starting with this, e.g. distributor:12: or clearing:")
    balances.add_argument("--all", action="store_true", help="include accounts at zero")
    balances.set_defaults(fn=cmd_ledger_balances)
