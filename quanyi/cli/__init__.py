"""The ``quanyi`` command line. Exit 0 on success; otherwise a one-line reason on stderr.

Each command group is a module here that adds its own parser (``add_parser``); what they share is in
``_common``. A command that changes something is recorded on the audit trail (see ``record_cli_command``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

from quanyi.cli import (
    _common,
    admin,
    audit,
    channel,
    commission,
    db,
    demo,
    distributor,
    keys,
    ledger,
    order,
    partner,
    payment,
    pricing,
    product,
    reconcile,
    report,
    risk,
    serve,
    settle,
    stock,
    supplier_sim,
    withdrawal,
)
from quanyi.core.errors import QuanyiError
from quanyi.core.platform.db import DatabaseError

# The command groups in the order `quanyi --help` lists them (pricing adds coupon, promotion, bundle, price).
GROUPS = (
    db,
    product,
    stock,
    channel,
    partner,
    distributor,
    commission,
    order,
    payment,
    ledger,
    pricing,
    reconcile,
    withdrawal,
    report,
    settle,
    risk,
    keys,
    admin,
    audit,
    demo,
    serve,
    supplier_sim,
)

# Commands that only read: not recorded. Anything else (new commands included) is.
READ_ONLY_COMMANDS = {"db", "serve", "demo", "supplier-sim", "reconcile", "report", "audit"}
READ_ONLY_LEAVES = {"list", "show", "rates", "check", "balances", "quote", "export", "sessions"}
# The option naming the object a command changes, and that object's type.
_OBJECTS = {
    "number": "order",
    "payment_id": "payment",
    "sku": "product",
    "ref": "distributor",
    "coupon_id": "coupon",
    "promotion_id": "promotion",
    "channel": "channel",
    "id": "withdrawal",
    "code": "channel",
    "day": "settlement",
    "user_id": "staff",
}
_SECRET = re.compile(r"key|secret|token|pass|cred", re.IGNORECASE)


def command_words(args: argparse.Namespace) -> list[str]:
    return [str(v) for k, v in vars(args).items() if k == "command" or k.endswith("_command")]


def changes_something(args: argparse.Namespace) -> bool:
    words = command_words(args)
    return bool(words) and words[0] not in READ_ONLY_COMMANDS and words[-1] not in READ_ONLY_LEAVES


def options(args: argparse.Namespace) -> dict[str, str]:
    """The options given, by name and value; never one whose name says it holds a secret."""
    return {
        k: str(v)[:200]
        for k, v in vars(args).items()
        if k != "fn" and k != "command" and not k.endswith("_command") and v is not None and not _SECRET.search(k)
    }


def record_cli_command(args: argparse.Namespace) -> None:
    """Append the command that just changed something to the audit trail."""
    from quanyi.core.platform.audit import Entry
    from quanyi.core.services import build_core

    words = command_words(args)
    given = vars(args)
    object_type, object_id = next(
        ((kind, str(given[name])) for name, kind in _OBJECTS.items() if given.get(name) is not None),
        ("command", " ".join(words)),
    )
    entry = Entry(
        actor=_common.cli_actor(),
        front="cli",
        action=" ".join(words),
        object_type=object_type,
        object_id=object_id,
        new=options(args),
    )

    async def run() -> None:
        core = build_core(_common.load_settings())
        try:
            await core.platform.record(entry)
        finally:
            await core.close()

    asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = _common.Parser(prog="quanyi", description="Sell virtual rights through chat.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


def _audit_command(args: argparse.Namespace) -> None:
    """A command that changed something goes on the audit trail (its words and options, never secrets)."""
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
    from quanyi.core.platform.audit import acting

    if not changes_something(args):
        return args.fn(args)
    with acting(_common.cli_actor(), "cli"):
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
    except (OSError, DatabaseError) as exc:  # database or file unreachable: say why, in one line
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"quanyi: {type(exc).__name__}: {reason[0] if reason else 'no details'}", file=sys.stderr)
        return 2
    except Exception as exc:  # a last line of defence: one line, no traceback with values in it
        print(f"quanyi: unexpected {type(exc).__name__}; see the log", file=sys.stderr)
        logging.getLogger("quanyi").debug("unexpected error", exc_info=True)
        return 2
