"""Reconciliation (对账) in the console: a provider's statement uploaded as a stream to a temporary
file, then the same parser and matching as ``quanyi reconcile`` and the chat's /reconcile; the
mismatches as a list and as a CSV file."""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from quart import request

from quanyi.core.books.views import MAX_STATEMENT_BYTES, Report, Section, mismatches_csv
from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.money_words import say
from quanyi.webhooks.console.shell import core, guard, page, reason, text


@blueprint.get("/books/reconcile")
@guard(Area.BOOKS)
async def reconcile() -> Any:
    return await page(
        "console/reconcile.html",
        providers=core().payments.names(),
        most_mb=MAX_STATEMENT_BYTES // 1_000_000,
    )


async def _spool() -> Path | None:
    """The request body streamed to a temporary file; None when it is larger than a statement may be."""
    handle, name = tempfile.mkstemp(prefix="quanyi-statement-", suffix=".csv")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in request.body:
                size += len(chunk)
                if size > MAX_STATEMENT_BYTES:
                    await asyncio.to_thread(path.unlink, missing_ok=True)
                    return None
                await asyncio.to_thread(out.write, chunk)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return path


@blueprint.post("/upload/statement")
@guard(Area.BOOKS, write=True)
async def reconcile_upload() -> Any:
    provider = request.args.get("provider", "").strip().lower()
    margin_text = request.args.get("margin", "5").strip() or "5"
    if not provider or not margin_text.isdecimal() or int(margin_text) > 24 * 60:
        return await _answer(error=text("console_money.reconcile_usage"), status=400)
    path = await _spool()
    if path is None:
        return await _answer(error=text("console_money.file_too_big", mb=MAX_STATEMENT_BYTES // 1_000_000), status=413)
    try:
        data = await asyncio.to_thread(path.read_bytes)
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    try:
        report = await core().books.reconcile(data, provider, margin=timedelta(minutes=int(margin_text)))
    except QuanyiError as exc:
        return await _answer(error=reason(exc), status=400)
    return await _answer(report=report)


async def _answer(*, report: Report | None = None, error: str = "", status: int = 200) -> Any:
    csv_link = ""
    if report is not None and not report.ok:
        csv_link = "data:text/csv;charset=utf-8;base64," + base64.b64encode(mismatches_csv(report)).decode()
    return await page(
        "console/reconcile_result.html",
        status=status,
        report=report,
        error=error,
        sections=list(Section),
        csv_link=csv_link,
        filename=f"reconcile-{report.provider}-{report.start:%Y%m%d}.csv" if report is not None else "",
        say=say,
    )
