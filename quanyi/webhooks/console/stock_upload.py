"""Stock files uploaded in the console: import card keys (``/admin/upload/stock/<sku>``) or void
listed ones (``/admin/upload/void/<sku>``).

The page's script (``form[data-upload]``) sends the file as the raw body with the CSRF token in a
header. The body goes to a file under the data folder chunk by chunk (constant memory), then the
same all-or-nothing use case as ``quanyi stock import`` / ``void`` runs on it while the answer
streams lines ``progress DONE TOTAL`` and ends with the report. A file core refuses (malformed:
nothing imported) is answered 400 with the reason before any progress line. The run finishes even
when the browser goes away, and is on the audit trail with its counts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from quart import Response, request, stream_with_context

from quanyi.core.errors import NotFound, QuanyiError, StockFileError
from quanyi.core.platform import audit
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.core.stock.views import ImportSummary, RejectedLine, VoidSummary
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import core, guard, me, page, reason, text

log = logging.getLogger(__name__)

SHOWN_REJECTED = 20  # rejected lines named in the report (core keeps at most 20 examples)
SHOWN_ORDERS = 50  # orders named in a void report that found sold codes
STALE_UPLOAD = 24 * 3600  # seconds after which an upload folder left behind is cleared
# Runs whose browser went away are kept referenced here until they finish.
_RUNNING: set[asyncio.Task[None]] = set()


class TooLarge(Exception):
    pass


@blueprint.post("/upload/stock/<sku>")
@guard(Area.STOCK, write=True)
async def upload_stock(sku: str) -> Any:
    return await _upload(sku, "import")


@blueprint.post("/upload/void/<sku>")
@guard(Area.STOCK, write=True)
async def upload_void(sku: str) -> Any:
    return await _upload(sku, "void")


async def _upload(sku: str, act: str) -> Any:
    settings = core().settings
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=_uploads(settings.data_dir)))
    path = folder / file_name(request.args.get("filename", ""))
    try:
        lines = await _receive(path, settings.max_stock_file_mb * 2**20)
    except TooLarge:
        shutil.rmtree(folder, ignore_errors=True)
        body = text("console_catalog.file_too_big", mb=settings.max_stock_file_mb)
        return await page("console/stock_report.html", status=413, act=act, sku=sku, refused=body)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    fmt = request.args.get("format") if request.args.get("format") in ("csv", "txt") else None
    run = Run(core(), me().actor, act, sku, path, fmt, lines)
    task = asyncio.create_task(run.go())
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    await run.changed.wait()  # the first written chunk, or the end (a refusal comes before any write)
    if run.refused is not None or run.failed:
        return await _report(run)
    response = Response(_in_context(_stream(run)), 200, {"Content-Type": "text/html; charset=utf-8"})
    response.timeout = None  # a million lines take longer than Quart's 60 s for an answer
    return response


def _uploads(data_dir: Path) -> Path:
    """Uploads wait on disk beside the database (``/tmp`` may be memory); what a process that
    died mid-import left there a day ago is cleared."""
    folder = data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    stale = time.time() - STALE_UPLOAD
    for left in folder.iterdir():
        with contextlib.suppress(OSError):
            if left.stat().st_mtime < stale:
                shutil.rmtree(left, ignore_errors=True)
    return folder


async def _receive(path: Path, limit: int) -> int:
    """Write the request body to ``path`` as it arrives; the number of lines it holds."""
    size = lines = 0
    last = b"\n"
    with path.open("wb") as out:
        async for chunk in request.body:
            size += len(chunk)
            if size > limit:  # a body sent without its length is counted here
                raise TooLarge
            out.write(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:] or last
    return lines + (0 if last == b"\n" else 1)


def file_name(raw: str) -> str:
    """The operator's file name made safe for a path (the import records it as its source);
    its suffix says the format."""
    name = Path(raw.replace("\\", "/") or "stock.txt").name or "stock.txt"
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    return (re.sub(r"[^\w.-]", "_", stem)[:100] or "stock") + "." + re.sub(r"[^\w]", "_", suffix.lower())[:10]


class Run:
    """One import or void: its progress as core reports it, and how it ended."""

    def __init__(self, core: Core, actor: str, act: str, sku: str, path: Path, fmt: str | None, total: int) -> None:
        self.core, self.actor, self.act, self.sku, self.path, self.fmt = core, actor, act, sku, path, fmt
        self.total = max(total, 1)
        self.done = 0
        self.changed = asyncio.Event()
        self.finished = False
        self.summary: ImportSummary | VoidSummary | None = None
        self.refused: QuanyiError | None = None
        self.failed = False  # an unexpected error (logged); core rolled the import back

    def progress(self, line: int) -> None:
        self.done = min(line, self.total)
        self.changed.set()

    async def go(self) -> None:
        try:
            stock = self.core.stock
            use = stock.import_file if self.act == "import" else stock.void_file
            self.summary = await use(self.sku, self.path, fmt=self.fmt, progress=self.progress)
        except QuanyiError as exc:
            self.refused = exc
        except Exception:
            log.exception("console %s of %s failed", self.act, self.sku)
            self.failed = True
        finally:
            self.finished = True
            self.changed.set()
            shutil.rmtree(self.path.parent, ignore_errors=True)
        await self._record()

    async def _record(self) -> None:
        counts: dict[str, Any] = {"file": self.path.name, "lines": self.total}
        if self.refused is not None or self.failed:
            counts["refused"] = self.refused.message if self.refused is not None else "unexpected error"
        elif isinstance(self.summary, ImportSummary):
            counts |= {
                "imported": self.summary.imported,
                "duplicates": self.summary.duplicates,
                "rejected": self.summary.rejected,
            }
        elif isinstance(self.summary, VoidSummary):
            counts |= {"voided": self.summary.voided, "sold": len(self.summary.sold_orders)}
        entry = audit.Entry(self.actor, "web", f"stock {self.act}", "product", self.sku, None, counts)
        try:
            await self.core.platform.record(entry)
        except Exception:  # an audit failure is logged loudly, never a lost report
            log.exception("could not record a console stock %s on the audit trail", self.act)


async def _stream(run: Run) -> AsyncIterator[bytes]:
    shown = -1
    while True:
        run.changed.clear()
        if run.done != shown:
            shown = run.done
            yield f"progress {shown} {run.total}\n".encode()
        if run.finished:
            break
        await run.changed.wait()
    if run.summary is not None:
        yield f"progress {run.total} {run.total}\n".encode()
    html, _, _ = await _report(run)
    yield html.encode()


def _in_context(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    @stream_with_context
    async def sent() -> AsyncIterator[bytes]:
        async for chunk in body:
            yield chunk

    return sent()


async def _report(run: Run) -> tuple[str, int, dict[str, str]]:
    """The report; or why nothing was done: 400 (404 for a product that is not there) when core
    refused the file, 500 for an unexpected error."""
    status, refused = 200, ""
    if run.refused is not None:
        status, refused = (404 if isinstance(run.refused, NotFound) else 400), reason(run.refused)
        if isinstance(run.refused, StockFileError) and run.refused.line:
            refused = text("console_catalog.at_line", line=run.refused.line, reason=refused)
    elif run.failed:
        status, refused = 500, text("console_catalog.upload_failed")
    summary = run.summary
    return await page(
        "console/stock_report.html",
        status=status,
        act=run.act,
        sku=run.sku,
        refused=refused,
        imported=summary if isinstance(summary, ImportSummary) else None,
        voided=summary if isinstance(summary, VoidSummary) else None,
        rejected=[(r.line, _rejected_reason(r)) for r in summary.rejected_examples[:SHOWN_REJECTED]]
        if isinstance(summary, ImportSummary)
        else [],
        orders=sorted(set(summary.sold_orders))[:SHOWN_ORDERS] if isinstance(summary, VoidSummary) else [],
    )


def _rejected_reason(rejected: RejectedLine) -> str:
    if rejected.key:
        try:
            return text(rejected.key, limit=rejected.limit)
        except (KeyError, IndexError):
            pass
    return rejected.reason
