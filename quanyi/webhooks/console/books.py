"""Finance (财务): the landing page linking to the rest, the ledger (balances, the check, an
account's postings), settlements (settle a closed day, a day's statement as a page, CSV or
XLSX) — the same service methods as ``quanyi ledger`` and ``quanyi settle``. Reconciliation is
in ``books_reconcile``, withdrawals in ``books_withdrawals``."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.books.views import STATEMENT_COLUMNS, Statement, statement_table
from quanyi.core.errors import QuanyiError
from quanyi.core.platform import export
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.money_words import BadForm, day_of, download, say, status_of
from quanyi.webhooks.console.shell import core, guard, message, page, reason, text


@blueprint.get("/books")
@guard(Area.BOOKS)
async def books() -> Any:
    services = core().books
    pending = await services.list_withdrawals(status="requested", limit=200)
    to_pay = [w for w in await services.list_withdrawals(status="approved", limit=200) if w.to_pay]
    days = await services.settled_days(limit=7)
    return await page(
        "console/books.html",
        check=await services.check_ledger(),
        pending=len(pending),
        to_pay=len(to_pay),
        days=days,
        platform=await services.balances("platform:"),
        say=say,
    )


# --- the ledger ---------------------------------------------------------------------------------


@blueprint.get("/books/ledger")
@guard(Area.BOOKS)
async def ledger() -> Any:
    prefix = request.args.get("prefix", "").strip()[:96]
    account = request.args.get("account", "").strip()[:96]
    everything = request.args.get("all") == "1"
    return await page(
        "console/ledger.html",
        prefix=prefix,
        account=account,
        everything=everything,
        balances=await core().books.balances(prefix, include_zero=everything),
        postings=await core().books.account_postings(account, limit=200) if account else [],
        check=await core().books.check_ledger(),
    )


# --- settlements and statements -------------------------------------------------------------------


@blueprint.get("/books/settlements")
@guard(Area.BOOKS)
async def settlements() -> Any:
    return await _settlements_page()


async def _settlements_page(error: str = "", status: int = 200, settled: Any = None) -> Any:
    return await page(
        "console/settlement.html",
        status=status,
        days=await core().books.settled_days(limit=90),
        error=error,
        settled=settled,
    )


@blueprint.post("/books/settle")
@guard(Area.BOOKS, write=True)
async def settle() -> Any:
    form = await request.form
    try:
        day = day_of(form.get("day"), text("console_money.day"))
        settled = await core().books.settle(day)
    except BadForm as exc:
        return await _settlements_page(str(exc), 400)
    except QuanyiError as exc:
        return await _settlements_page(reason(exc), status_of(exc))
    return await _settlements_page(settled=settled)


@blueprint.get("/books/settlements/<day>")
@guard(Area.BOOKS)
async def statement(day: str) -> Any:
    try:
        parsed = day_of(day, text("console_money.day"))
        who = request.args.get("distributor", "").strip()
        distributor = int(who) if who else None
    except (BadForm, ValueError):
        body = text("console_money.bad_day", field=text("console_money.day"), value=day[:20])
        return await message(text("console_money.bad_request"), body, status=400, bad=True)
    assert parsed is not None
    found = await core().books.statement(parsed.isoformat(), distributor)
    fmt = request.args.get("format", "")
    if fmt in ("csv", "xlsx"):
        suffix = f"-distributor-{distributor}" if distributor is not None else ""
        name = f"statement-{found.day}{suffix}.{fmt}"
        if fmt == "csv":
            return download(export.csv_bytes(statement_rows(found), line_end="\n", bom=True), name, "csv")
        data = export.xlsx_bytes(f"statement {found.day}", STATEMENT_COLUMNS, statement_rows(found)[1:])
        return download(data, name, "xlsx")
    return await page(
        "console/settlement_day.html",
        found=found,
        distributor=distributor,
        totals=[r for r in found.rows if r.scope == "total"],
        channels=[r for r in found.rows if r.scope == "channel"],
        distributors=[r for r in found.rows if r.scope == "distributor"],
        name_of=lambda r: found.names.get(f"{r.scope}:{r.key}", r.key),
    )


def statement_rows(found: Statement) -> list[list[export.Cell]]:
    """A statement as a table (header first): amounts as decimal numbers, names as text."""
    return statement_table(found.day, found.rows, found.names)


@blueprint.get("/books/settlements/go")
@guard(Area.BOOKS)
async def statement_go() -> Any:
    """The day picker's answer: that day's statement page."""
    day = request.args.get("day", "").strip()
    return redirect(url_for("console.statement", day=day or "-"), 303)
