"""What the finance, risk, report and audit pages share: a core value in the reader's words,
form fields read strictly, and a file handed out as a download."""

from __future__ import annotations

from datetime import date
from typing import Any

from quart import Response

from quanyi.webhooks.console.shell import text


class BadForm(ValueError):
    """A form field that does not read; its message is already in the page's language."""


def say(table: str, value: Any) -> str:
    """``value`` looked up in the text table ``table`` (``risk.action_``, ``words.report_view.``);
    a value the table lacks is shown as it is."""
    try:
        return text(f"{table}{value}")
    except (KeyError, TypeError, IndexError):
        return str(value)


def whole(value: str | None, field: str, *, lowest: int = 0) -> int:
    raw = (value or "").strip()
    if not raw.isdecimal() or int(raw) < lowest:
        raise BadForm(text("console_money.bad_number", field=field))
    return int(raw)


def day_of(value: str | None, field: str) -> date | None:
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadForm(text("console_money.bad_day", field=field, value=raw[:20])) from None


def download(data: bytes, filename: str, kind: str) -> Response:
    """A file the browser saves (never shown inline: it came from people's names and ids)."""
    types = {
        "csv": "text/csv; charset=utf-8",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
    return Response(
        data,
        content_type=types[kind],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


def status_of(exc: Exception) -> int:
    """The page's status for a refusal: 404 for something that is not there, 403 for a role's
    limit, 400 for the rest."""
    from quanyi.core.errors import Forbidden, NotFound

    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    return 400
