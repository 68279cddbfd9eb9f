"""Settlement statements in chat: the operators' daily statement and each distributor's own,
as a message plus a CSV document (outbox kinds ``settlement_statement``, ``distributor_statement``)."""

from __future__ import annotations

from quanyi.bot.outbox_sender import Document, Part, Renderer
from quanyi.bot.render import money
from quanyi.core.books.views import Figures, statement_table
from quanyi.core.platform import export
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import t

LINES = 30  # per section in the message; the file has them all


def statement_csv(day: str, rows: list[Figures], names: dict[str, str]) -> bytes:
    """Amounts as plain decimal numbers in the row's currency (``15.00``), one row per figure line."""
    # A BOM so that spreadsheet programs read the Chinese names as UTF-8.
    return export.csv_bytes(statement_table(day, rows, names), line_end="\n", bom=True)


def _section(lang: str, title_key: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = [t(lang, f"settle.{title_key}"), *lines[:LINES]]
    if len(lines) > LINES:
        shown.append(t(lang, "settle.more", more=len(lines) - LINES))
    return ["", *shown]


async def settlement_statement(core: Core, message: Outgoing) -> list[Part]:
    lang, day = message.language, str(message.payload["day"])
    found = await core.books.statement(day)
    rows, names = found.rows, found.names
    text = [t(lang, "settle.title", day=day)]
    totals = [r for r in rows if r.scope == "total"]
    if not totals:
        text.append(t(lang, "settle.empty"))
    for r in totals:
        text.append(
            t(
                lang,
                "settle.total",
                currency=r.currency,
                orders=r.orders,
                units=r.units,
                gross=money(r.gross, r.currency),
                discounts=money(r.discounts, r.currency),
                refunds=money(r.refunds, r.currency),
                net=money(r.net, r.currency),
                commissions=money(r.commissions, r.currency),
                available=money(r.commissions_available, r.currency),
            )
        )
    channel_lines = [
        t(lang, "settle.channel_line", name=r.key, orders=r.orders, net=money(r.net, r.currency))
        for r in rows
        if r.scope == "channel"
    ]
    distributor_lines = [
        t(
            lang,
            "settle.distributor_line",
            name=names.get(f"distributor:{r.key}", r.key),
            orders=r.orders,
            net=money(r.net, r.currency),
            commissions=money(r.commissions, r.currency),
            available=money(r.commissions_available, r.currency),
        )
        for r in rows
        if r.scope == "distributor"
    ]
    text += _section(lang, "channels", channel_lines) + _section(lang, "distributors", distributor_lines)
    parts: list[Part] = ["\n".join(text)]
    if rows:
        parts.append(
            Document(
                f"settlement-{day}.csv", statement_csv(day, rows, names), caption=t(lang, "settle.caption", day=day)
            )
        )
    return parts


async def distributor_statement(core: Core, message: Outgoing) -> list[Part]:
    lang, day = message.language, str(message.payload["day"])
    distributor_id = int(str(message.payload["distributor_id"]))
    found = await core.books.statement(day, distributor_id)
    rows, names = found.rows, found.names
    text = [t(lang, "settle.dist_title", day=day)]
    if not rows:
        text.append(t(lang, "settle.empty"))
    for r in rows:
        text.append(
            t(
                lang,
                "settle.dist_figures",
                currency=r.currency,
                orders=r.orders,
                units=r.units,
                gross=money(r.gross, r.currency),
                refunds=money(r.refunds, r.currency),
                net=money(r.net, r.currency),
                commissions=money(r.commissions, r.currency),
                available=money(r.commissions_available, r.currency),
            )
        )
    parts: list[Part] = ["\n\n".join(text)]
    if rows:
        parts.append(
            Document(
                f"statement-{day}.csv", statement_csv(day, rows, names), caption=t(lang, "settle.caption", day=day)
            )
        )
    return parts


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "settlement_statement": settlement_statement,
    "distributor_statement": distributor_statement,
}
