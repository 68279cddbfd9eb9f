"""Operator chat: import or void card keys by sending a stock file with the caption ``/import SKU``
or ``/void SKU``.

The file goes to the same core use cases as ``quanyi stock import`` / ``void``: read whole or
refused whole, with the same report. One message says how far the run is, edited as it goes (at
most every ``PROGRESS_EVERY`` seconds), and becomes the report at the end. Only QUANYI_ADMIN_IDS
reach these handlers; anyone else's file gets the shop's ordinary reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import Document, Message

from quanyi.bot.filters import IsAdmin
from quanyi.bot.render import reason_in
from quanyi.core.errors import QuanyiError, StockFileError
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.core.stock.views import ImportSummary, RejectedLine, VoidSummary
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".txt")
TELEGRAM_DOWNLOAD_LIMIT = 20 * 2**20  # the Bot API's getFile serves files up to 20 MB
PROGRESS_EVERY = 1.5  # seconds between two edits of the progress message
SHOWN_REJECTED = 10  # rejected lines named in the report
SHOWN_ORDERS = 30  # orders named in a void report that found sold codes


def build_stock_files_router() -> Router:
    router = Router(name="stock_files")
    router.message.filter(IsAdmin(Area.STOCK, write=True))
    router.message.register(stock_file, Command("import", "void"), F.document)
    router.message.register(usage, Command("import", "void"))
    # A file with no command in its caption: say how to send one (other commands have their routers).
    router.message.register(usage, F.document, ~F.caption.startswith("/"))
    return router


async def usage(message: Message, lang: str) -> None:
    await message.answer(t(lang, "phoneops.file_usage"))


async def stock_file(message: Message, command: CommandObject, core: Core, lang: str, bot: Bot) -> None:
    document = message.document
    args = (command.args or "").split()
    if document is None or len(args) != 1:
        await message.answer(t(lang, "phoneops.file_usage"))
        return
    sku, act = args[0], command.command.lower()
    if not (document.file_name or "").lower().endswith(SUFFIXES):
        await message.answer(t(lang, "phoneops.file_not_text"))
        return
    # Telegram reports the size: a large file is refused before it is fetched.
    limit = min(TELEGRAM_DOWNLOAD_LIMIT, core.settings.max_stock_file_mb * 2**20)
    if document.file_size is None or document.file_size > limit:
        await message.answer(t(lang, "phoneops.file_too_big", mb=f"{limit / 2**20:g}"))
        return
    try:
        buffer = await bot.download(document)
    except TelegramAPIError:
        log.warning("could not download a stock file", exc_info=True)
        await message.answer(t(lang, "phoneops.file_download_failed"))
        return
    data = buffer.read() if buffer is not None else b""
    shown = await message.answer(t(lang, f"phoneops.{act}_checking", sku=sku))
    progress = Progress(shown, lang, act, sku, _line_count(data))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quanyi-stock-") as folder:
        path = Path(folder) / _file_name(document)
        path.write_bytes(data)
        try:
            if act == "import":
                report = _import_report(lang, await core.stock.import_file(sku, path, progress=progress), started)
            else:
                report = _void_report(lang, await core.stock.void_file(sku, path, progress=progress))
        except QuanyiError as exc:
            report = _refusal(lang, act, sku, exc)
    await progress.settle()
    await _show(shown, report, fallback=message.answer)


class Progress:
    """Hears each line number core reached and edits the progress message now and then: never two
    edits at once, never more often than ``PROGRESS_EVERY`` seconds."""

    def __init__(self, message: Message, lang: str, act: str, sku: str, total: int) -> None:
        self.message, self.lang, self.act, self.sku, self.total = message, lang, act, sku, max(total, 1)
        self.last = time.monotonic()
        self.task: asyncio.Task[None] | None = None

    def __call__(self, line: int) -> None:
        now = time.monotonic()
        if (self.task is not None and not self.task.done()) or now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        percent = min(100, line * 100 // self.total)
        text = t(self.lang, f"phoneops.{self.act}_progress", sku=self.sku, line=f"{line:,}", percent=percent)
        self.task = asyncio.create_task(_show(self.message, text))

    async def settle(self) -> None:
        """Let the last progress edit land before the report replaces it."""
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task


async def _show(message: Message, text: str, *, fallback: Callable[[str], Awaitable[object]] | None = None) -> None:
    try:
        await message.edit_text(text)
    except TelegramAPIError:
        log.debug("could not edit a progress message", exc_info=True)
        if fallback is not None:  # the report is never lost: a new message instead
            await fallback(text)


def _import_report(lang: str, report: ImportSummary, started: float) -> str:
    lines = [
        t(
            lang,
            "phoneops.imported",
            sku=report.sku,
            imported=report.imported,
            duplicates=report.duplicates,
            rejected=report.rejected,
            seconds=f"{time.monotonic() - started:.1f}",
        )
    ]
    for rejected in report.rejected_examples[:SHOWN_REJECTED]:
        lines.append(t(lang, "phoneops.rejected_line", line=rejected.line, reason=reason_text(lang, rejected)))
    if report.rejected > SHOWN_REJECTED:
        lines.append(t(lang, "phoneops.rejected_more", more=report.rejected - SHOWN_REJECTED))
    return "\n".join(lines)


def _void_report(lang: str, report: VoidSummary) -> str:
    lines = [
        t(
            lang,
            "phoneops.voided",
            sku=report.sku,
            voided=report.voided,
            already=report.already_void,
            missing=report.not_found,
            sold=len(report.sold_orders),
        )
    ]
    if report.sold_orders:
        orders = sorted(set(report.sold_orders))
        named = ", ".join(orders[:SHOWN_ORDERS]) + (", …" if len(orders) > SHOWN_ORDERS else "")
        lines.append(t(lang, "phoneops.void_sold_orders", orders=named))
    return "\n".join(lines)


def _refusal(lang: str, act: str, sku: str, exc: QuanyiError) -> str:
    """Nothing was written: say why in the operator's language (core names each reason's text)."""
    reason = reason_in(lang, exc)
    if isinstance(exc, StockFileError) and exc.line:
        reason = raw_t(lang, "phoneops.at_line", line=exc.line, reason=reason)
    return t(lang, f"phoneops.{act}_refused", sku=sku, reason=reason)


def reason_text(lang: str, rejected: RejectedLine) -> str:
    """Why core left a line out, in ``lang`` (as core wrote it when it names no text)."""
    if rejected.key:
        return raw_t(lang, rejected.key, limit=rejected.limit)
    return rejected.reason


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def _file_name(document: Document) -> str:
    """The operator's file name, made safe for a path (the import records it as its source)."""
    name = Path(document.file_name or "stock.txt").name
    stem, _, suffix = name.rpartition(".")
    return re.sub(r"[^\w.-]", "_", stem)[:100] + "." + suffix.lower()
