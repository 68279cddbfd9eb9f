"""``quanyi risk``: the rules screened on every order, the blocklist and the decisions made."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import cli_actor, print_table, with_core
from quanyi.core.money import format_minor


def _window(seconds: int | None) -> str:
    return f"{seconds}s" if seconds else "-"


def cmd_rules(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        rules = await core.risk.rules()
        print_table(
            ["name", "metric", "window", "threshold", "action", "channels", "skus", "languages", "on"],
            [
                [
                    r.name,
                    r.metric,
                    _window(r.window_seconds),
                    r.threshold,
                    r.action,
                    r.channels or "all",
                    r.skus or "all",
                    r.languages or "all",
                    "on" if r.active else "off",
                ]
                for r in rules
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_rule_add(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        rule = await core.risk.add_rule(
            name=args.name,
            metric=args.metric,
            threshold=args.threshold,
            action=args.action,
            window_seconds=args.window,
            channels=args.channels or (),
            skus=args.skus or (),
            languages=args.languages or (),
        )
        window = _window(rule.window_seconds)
        print(f"added rule {rule.name}: {rule.metric} over {window} > {rule.threshold} -> {rule.action}")
        return 0

    return asyncio.run(with_core(run))


def cmd_rule_set(args: argparse.Namespace) -> int:
    from quanyi.core.errors import InvalidInput

    async def run(core: Any) -> int:
        if args.threshold is None and args.action is None and args.window is None and args.active is None:
            raise InvalidInput("nothing to change: give --threshold, --action, --window, --on or --off")
        rule = await core.risk.set_rule(
            args.name, threshold=args.threshold, action=args.action, active=args.active, window_seconds=args.window
        )
        state = "on" if rule.active else "off"
        print(
            f"rule {rule.name}: {rule.metric} over {_window(rule.window_seconds)} > {rule.threshold} "
            f"-> {rule.action} ({state})"
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_block(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        entry = await core.risk.block(args.kind, args.value, reason=args.reason, actor=cli_actor())
        print(f"blocked {entry.kind} {entry.value}: {entry.reason}")
        return 0

    return asyncio.run(with_core(run))


def cmd_unblock(args: argparse.Namespace) -> int:
    from quanyi.core.errors import NotFound

    async def run(core: Any) -> int:
        if not await core.risk.unblock(args.kind, args.value):
            raise NotFound(f"{args.kind} {args.value} is not blocked")
        print(f"unblocked {args.kind} {args.value}")
        return 0

    return asyncio.run(with_core(run))


def cmd_blocks(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        entries = await core.risk.blocks()
        print_table(
            ["kind", "value", "reason", "by", "since"],
            [[e.kind, e.value, e.reason, e.created_by, f"{e.created_at:%Y-%m-%d %H:%M}"] for e in entries],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_decisions(args: argparse.Namespace) -> int:
    from quanyi.core.errors import InvalidInput

    async def run(core: Any) -> int:
        if not 1 <= args.limit <= 1000:
            raise InvalidInput("--limit must be between 1 and 1000")
        rows = await core.risk.decisions(status=args.status, limit=args.limit)
        print_table(
            ["id", "when", "action", "status", "user", "ip", "device", "channel", "sku", "qty", "amount", "reason"],
            [
                [
                    d.id,
                    f"{d.created_at:%Y-%m-%d %H:%M}",
                    d.action,
                    d.status,
                    d.user_id if d.user_id is not None else "-",
                    d.client_ip or "-",
                    d.device_id or "-",
                    d.channel,
                    d.sku,
                    d.quantity,
                    format_minor(d.amount, d.currency),
                    d.reason,
                ]
                for d in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_approve(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        decision = await core.risk.approve(args.id, actor=cli_actor())
        print(f"approved decision {decision.id}: user {decision.user_id} may order {decision.sku} once")
        return 0

    return asyncio.run(with_core(run))


def cmd_reject(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        decision = await core.risk.reject(args.id, actor=cli_actor(), reason=args.reason)
        print(f"rejected decision {decision.id}: {decision.reason}")
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    from quanyi.core.risk.views import ACTIONS, BLOCK_KINDS, METRICS, STATUSES

    risk = sub.add_parser(
        "risk",
        help="risk control: rules screened on every order, the blocklist, decisions to review",
        description="Every order is screened before stock is reserved. A rule trips when its metric (counting "
        "the order itself) exceeds the threshold (account_age: falls below it); the strictest action wins: "
        "block > hold > challenge.",
    ).add_subparsers(dest="risk_command", required=True)
    risk.add_parser("rules", help="list the rules").set_defaults(fn=cmd_rules)
    rule = risk.add_parser("rule", help="add or change a rule").add_subparsers(dest="rule_command", required=True)
    add = rule.add_parser("add", help="add a rule")
    add.add_argument("name")
    add.add_argument("--metric", required=True, choices=METRICS)
    add.add_argument("--threshold", required=True, type=int)
    add.add_argument("--action", required=True, choices=ACTIONS)
    add.add_argument("--window", type=int, help="seconds, for the *_per_* counters (default: all time)")
    add.add_argument("--channels", nargs="+", help="only orders on these channels (default: all)")
    add.add_argument("--skus", nargs="+", help="only orders of these products (default: all)")
    add.add_argument(
        "--languages", nargs="+", help="only buyers whose Telegram language is one of these, e.g. en ru (default: all)"
    )
    add.set_defaults(fn=cmd_rule_add)
    change = rule.add_parser("set", help="change a rule")
    change.add_argument("name")
    change.add_argument("--threshold", type=int)
    change.add_argument("--action", choices=ACTIONS)
    change.add_argument("--window", type=int, help="seconds")
    onoff = change.add_mutually_exclusive_group()
    onoff.add_argument("--on", dest="active", action="store_const", const=True)
    onoff.add_argument("--off", dest="active", action="store_const", const=False)
    change.set_defaults(fn=cmd_rule_set, active=None)
    blk = risk.add_parser("block", help="block a user, IP or device from ordering")
    blk.add_argument("kind", choices=BLOCK_KINDS)
    blk.add_argument("value")
    blk.add_argument("--reason", required=True)
    blk.set_defaults(fn=cmd_block)
    unblk = risk.add_parser("unblock", help="lift a block")
    unblk.add_argument("kind", choices=BLOCK_KINDS)
    unblk.add_argument("value")
    unblk.set_defaults(fn=cmd_unblock)
    risk.add_parser("blocks", help="list the blocklist").set_defaults(fn=cmd_blocks)
    dec = risk.add_parser("decisions", help="recent decisions other than allow")
    dec.add_argument("--status", choices=STATUSES)
    dec.add_argument("--limit", type=int, default=50)
    dec.set_defaults(fn=cmd_decisions)
    approve = risk.add_parser("approve", help="let a held order through (the buyer's next order, once)")
    approve.add_argument("id", type=int)
    approve.set_defaults(fn=cmd_approve)
    reject = risk.add_parser("reject", help="refuse a held order or an open challenge")
    reject.add_argument("id", type=int)
    reject.add_argument("--reason", required=True)
    reject.set_defaults(fn=cmd_reject)
