"""Operator chat: ``/audit`` reads the trail; the broken-chain alert and the chain's anchors.
What operators and distributors do in chat is recorded by ``bot.middlewares.AuditMiddleware``."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from quanyi.bot.filters import IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.core.platform.audit_views import ANCHOR_KIND, TrailRecord
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import t

log = logging.getLogger(__name__)
SHOWN = 20


def build_audit_router() -> Router:
    router = Router(name="audit")
    router.message.filter(IsAdmin())
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
    await message.answer(render_trail(lang, rows, label or t(lang, "audit.all"), core.settings.timezone))


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
                actor=row.actor,
                front=row.front,
                action=row.action,
                object=f"{row.object_type}:{row.object_id}",
            )
        )
        if row.old or row.new:
            parts.append(t(lang, "audit.change", old=_clip(row.old), new=_clip(row.new)))
    return "\n".join(parts)


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
