"""Operator chat: ``/audit`` reads the trail; the broken-chain alert and the chain's anchors.
What operators and distributors do in chat is recorded by ``bot.middlewares.AuditMiddleware``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from quanyi.bot.filters import IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.bot.render import money
from quanyi.bot.words import actor_name
from quanyi.core.platform.audit_views import ANCHOR_KIND, FieldChange, TrailRecord
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)
SHOWN = 20
CHANGES_SHOWN = 6  # a created row carries every column: the first few say what it is


def build_audit_router() -> Router:
    router = Router(name="audit")
    router.message.filter(IsAdmin(Area.AUDIT))
    router.message.register(show_trail, Command("audit"))
    return router


async def show_trail(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    try:
        filters, label = parse_filter(words)
    except ValueError:
        await message.answer(t(lang, "audit.bad_filter", text=" ".join(words)) + "\n\n" + t(lang, "audit.usage"))
        return
    rows = await core.platform.audit_trail(limit=SHOWN, **filters)
    await message.answer(render_trail(lang, rows, _filter_label(lang, filters) or label, core.settings.timezone))


def _filter_label(lang: str, filters: dict[str, Any]) -> str:
    """What the trail is filtered by, in the operator's words: 用户 1001, 订单 Q123, a day."""
    if "actor" in filters:
        return raw_t(lang, "audit_words.by_user", id=filters["actor"])
    if "object_type" in filters:
        return f"{_lookup(lang, 'audit_words.object', filters['object_type'])} {filters['object_id']}"
    if "day" in filters:
        return str(filters["day"])
    return raw_t(lang, "audit.all")


def parse_filter(words: list[str]) -> tuple[dict[str, Any], str]:
    """``[]``, ``user ID``, ``object TYPE:ID``, ``day YYYY-MM-DD``; ValueError for anything else."""
    if not words:
        return {}, ""
    if len(words) != 2:
        raise ValueError(words)
    kind, value = words[0].lower(), words[1]
    if kind == "user" and value.isdigit():
        return {"actor": value}, f"user {value}"
    if kind == "object":
        object_type, sep, object_id = value.partition(":")
        if sep and object_type and object_id:
            return {"object_type": object_type, "object_id": object_id}, value
    if kind == "day":
        return {"day": date.fromisoformat(value)}, value  # ValueError on a bad day
    raise ValueError(words)


def _clip(text: str | None, limit: int = 120) -> str:
    text = text or "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_trail(lang: str, rows: list[TrailRecord], label: str, tz: str) -> str:
    parts = [t(lang, "audit.title", filter=label)]
    if not rows:
        parts.append(t(lang, "audit.none"))
    zone = ZoneInfo(tz)
    for row in rows:
        parts.append(
            t(
                lang,
                "audit.item",
                seq=row.seq,
                at=f"{row.at.astimezone(zone):%m-%d %H:%M:%S}",
                actor=actor_name(lang, row.actor),
                front=_lookup(lang, "audit_words.front", row.front),
                action=_action(lang, row),
                object=_object(lang, row),
            )
        )
        parts += change_lines(lang, row.changes)
    return "\n".join(parts)


def change_lines(lang: str, changes: Sequence[FieldChange], *, most: int = CHANGES_SHOWN) -> list[str]:
    """Each changed field as a line a person reads: 价格 ¥15.00 → ¥12.00."""
    lines = []
    for change in changes[:most]:
        field = _lookup(lang, "audit_words.field", change.field) if change.field else ""
        old, new = _value(lang, change, change.old), _value(lang, change, change.new)
        if change.old is None:
            lines.append(t(lang, "audit_words.set", field=field, new=new))
        elif change.new is None:
            lines.append(t(lang, "audit_words.unset", field=field, old=old))
        else:
            lines.append(t(lang, "audit_words.change", field=field, old=old, new=new))
    if len(changes) > most:
        lines.append(t(lang, "audit_words.more", more=len(changes) - most))
    return lines


def _value(lang: str, change: FieldChange, value: Any) -> str:
    if value is None:
        return raw_t(lang, "audit_words.empty")
    if change.money and isinstance(value, int):
        return money(value, change.currency)
    if isinstance(value, bool):
        return raw_t(lang, "audit_words.yes" if value else "audit_words.no")
    if change.field == "mode" and isinstance(value, str):
        return _lookup(lang, "ops.mode", value)
    if change.field == "parts" and isinstance(value, list):
        listed = [raw_t(lang, "audit_words.part", sku=p[0], quantity=p[1]) for p in value if len(p) == 2]
        return raw_t(lang, "audit_words.separator").join(listed) or raw_t(lang, "audit_words.empty")
    return _clip(str(value), 80)


def _lookup(lang: str, table: str, key: str) -> str:
    try:
        return raw_t(lang, f"{table}.{key}")
    except (KeyError, TypeError):  # not in the table (a dotted key may run into a text)
        return key


def _action(lang: str, row: TrailRecord) -> str:
    """``update coupon`` → 修改优惠券; ``chat /coupon_off`` → 命令 /coupon_off; a core action by its name."""
    verb, _, kind = row.action.partition(" ")
    if verb in ("create", "update", "delete") and kind:
        return raw_t(lang, f"audit_words.verb.{verb}", object=_lookup(lang, "audit_words.object", kind))
    if verb == "chat" and kind.startswith("/"):
        return raw_t(lang, "audit_words.command", command=kind)
    if verb == "chat" and kind.startswith("button"):
        return raw_t(lang, "audit_words.button")
    if row.front == "cli":  # the command as it was typed
        return raw_t(lang, "audit_words.command", command=f"quanyi {row.action}")
    words = row.action.replace(".", "_").replace(" ", "_").split("_")
    for end in range(len(words), 0, -1):  # codes.decrypt.delivery → codes_decrypt; balance top_up → balance
        try:
            return raw_t(lang, f"audit_words.action.{'_'.join(words[:end])}")
        except KeyError:
            continue
    return row.action


def _object(lang: str, row: TrailRecord) -> str:
    return f"{_lookup(lang, 'audit_words.object', row.object_type)} {row.object_id}"


async def audit_broken(core: Core, message: Outgoing) -> list[Part]:
    payload = message.payload
    return [t(message.language, "audit.broken", seq=payload.get("seq", "?"), checked=payload.get("checked", "?"))]


async def audit_anchor(core: Core, message: Outgoing) -> list[Part]:
    """The chain's head as it stood: kept in chat, out of reach of whoever holds the server."""
    payload = message.payload
    at = payload.get("at")
    when = (
        f"{datetime.fromisoformat(at).astimezone(ZoneInfo(core.settings.timezone)):%Y-%m-%d %H:%M}"
        if isinstance(at, str)
        else "?"
    )
    return [t(message.language, "audit.anchor", seq=payload.get("seq", "?"), hash=payload.get("hash", "?"), at=when)]


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_audit_broken": audit_broken,
    ANCHOR_KIND: audit_anchor,
}
