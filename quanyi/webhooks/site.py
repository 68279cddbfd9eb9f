"""Public pages: the catalogue overview and shared page helpers."""

from __future__ import annotations

from quart import Blueprint, current_app, render_template, request

from quanyi.core.catalog import catalogue
from quanyi.core.services import Core
from quanyi.i18n import catalog, pick_language

blueprint = Blueprint("site", __name__)


def core() -> Core:
    return current_app.extensions["quanyi.core"]  # type: ignore[no-any-return]


def page_language() -> str:
    accepted = request.accept_languages.best_match(["zh", "zh-CN", "en"]) if request.accept_languages else None
    return pick_language(accepted)


def page_texts() -> dict[str, str]:
    return dict(catalog(page_language())["web"])


@blueprint.get("/")
async def index() -> str:
    async with core().db.read() as session:
        entries = await catalogue(session)
    return await render_template("index.html", tx=page_texts(), entries=entries)
