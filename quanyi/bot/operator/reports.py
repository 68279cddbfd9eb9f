"""Operator chat: ``/report`` — today's and the last 30 days' totals, top products, a chart of
net sales per day, and every report as a CSV or XLSX file (``/report csv product`` or a button)."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import IsAdmin
from quanyi.bot.operator.ops import OpsCb
from quanyi.bot.render import money
from quanyi.bot.words import word
from quanyi.core.books.views import VIEWS, ChartLabels, SalesRow, net_by_day_png, to_csv, to_xlsx
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import raw_t, t

DAYS = 30
TOP = 5
FORMATS = ("csv", "xlsx")


class ReportCb(CallbackData, prefix="rp"):
    fmt: str  # show | csv | xlsx
    view: str  # one of VIEWS ("day" with show)


def build_reports_router() -> Router:
    """The operators' report handlers, in the order aiogram tries them."""
    router = Router(name="reports")
    router.message.filter(IsAdmin(Area.REPORTS))
    router.callback_query.filter(IsAdmin(Area.REPORTS))
    router.message.register(report_command, Command("report"))
    router.callback_query.register(report_button, ReportCb.filter())
    return router


async def report_command(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").lower().split()
    if not words:
        await _overview(message, core, lang)
    elif len(words) in (1, 2) and words[0] in FORMATS and (words[1:] or ["day"])[0] in VIEWS:
        await _export(message, core, lang, words[0], (words[1:] or ["day"])[0])
    else:
        await message.answer(t(lang, "reports.usage"))


async def report_button(query: CallbackQuery, callback_data: ReportCb, core: Core, lang: str) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if callback_data.fmt in FORMATS and callback_data.view in VIEWS:
        await _export(query.message, core, lang, callback_data.fmt, callback_data.view)
    else:
        await _overview(query.message, core, lang)


def _totals(lang: str, rows: list[SalesRow]) -> list[str]:
    shown = [r for r in rows if r.orders or r.refunds]
    if not shown:
        return [t(lang, "reports.no_sales")]
    return [
        t(
            lang,
            "reports.totals",
            currency=r.currency,
            orders=r.orders,
            units=r.units,
            gross=money(r.gross, r.currency),
            discounts=money(r.discounts, r.currency),
            refunds=money(r.refunds, r.currency),
            net=money(r.net, r.currency),
        )
        for r in shown
    ]


async def _overview(message: Message, core: Core, lang: str) -> None:
    overview = await core.books.sales_overview(days=DAYS, top=TOP)
    today, recent, top = overview.today, overview.recent, overview.top
    lines = [t(lang, "reports.title"), "", t(lang, "reports.today", day=today.end.isoformat())]
    lines += _totals(lang, overview.today_rows)
    lines += ["", t(lang, "reports.last_days", days=DAYS, start=recent.start.isoformat(), end=recent.end.isoformat())]
    lines += _totals(lang, overview.recent_rows)
    if top:
        lines += ["", t(lang, "reports.top_title", n=len(top), days=DAYS)]
        lines += [
            t(
                lang,
                "reports.top_line",
                rank=n,
                name=r.label,
                sku=r.key,
                units=r.units,
                net=money(r.net, r.currency),
            )
            for n, r in enumerate(top, 1)
        ]
    lines += ["", t(lang, "reports.exports", days=DAYS)]
    await message.answer("\n".join(lines), reply_markup=_export_markup(lang))
    # Drawing takes a few hundred milliseconds: off the event loop.
    png = await asyncio.to_thread(net_by_day_png, overview.by_day, chart_labels(lang))
    await message.answer_photo(
        BufferedInputFile(png, filename=f"sales-{recent.end}.png"),
        caption=raw_t(lang, "reports.chart_caption", days=DAYS),
        parse_mode=None,
    )


def _export_markup(lang: str) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    for view in VIEWS:
        keyboard.row(
            *(
                InlineKeyboardButton(
                    text=raw_t(lang, "reports.btn_export", format=fmt.upper(), view=word(lang, "report_view", view)),
                    callback_data=ReportCb(fmt=fmt, view=view).pack(),
                )
                for fmt in FORMATS
            )
        )
    keyboard.row(InlineKeyboardButton(text=raw_t(lang, "ops.btn_back"), callback_data=OpsCb(view="menu").pack()))
    return keyboard.as_markup()


def chart_labels(lang: str) -> ChartLabels:
    """The chart's title and axes in the operator's language."""
    return ChartLabels(**{name: raw_t(lang, f"words.chart.{name}") for name in ChartLabels.__dataclass_fields__})


async def _export(message: Message, core: Core, lang: str, fmt: str, view: str) -> None:
    found = await core.books.sales_report(view, days=DAYS)
    table, span = found.table, found.period
    data = to_csv(table) if fmt == "csv" else await asyncio.to_thread(to_xlsx, table)
    name = f"report-{view}-{span.start}-{span.end}.{fmt}" if view != "stock" else f"stock-{span.end}.{fmt}"
    caption = raw_t(lang, f"words.report_title.{view}", start=span.start, end=span.end)
    await message.answer_document(BufferedInputFile(data, filename=name), caption=caption, parse_mode=None)
