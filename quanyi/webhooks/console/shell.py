"""What every console page shares: the signed-in person, the page language, the texts, the
guard that checks a role before a view runs, and the rendering of a page in the console's frame.

Views call ``page(template, **values)`` and decorate themselves with ``@guard(Area.X)`` (reading)
or ``@guard(Area.X, write=True)`` (changing). A refusal is a 403 page naming the role, never a
half-done action; every write runs inside ``acting(...)`` so the audit trail names the person."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from quart import current_app, g, render_template, request

from quanyi.core.errors import QuanyiError
from quanyi.core.money import format_minor
from quanyi.core.platform import audit
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area, may
from quanyi.core.staff.views import Signed
from quanyi.i18n import LANGUAGES, pick_language, raw_t

LANG_COOKIE = "qy_lang"
View = TypeVar("View", bound=Callable[..., Awaitable[Any]])

# The navigation: (area, endpoint, text key). A link shows only to roles that may read its area.
NAV: list[tuple[Area, str, str]] = [
    (Area.DASHBOARD, "console.dashboard", "console.nav.dashboard"),
    (Area.ORDERS, "console.orders", "console.nav.orders"),
    (Area.CATALOG, "console.products", "console.nav.products"),
    (Area.STOCK, "console.stock", "console.nav.stock"),
    (Area.CHANNELS, "console.channels", "console.nav.channels"),
    (Area.DISTRIBUTORS, "console.distributors", "console.nav.distributors"),
    (Area.PARTNERS, "console.partners", "console.nav.partners"),
    (Area.PRICING, "console.pricing", "console.nav.pricing"),
    (Area.RISK, "console.risk", "console.nav.risk"),
    (Area.BOOKS, "console.books", "console.nav.books"),
    (Area.REPORTS, "console.reports", "console.nav.reports"),
    (Area.AUDIT, "console.audit", "console.nav.audit"),
    (Area.STAFF, "console.staff", "console.nav.staff"),
]


def core() -> Core:
    return cast(Core, current_app.extensions["quanyi.core"])


def me() -> Signed:
    """The signed-in person (the guard has made sure there is one)."""
    return cast(Signed, g.staff)


def language() -> str:
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    accepted = request.accept_languages.best_match(["zh", "zh-CN", "en"]) if request.accept_languages else None
    return pick_language(accepted)


def text(key: str, **values: Any) -> str:
    """A console text in the page's language (Jinja escapes it where it is shown)."""
    return raw_t(language(), key, **values)


def reason(exc: QuanyiError) -> str:
    """Why core refused, in the page's language when the refusal has a text, else its message."""
    if exc.key:
        try:
            return raw_t(language(), exc.key, **exc.details)
        except (KeyError, IndexError):
            pass
    return exc.message


def money(minor: int | None, currency: str | None = None) -> str:
    if minor is None:
        return "-"
    currency = currency or core().settings.currency
    symbol = {"CNY": "¥", "USD": "$", "EUR": "€"}.get(currency, "")
    sign = "-" if minor < 0 else ""
    amount = format_minor(abs(minor), currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def when(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(core().settings.timezone)).strftime(fmt)


def can(area: Area | str, write: bool = False) -> bool:
    staff: Signed | None = g.get("staff")
    return staff is not None and may(staff.role, area, write=write)


def nav() -> list[tuple[str, str, bool]]:
    """(endpoint, label, current) for the areas the person may read."""
    current = request.endpoint or ""
    built = current_app.view_functions
    return [
        (endpoint, text(key), current == endpoint) for area, endpoint, key in NAV if can(area) and endpoint in built
    ]


def page_values() -> dict[str, Any]:
    """What every template sees: the texts, the formatting helpers, who is signed in."""
    staff: Signed | None = g.get("staff")
    return {
        "_": text,
        "lang": language(),
        "money": money,
        "when": when,
        "can": can,
        "nav": nav() if staff else [],
        "staff": staff,
        "csrf": staff.csrf if staff else "",
        "role_name": (lambda role: text(f"console.role.{role}")),
    }


async def page(template: str, *, status: int = 200, **values: Any) -> tuple[str, int, dict[str, str]]:
    html = await render_template(template, **page_values(), **values)
    return html, status, {}


async def message(title: str, body: str, *, status: int = 200, bad: bool = False) -> tuple[str, int, dict[str, str]]:
    return await page("console/message.html", status=status, title=title, body=body, bad=bad)


async def refused(area: Area | str, write: bool) -> tuple[str, int, dict[str, str]]:
    staff = me()
    body = text(
        "console.refused_body",
        role=text(f"console.role.{staff.role.value}"),
        area=text(f"console.area.{Area(area).value}"),
        what=text("console.refused_change" if write else "console.refused_see"),
    )
    return await message(text("console.refused_title"), body, status=403, bad=True)


def guard(area: Area, *, write: bool = False) -> Callable[[View], View]:
    """The view runs only for a role that may read (``write``: change) ``area``; a write runs
    inside ``acting`` so everything it changes is on the trail under the person's id, front web."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if not can(area, write):
                return await refused(area, write)
            if not write:
                return await view(*args, **kwargs)
            with acting():
                return await view(*args, **kwargs)

        return cast(View, guarded)

    return wrap


@contextmanager
def acting() -> Iterator[audit.Work]:
    with audit.acting(me().actor, "web") as work:
        yield work
