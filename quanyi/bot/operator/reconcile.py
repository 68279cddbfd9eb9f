"""Operator chat: reconcile a payment provider's statement sent as a document with the caption
``/reconcile PROVIDER``. Only QUANYI_ADMIN_IDS reach these handlers."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message

from quanyi.bot.filters import IsAdmin
from quanyi.bot.render import reason_in
from quanyi.bot.words import word
from quanyi.core.books.views import MAX_STATEMENT_BYTES, Mismatch, Report, Section, mismatches_csv
from quanyi.core.errors import QuanyiError
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import t

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".txt")
SHOWN = 5  # mismatches listed per section in the message; all of them are in the CSV


def build_reconcile_router() -> Router:
    router = Router(name="reconcile")
    router.message.filter(IsAdmin(Area.BOOKS, write=True))
    router.message.register(reconcile_document, Command("reconcile"), F.document)
    router.message.register(reconcile_usage, Command("reconcile"))
    return router


async def reconcile_document(message: Message, command: CommandObject, core: Core, lang: str, bot: Bot) -> None:
    document = message.document
    provider = (command.args or "").strip().lower()
    if document is None or not provider or len(provider.split()) != 1:
        await message.answer(_usage(core, lang))
        return
    if not (document.file_name or "").lower().endswith(SUFFIXES):
        await message.answer(t(lang, "reconcile.not_csv"))
        return
    # Telegram reports the size: a large file is refused before it is fetched.
    if document.file_size is None or document.file_size > MAX_STATEMENT_BYTES:
        await message.answer(t(lang, "reconcile.too_big", mb=MAX_STATEMENT_BYTES // 1_000_000))
        return
    try:
        buffer = await bot.download(document)
    except TelegramAPIError:
        log.warning("could not download a statement", exc_info=True)
        await message.answer(t(lang, "reconcile.download_failed"))
        return
    data = buffer.read() if buffer is not None else b""
    try:
        report = await core.books.reconcile(data, provider)
    except QuanyiError as exc:
        # The core's reasons (with the line of a malformed file) are written for operators.
        await message.answer(t(lang, "reconcile.refused", reason=reason_in(lang, exc)))
        return
    await message.answer(summary(report, lang, core.settings.timezone))
    if not report.ok:
        start, end = _span(report, core.settings.timezone)
        filename = f"reconcile-{report.provider}-{report.start.astimezone(ZoneInfo(core.settings.timezone)):%Y%m%d}.csv"
        await message.answer_document(
            BufferedInputFile(mismatches_csv(report), filename=filename),
            caption=t(lang, "reconcile.caption", provider=report.provider, start=start, end=end),
        )


async def reconcile_usage(message: Message, core: Core, lang: str) -> None:
    await message.answer(_usage(core, lang))


def _usage(core: Core, lang: str) -> str:
    return t(lang, "reconcile.usage", providers=", ".join(core.payments.names()) or "-")


def _local(when: datetime, tz: str) -> str:
    return f"{when.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M}"


def _span(report: Report, tz: str) -> tuple[str, str]:
    return _local(report.start, tz), _local(report.end, tz)


def summary(report: Report, lang: str, tz: str) -> str:
    start, end = _span(report, tz)
    parts = [
        t(lang, "reconcile.title", provider=report.provider),
        t(
            lang,
            "reconcile.span",
            transactions=report.transactions,
            rows=report.rows,
            start=start,
            end=end,
            matched=report.matched,
        ),
    ]
    if report.ok:
        parts.append(t(lang, "reconcile.all_match"))
        return "\n".join(parts)
    parts.append(t(lang, "reconcile.found", count=len(report.mismatches)))
    for section in Section:
        items = report.section(section)
        if not items:
            continue
        total = ", ".join(str(money) for money in report.total(section))
        title = t(lang, f"reconcile.{section.value}")
        parts.append(t(lang, "reconcile.section", title=title, count=len(items), total=total))
        parts.extend(_item(lang, item) for item in items[:SHOWN])
        if len(items) > SHOWN:
            parts.append(t(lang, "reconcile.more", count=len(items) - SHOWN))
    parts.append(t(lang, "reconcile.attached"))
    return "\n".join(parts)


def _clip(text: str, limit: int = 48) -> str:
    # Ids come from the provider's file: a very long one must not push the message over Telegram's limit.
    return (text[: limit - 1] + "…" if len(text) > limit else text) or "-"


def _item(lang: str, item: Mismatch) -> str:
    return t(
        lang,
        "reconcile.item",
        order=_clip(item.order_number),
        txn=_clip(item.provider_txn_id),
        theirs=str(item.theirs) if item.theirs else "-",
        their_status=word(lang, "reconcile_status", item.their_status) if item.their_status else "",
        ours=str(item.ours) if item.ours else "-",
        our_status=word(lang, "reconcile_status", item.our_status) if item.our_status else "",
    )
