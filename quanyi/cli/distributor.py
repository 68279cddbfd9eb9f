"""``quanyi distributor``: invites, the list, tiers, balances and cost prices."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import price_or_remove, print_table, with_core
from quanyi.core.errors import QuanyiError
from quanyi.core.platform.config import Settings


def cmd_distributor_invite(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        invite = await core.distributors.create_invite(
            created_by="cli",
            tier=args.tier,
            invite_limit=args.invite_limit,
            hours=args.hours,
            allow_no_margin=args.allow_no_margin,
        )
        link = _start_link(core.settings, invite.start)
        terms = f"tier {invite.tier}, may invite {invite.invite_limit} sub-distributors"
        if link:
            print(f"invite link (one use; {terms}): {link}")
        else:
            print(f"invite start parameter (one use; {terms}): {invite.start}")
            print("set QUANYI_BOT_USERNAME to print it as a https://t.me/<bot>?start=... link")
        print(f"expires {invite.expires_at:%Y-%m-%d %H:%M} UTC")
        return 0

    return asyncio.run(with_core(run))


def cmd_distributor_list(args: argparse.Namespace) -> int:
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        rows = await core.distributors.list_distributors()
        print_table(
            ["user", "username", "tier", "parent", "depth", "balance", "subs/limit", "active", "referral", "name"],
            [
                [
                    d.user_id,
                    f"@{d.username}" if d.username else "-",
                    d.tier,
                    d.parent_user_id if d.parent_user_id is not None else "-",
                    d.depth,
                    f"{format_minor(d.balance, d.currency)} {d.currency}",
                    f"{d.sub_count}/{d.invite_limit}",
                    "yes" if d.active else "no",
                    _start_link(core.settings, d.referral_start) or d.referral_start,
                    d.name,
                ]
                for d in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_distributor_update(args: argparse.Namespace) -> int:
    if args.tier is None and args.invite_limit is None and args.active is None:
        raise QuanyiError("nothing to change: give --tier, --invite-limit, --active or --inactive")

    async def run(core: Any) -> int:
        d = await core.distributors.update(args.ref, tier=args.tier, invite_limit=args.invite_limit, active=args.active)
        state = "active" if d.active else "inactive"
        print(f"updated distributor {d.user_id} ({d.name}): tier {d.tier}, invite limit {d.invite_limit}, {state}")
        return 0

    return asyncio.run(with_core(run))


def _balance_change(args: argparse.Namespace, *, credit: bool) -> int:
    from quanyi.core.errors import InvalidInput
    from quanyi.core.money import Money

    async def run(core: Any) -> int:
        change = core.distributors.credit if credit else core.distributors.debit
        try:
            done = await change(args.ref, args.amount, actor="cli", note=args.note or "")
        except InvalidInput as exc:
            if not exc.details.get("negative"):
                raise
            other = "debit" if credit else "credit"
            raise QuanyiError(
                f"the amount must be positive; to go the other way use `quanyi distributor {other}`"
            ) from None
        amount, after = Money(done.amount, done.currency), Money(done.balance, done.currency)
        verb = "credited" if credit else "debited"
        print(f"{verb} {amount} for distributor {done.user_id} ({done.name}): balance {after}")
        return 0

    return asyncio.run(with_core(run))


def cmd_distributor_credit(args: argparse.Namespace) -> int:
    return _balance_change(args, credit=True)


def cmd_distributor_debit(args: argparse.Namespace) -> int:
    return _balance_change(args, credit=False)


def cmd_distributor_price(args: argparse.Namespace) -> int:
    from quanyi.core.money import Money

    price_text = price_or_remove(args.price, args.remove)

    async def run(core: Any) -> int:
        done = await core.distributors.set_cost_price(
            args.sku, price_text, tier=args.tier, distributor=args.distributor
        )
        who = f"tier {args.tier.strip().lower()}" if args.tier is not None else f"distributor {args.distributor}"
        if done.price is None:
            print(f"{done.sku}: removed the cost price of {who}")
        else:
            listed = Money(done.list_price, done.currency)
            print(f"{done.sku}: {who} pays {Money(done.price, done.currency)} per unit (list price {listed})")
        return 0

    return asyncio.run(with_core(run))


def _start_link(settings: Settings, start: str) -> str | None:
    """The t.me deep link for a /start parameter, when the bot's username is configured."""
    bot = settings.bot_username.strip().lstrip("@")
    return f"https://t.me/{bot}?start={start}" if bot else None


def add_parser(sub: Any) -> None:
    dist = sub.add_parser("distributor", help="distributors (代理)").add_subparsers(
        dest="distributor_command", required=True
    )
    dinv = dist.add_parser(
        "invite",
        help="a one-time invite link that makes its user a level-1 distributor",
        description="Prints https://t.me/<QUANYI_BOT_USERNAME>?start=inv_<token> (or the start parameter when "
        "QUANYI_BOT_USERNAME is not set) and when it expires.",
    )
    dinv.add_argument("--tier", default="default", help="cost-price tier (default: default)")
    dinv.add_argument("--invite-limit", type=int, default=0, metavar="N", help="sub-distributors it may invite")
    dinv.add_argument("--hours", type=int, metavar="H", help="valid for H hours (default: QUANYI_INVITE_HOURS)")
    dinv.add_argument(
        "--allow-no-margin",
        action="store_true",
        help="invite even when the tier has no cost prices (the distributor then pays the list price)",
    )
    dinv.set_defaults(fn=cmd_distributor_invite)
    dist.add_parser("list", help="all distributors with balance and referral link").set_defaults(
        fn=cmd_distributor_list
    )
    dupd = dist.add_parser("update", help="change a distributor's tier, invite limit or whether it is active")
    dupd.add_argument("ref", help="Telegram user id, @username or storefront channel code")
    dupd.add_argument("--tier")
    dupd.add_argument("--invite-limit", type=int, metavar="N")
    state = dupd.add_mutually_exclusive_group()
    state.add_argument("--active", dest="active", action="store_true", default=None)
    state.add_argument("--inactive", dest="active", action="store_false", help="it can no longer sell or invite")
    dupd.set_defaults(fn=cmd_distributor_update)
    dcredit = dist.add_parser("credit", help="top up a distributor's prepaid balance")
    dcredit.add_argument("ref", help="Telegram user id, @username or storefront channel code")
    dcredit.add_argument("amount", help="decimal text in the distributor's currency, e.g. 500.00")
    dcredit.add_argument("--note", help="e.g. the bank transfer reference")
    dcredit.set_defaults(fn=cmd_distributor_credit)
    ddebit = dist.add_parser("debit", help="take from a distributor's balance (a correction); never below zero")
    ddebit.add_argument("ref", help="Telegram user id, @username or storefront channel code")
    ddebit.add_argument("amount", help="decimal text in the distributor's currency")
    ddebit.add_argument("--note", required=True, help="why (kept with the balance entry)")
    ddebit.set_defaults(fn=cmd_distributor_debit)
    dprice = dist.add_parser(
        "price",
        help="cost price a tier or one distributor pays per unit, or --remove it",
        description="A distributor pays its own cost price, else its tier's, else the list price.",
    )
    dprice.add_argument("sku")
    dprice.add_argument("price", nargs="?", help="decimal text in the product's currency")
    whom = dprice.add_mutually_exclusive_group(required=True)
    whom.add_argument("--tier")
    whom.add_argument("--distributor", metavar="REF", help="Telegram user id, @username or storefront channel code")
    dprice.add_argument("--remove", action="store_true")
    dprice.set_defaults(fn=cmd_distributor_price)
