"""What the command modules share: settings, the core around a command, tables, money and the parser class.

Command modules import from here and from core, never from each other or from ``quanyi.cli`` itself.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from quanyi.core.errors import QuanyiError
from quanyi.core.platform.config import Settings


def load_settings() -> Settings:
    return Settings()


async def with_core(fn: Callable[[Any], Awaitable[int]], *, migrate_check: bool = True) -> int:
    from quanyi.core.services import build_core, open_checked

    settings = load_settings()
    if not migrate_check:
        core = build_core(settings)
    else:
        db, keyring = await open_checked(settings)
        core = build_core(settings, db=db, keyring=keyring)
    try:
        return await fn(core)
    finally:
        await core.close()


def cli_actor() -> str:
    """``cli:<login name>``, or plain ``cli`` where the process has no login name."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in a container: still recorded, as plain "cli"
        user = ""
    return f"cli:{user}" if user else "cli"


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(none)")


def money_or(minor: int | None, currency: str, default: str) -> str:
    from quanyi.core.money import Money

    return str(Money(minor, currency)) if minor is not None else default


def price_or_remove(price: str | None, remove: bool) -> str | None:
    """PRICE or --remove, exactly one of them; None means remove."""
    if (price is None) == (not remove):
        raise QuanyiError("give a PRICE or --remove")
    return price


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr too; the full usage is in --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"quanyi: {message} (see `{self.prog} --help`)\n")
