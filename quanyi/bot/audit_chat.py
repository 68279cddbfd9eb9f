"""Operator chat: ``/audit`` reads the trail; a middleware records what operators and distributors
do in chat (commands and button presses only, never free text); the broken-chain alert and the
chain's anchors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import BaseMiddleware, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, TelegramObject
from sqlalchemy import select

from quanyi.bot.admin_filter import IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.core import audit, audit_chain
from quanyi.core.models import AuditRecord, Distributor
from quanyi.core.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import t

log = logging.getLogger(__name__)
SHOWN = 20


def build_audit_router() -> Router:
    router = Router(name="audit")
    router.message.filter(IsAdmin())

    @router.message(Command("audit"))
    async def show_trail(message: Message, command: CommandObject, core: Core, lang: str) -> None:
        words = (command.args or "").split()
        try:
            filters, label = parse_filter(words)
        except ValueError:
            await message.answer(t(lang, "audit.bad_filter", text=" ".join(words)) + "\n\n" + t(lang, "audit.usage"))
            return
        async with core.db.read() as session:
            rows = await audit.trail(session, tz=core.settings.timezone, limit=SHOWN, **filters)
        await message.answer(render_trail(lang, rows, label or t(lang, "audit.all"), core.settings.timezone))

    return router


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


def render_trail(lang: str, rows: list[AuditRecord], label: str, tz: str) -> str:
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


class AuditMiddleware(BaseMiddleware):
    """Operators' and distributors' chat: what their handlers change in audited rows is recorded
    with old and new values (``audit.acting``), and each command (the command word only: its
    arguments may hold a code) and button press is recorded after the handler ran."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        core = data.get("core")
        user = getattr(event, "from_user", None)
        if not isinstance(core, Core) or user is None or not isinstance(event, Message | CallbackQuery):
            return await handler(event, data)
        actor = await self._actor(core, user.id)
        if actor is None:
            return await handler(event, data)
        with audit.acting(actor, "chat"):
            result = await handler(event, data)
        try:
            await self._record(core, event, actor)
        except Exception:  # an audit failure is logged loudly, never turned into a failed button
            log.exception("could not record a chat action on the audit trail")
        return result

    async def _record(self, core: Core, event: Message | CallbackQuery, actor: str) -> None:
        if isinstance(event, Message):
            text = event.text or event.caption or ""
            if not text.startswith("/"):
                return
            action = "chat " + text.split(maxsplit=1)[0].split("@", 1)[0][:40]
            object_type, object_id = "command", action[5:]
        else:
            prefix = (event.data or "").partition(":")[0]
            action = f"chat button {prefix[:32]}"
            object_type, object_id = "button", (event.data or "")[:64]
        await audit.append(core.db, audit.Entry(actor, "chat", action, object_type, object_id))

    async def _actor(self, core: Core, user_id: int) -> str | None:
        if user_id in core.settings.admin_id_list:
            return f"operator:{user_id}"
        async with core.db.read() as session:
            distributor = await session.scalar(select(Distributor.id).where(Distributor.user_id == user_id))
        return f"distributor:{user_id}" if distributor is not None else None


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_audit_broken": audit_broken,
    audit_chain.ANCHOR_KIND: audit_anchor,
}
