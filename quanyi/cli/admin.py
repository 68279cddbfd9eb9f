"""``quanyi admin``: the back office's staff (who may sign in to the web console and use the
operator chat, with which role), one-time sign-in links, and console sessions."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from zoneinfo import ZoneInfo

from quanyi.cli._common import cli_actor, print_table, with_core
from quanyi.core.money import Money, parse_minor
from quanyi.core.staff.roles import ROLES, parse_role

ROLE_NAMES = ", ".join(r.value.replace("_", "-") for r in ROLES)


def cmd_admin_add(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        role = parse_role(args.role)
        limit = parse_minor(args.refund_limit, core.settings.currency) if args.refund_limit else 0
        new = await core.staff.add(args.user_id, role, refund_limit=limit, actor=cli_actor(), front="cli")
        extra = f", refunds up to {Money(limit, core.settings.currency)}" if role.value == "support" else ""
        print(f"{args.user_id} {'added as' if new else 'is now'} {role.value.replace('_', '-')}{extra}")
        return 0

    return asyncio.run(with_core(run))


def cmd_admin_list(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        tz = ZoneInfo(core.settings.timezone)
        currency = core.settings.currency
        print_table(
            ["telegram id", "username", "role", "refund limit", "added by", "added"],
            [
                [
                    m.user_id,
                    m.username or "-",
                    m.role.value.replace("_", "-"),
                    Money(m.refund_limit, currency) if m.role.value == "support" else "-",
                    m.added_by,
                    m.added_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if m.added_at else "-",
                ]
                for m in await core.staff.members()
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_admin_remove(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        ended = await core.staff.remove(args.user_id, actor=cli_actor(), front="cli")
        print(f"{args.user_id} removed from the staff; {ended} console session(s) ended")
        return 0

    return asyncio.run(with_core(run))


def cmd_admin_login_link(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        url = await core.staff.login_link(args.user, actor=cli_actor(), front="cli")
        minutes = core.settings.login_link_minutes
        print(url)
        print(f"# one use, valid {minutes} minutes, signs in Telegram user {args.user} only")
        return 0

    return asyncio.run(with_core(run))


def cmd_admin_sessions(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        tz = ZoneInfo(core.settings.timezone)

        def when(moment: Any) -> str:
            return str(moment.astimezone(tz).strftime("%Y-%m-%d %H:%M"))

        print_table(
            ["session", "telegram id", "via", "client", "signed in", "last seen", "ends"],
            [
                [s.id, s.user_id, s.via, s.client or "-", when(s.created_at), when(s.last_seen_at), when(s.expires_at)]
                for s in await core.staff.sessions(args.user)
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_admin_logout_all(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        ended = await core.staff.logout_all(args.user, actor=cli_actor(), front="cli")
        whose = f"of {args.user}" if args.user else "of everyone"
        print(f"{ended} console session(s) {whose} ended")
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    """``admin add|list|remove|login-link|sessions|logout-all`` under the ``quanyi`` parser."""
    admin = sub.add_parser("admin", help="back-office staff, sign-in links and console sessions").add_subparsers(
        dest="admin_command", required=True
    )
    add = admin.add_parser("add", help="give a Telegram user a role (or change it)")
    add.add_argument("user_id", type=int, metavar="TELEGRAM_ID")
    add.add_argument("--role", required=True, help=f"one of: {ROLE_NAMES}")
    add.add_argument("--refund-limit", default="", help="support only: the largest refund, e.g. 50.00")
    add.set_defaults(fn=cmd_admin_add)

    admin.add_parser("list", help="staff and their roles").set_defaults(fn=cmd_admin_list)

    remove = admin.add_parser("remove", help="take a role away (and end the person's sessions)")
    remove.add_argument("user_id", type=int, metavar="TELEGRAM_ID")
    remove.set_defaults(fn=cmd_admin_remove)

    link = admin.add_parser("login-link", help="print a one-time sign-in link to the web console")
    link.add_argument("--user", type=int, required=True, metavar="TELEGRAM_ID")
    link.set_defaults(fn=cmd_admin_login_link)

    sessions = admin.add_parser("sessions", help="open console sessions")
    sessions.add_argument("--user", type=int, default=None, metavar="TELEGRAM_ID")
    sessions.set_defaults(fn=cmd_admin_sessions)

    logout = admin.add_parser("logout-all", help="end every console session (or one person's)")
    logout.add_argument("--user", type=int, default=None, metavar="TELEGRAM_ID")
    logout.set_defaults(fn=cmd_admin_logout_all)
