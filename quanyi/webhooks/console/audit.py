"""The audit log (审计日志) in the console: records by actor, object and day, a page at a time,
each change as readable ``old → new`` lines (as the chat's /audit says them), and the chain's
check (``core.platform.verify_audit``) naming where it breaks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quart import request

from quanyi.core.platform.audit_views import FieldChange, TrailRecord
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.money_words import BadForm, day_of
from quanyi.webhooks.console.shell import core, guard, money, page, text

PAGE = 50
CHANGES_SHOWN = 12


@blueprint.get("/audit")
@guard(Area.AUDIT)
async def audit() -> Any:
    return await _audit_page()


@blueprint.post("/audit/anchor")
@guard(Area.AUDIT, write=True)
async def audit_anchor() -> Any:
    """Pin the chain's head now, as ``quanyi audit anchor``: a line in the anchors file and a
    message to each operator."""
    return await _audit_page(pinned=await core().platform.anchor_audit(), anchored=True)


async def _audit_page(pinned: Any = None, anchored: bool = False) -> Any:
    args = request.args
    actor = args.get("actor", "").strip()[:64]
    object_type = args.get("object_type", "").strip()[:32]
    object_id = args.get("object_id", "").strip()[:64]
    before_text = args.get("before", "").strip()
    size_text = args.get("limit", "").strip()
    size = min(int(size_text), 200) if size_text.isdecimal() and int(size_text) > 0 else PAGE
    error, status = "", 200
    records: Sequence[TrailRecord] = ()
    older: int | None = None
    try:
        day = day_of(args.get("day"), text("console_money.day"))
        if before_text and not before_text.isdecimal():
            raise BadForm(text("console_money.bad_number", field="before"))
        found = await core().platform.audit_page(
            actor=actor or None,
            object_type=object_type or None,
            object_id=object_id or None,
            day=day,
            before=int(before_text) if before_text else None,
            limit=size,
        )
        records, older = found.records, found.before
    except BadForm as exc:
        error, status = str(exc), 400
    verdict = await core().platform.verify_audit() if args.get("verify") == "1" else None
    kept = {"actor": actor, "object_type": object_type, "object_id": object_id, "day": args.get("day", "")[:10]}
    if size != PAGE:
        kept["limit"] = str(size)
    return await page(
        "console/audit.html",
        status=status,
        records=records,
        older=older,
        kept=kept,
        kept_set={k: v for k, v in kept.items() if v},
        paged=bool(before_text),
        verdict=verdict,
        pinned=pinned,
        anchored=anchored,
        error=error,
        who=actor_name,
        action_name=action_name,
        object_name=object_name,
        front_name=front_name,
        change_lines=change_lines,
    )


def _lookup(table: str, key: str, *tables: str) -> str:
    """``key`` in the first of the text tables that has it; the key itself when none does."""
    for name in (table, *tables):
        try:
            return text(f"{name}.{key}")
        except (KeyError, TypeError, IndexError):
            continue
    return key


def front_name(front: str) -> str:
    return _lookup("audit_words.front", front)


def actor_name(actor: str) -> str:
    kind, _, who = actor.partition(":")
    try:
        return text(f"audit_words.actor.{kind}", id=who).strip()
    except (KeyError, TypeError):
        return actor


def object_name(row: TrailRecord) -> str:
    return f"{_lookup('audit_words.object', row.object_type, 'console_money.objects')} {row.object_id}"


def action_name(row: TrailRecord) -> str:
    """``update coupon`` → 修改优惠券; ``chat /coupon_off`` → 命令 /coupon_off; a core action by its name."""
    verb, _, kind = row.action.partition(" ")
    if verb in ("create", "update", "delete") and kind:
        return text(f"audit_words.verb.{verb}", object=_lookup("audit_words.object", kind))
    if verb == "chat" and kind.startswith("/"):
        return text("audit_words.command", command=kind)
    if verb == "chat" and kind.startswith("button"):
        return text("audit_words.button")
    if row.front == "cli":
        return text("audit_words.command", command=f"quanyi {row.action}")
    words = row.action.replace(".", "_").replace(" ", "_").split("_")
    whole_action = "_".join(words)
    if (own := _lookup("console_money.actions", whole_action)) != whole_action:
        return own  # the console's own actions (sign in, withdrawal paid)
    for end in range(len(words), 0, -1):
        try:
            return text(f"audit_words.action.{'_'.join(words[:end])}")
        except (KeyError, TypeError):
            continue
    return row.action


def change_lines(changes: Sequence[FieldChange], most: int = CHANGES_SHOWN) -> list[str]:
    """Each changed field as a line a person reads: 价格 ¥15.00 → ¥12.00."""
    lines = []
    for change in changes[:most]:
        field = _lookup("audit_words.field", change.field) if change.field else ""
        old, new = _value(change, change.old), _value(change, change.new)
        if change.old is None:
            lines.append(text("audit_words.set", field=field, new=new).strip())
        elif change.new is None:
            lines.append(text("audit_words.unset", field=field, old=old).strip())
        else:
            lines.append(text("audit_words.change", field=field, old=old, new=new).strip())
    if len(changes) > most:
        lines.append(text("audit_words.more", more=len(changes) - most).strip())
    return lines


def _value(change: FieldChange, value: Any) -> str:
    if value is None:
        return text("audit_words.empty")
    if change.money and isinstance(value, int) and not isinstance(value, bool):
        return money(value, change.currency or None)
    if isinstance(value, bool):
        return text("audit_words.yes" if value else "audit_words.no")
    if change.field in ("status", "action") and isinstance(value, str):
        return _lookup("console_money.values", value)  # requested → 待审批, hold → 审核
    if change.field == "parts" and isinstance(value, list):
        listed = [text("audit_words.part", sku=p[0], quantity=p[1]) for p in value if len(p) == 2]
        return text("audit_words.separator").join(listed) or text("audit_words.empty")
    shown = str(value)
    return shown if len(shown) <= 120 else shown[:119] + "…"
