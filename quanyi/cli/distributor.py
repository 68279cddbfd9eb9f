"""``quanyi distributor``: invites, the list, tiers, balances and cost prices."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import price_or_remove, print_table, with_core
from quanyi.core.errors import QuanyiError
from quanyi.core.platform.config import Settings


def cmd_distributor_invite(args: argparse.Namespace) -> int:
    from quanyi.core.distributors.accounts import INVITE_PREFIX, create_invite

    async def run(core: Any) -> int:
        settings = core.settings
        async with core.db.transaction() as session:
            invite = await create_invite(
                session,
                created_by="cli",
                tier=args.tier,
                invite_limit=args.invite_limit,
                hours=args.hours if args.hours is not None else settings.invite_hours,
                max_depth=settings.max_distributor_depth,
            )
        start = INVITE_PREFIX + invite.token
        link = _start_link(settings, start)
        terms = f"tier {invite.tier}, may invite {invite.invite_limit} sub-distributors"
        if link:
            print(f"invite link (one use; {terms}): {link}")
        else:
            print(f"invite start parameter (one use; {terms}): {start}")
            print("set QUANYI_BOT_USERNAME to print it as a https://t.me/<bot>?start=... link")
        print(f"expires {invite.expires_at:%Y-%m-%d %H:%M} UTC")
        return 0

    return asyncio.run(with_core(run))


def cmd_distributor_list(args: argparse.Namespace) -> int:
    from quanyi.core.distributors.accounts import REFERRAL_PREFIX, list_distributors
    from quanyi.core.money import format_minor

    async def run(core: Any) -> int:
        async with core.db.read() as session:
            rows = await list_distributors(session)
        user_ids = {d.id: d.user_id for d, _ in rows}
        print_table(
            ["user", "username", "tier", "parent", "depth", "balance", "subs/limit", "active", "referral", "name"],
            [
                [
                    d.user_id,
                    f"@{username}" if username else "-",
                    d.tier,
                    user_ids.get(d.parent_id, "-") if d.parent_id is not None else "-",
                    d.depth,
                    f"{format_minor(d.balance, d.currency)} {d.currency}",
                    f"{d.sub_count}/{d.invite_limit}",
                    "yes" if d.active else "no",
                    _start_link(core.settings, REFERRAL_PREFIX + d.referral_code) or REFERRAL_PREFIX + d.referral_code,
                    d.name,
                ]
                for d, username in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_distributor_update(args: argparse.Namespace) -> int:
    from quanyi.core.distributors.accounts import update_distributor

    if args.tier is None and args.invite_limit is None and args.active is None:
        raise QuanyiError("nothing to change: give --tier, --invite-limit, --active or --inactive")

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            d = await update_distributor(
                session, args.ref, tier=args.tier, invite_limit=args.invite_limit, active=args.active
            )
        state = "active" if d.active else "inactive"
        print(f"updated distributor {d.user_id} ({d.name}): tier {d.tier}, invite limit {d.invite_limit}, {state}")
        return 0

    return asyncio.run(with_core(run))


def _balance_change(args: argparse.Namespace, *, sign: int, reason: str) -> int:
    from quanyi.core.distributors.accounts import adjust_balance, resolve
    from quanyi.core.money import Money

    if args.amount.strip().startswith("-"):
        other = "debit" if sign > 0 else "credit"
        raise QuanyiError(f"the amount must be positive; to go the other way use `quanyi distributor {other}`")

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            d = await resolve(session, args.ref)
            amount = Money.parse(args.amount, d.currency)
            after = await adjust_balance(
                session, d, sign * amount.minor, reason=reason, actor="cli", note=args.note or ""
            )
        done = "credited" if sign > 0 else "debited"
        print(f"{done} {amount} for distributor {d.user_id} ({d.name}): balance {Money(after, d.currency)}")
        return 0

    return asyncio.run(with_core(run))


def cmd_distributor_credit(args: argparse.Namespace) -> int:
    return _balance_change(args, sign=1, reason="top_up")


def cmd_distributor_debit(args: argparse.Namespace) -> int:
    return _balance_change(args, sign=-1, reason="adjustment")


def cmd_distributor_price(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.products import get_product
    from quanyi.core.distributors.accounts import set_cost_price
    from quanyi.core.money import Money

    price_text = price_or_remove(args.price, args.remove)

    async def run(core: Any) -> int:
        async with core.db.transaction() as session:
            product = await get_product(session, args.sku)
            price = Money.parse(price_text, product.currency) if price_text is not None else None
            await set_cost_price(
                session, args.sku, price.minor if price else None, tier=args.tier, distributor=args.distributor
            )
            listed = Money(product.price, product.currency)
        who = f"tier {args.tier.strip().lower()}" if args.tier is not None else f"distributor {args.distributor}"
        if price is None:
            print(f"{product.sku}: removed the cost price of {who}")
        else:
            print(f"{product.sku}: {who} pays {price} per unit (list price {listed})")
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
