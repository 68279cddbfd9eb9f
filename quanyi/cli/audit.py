"""``quanyi audit verify``, ``anchor`` and ``list``: the audit trail."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from quanyi.cli._common import print_table, with_core
from quanyi.core.errors import QuanyiError


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser(
        "verify",
        help="check the hash chain and its anchors; exit 1 naming the first edited, deleted or reordered record",
        description="Checks every record's keyed hash and the anchors in <data dir>/audit-anchors.jsonl: a chain "
        "rewritten before an anchor, or cut back below one, fails.",
    )
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="an anchor from the operators' chat message (repeatable), e.g. when the data dir is lost or doubted",
    )
    verify.set_defaults(fn=cmd_audit_verify)
    audit.add_parser(
        "anchor",
        help="pin the chain's head now: a line in <data dir>/audit-anchors.jsonl and a message to each operator",
    ).set_defaults(fn=cmd_audit_anchor)
    lst = audit.add_parser("list", help="the latest records, newest first")
    lst.add_argument("--actor", help="operator:ID, distributor:ID, buyer:ID, cli:USER, system, or a bare user id")
    lst.add_argument("--object", metavar="TYPE:ID", help="e.g. order:Q2024..., refund:12")
    lst.add_argument("--day", metavar="YYYY-MM-DD", help="one day in QUANYI_TIMEZONE")
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(fn=cmd_audit_list)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from quanyi.core.platform.audit_views import parse_anchor

    given = [parse_anchor(text) for text in args.anchor]

    async def run(core: Any) -> int:
        report = await core.platform.verify_audit(given)
        if not report.ok:
            where = f" at record {report.first_bad_seq}" if report.first_bad_seq is not None else ""
            print(f"audit chain broken{where}: {report.problem}", file=sys.stderr)
            return 1
        summary = f"{report.checked} records, chain intact"
        if report.anchors:
            summary += f"; {report.anchors} anchor{'s' if report.anchors != 1 else ''} held"
        if report.checked and report.keyed_from is None:
            summary += " (not keyed: every record was written before the audit key)"
        print(summary)
        return 0

    return asyncio.run(with_core(run))


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        pinned = await core.platform.anchor_audit()
        if pinned is None:
            print("the audit chain is empty: nothing to anchor")
            return 0
        print(f"anchored record {pinned.seq}: {pinned.hash}")
        print(f"written to {pinned.path}; sent to {pinned.operators} operator(s)")
        return 0

    return asyncio.run(with_core(run))


def parse_object(text: str) -> tuple[str, str]:
    kind, sep, ident = text.partition(":")
    if not sep or not kind.strip() or not ident.strip():
        raise QuanyiError(f"{text!r}: give an object as TYPE:ID, e.g. order:Q123")
    return kind.strip(), ident.strip()


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise QuanyiError(f"{text!r}: give a day as YYYY-MM-DD") from None


def cmd_audit_list(args: argparse.Namespace) -> int:
    object_type, object_id = parse_object(args.object) if args.object else (None, None)
    day = parse_day(args.day) if args.day else None
    if not 1 <= args.limit <= 500:
        raise QuanyiError("--limit must be between 1 and 500")

    async def run(core: Any) -> int:
        rows = await core.platform.audit_trail(
            actor=args.actor, object_type=object_type, object_id=object_id, day=day, limit=args.limit
        )
        if not rows:
            print("no records")
            return 0
        # Shown in the operator's time zone, the one ``--day`` is read in.
        zone = ZoneInfo(core.settings.timezone)
        print_table(
            ["seq", "at", "actor", "front", "action", "object", "old", "new"],
            [
                [
                    str(r.seq),
                    f"{r.at.astimezone(zone):%Y-%m-%d %H:%M:%S}",
                    r.actor,
                    r.front,
                    r.action,
                    f"{r.object_type}:{r.object_id}",
                    r.old or "",
                    r.new or "",
                ]
                for r in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))
