"""Public pages: the catalogue overview, the readiness check and shared page helpers."""

from __future__ import annotations

import logging

from quart import Blueprint, Response, current_app, jsonify, render_template, request

from quanyi.core.catalog.views import UNCAPPED, CatalogueEntry
from quanyi.core.services import Core
from quanyi.i18n import catalog, pick_language, raw_t

log = logging.getLogger(__name__)
blueprint = Blueprint("site", __name__)


def core() -> Core:
    return current_app.extensions["quanyi.core"]


def page_language() -> str:
    accepted = request.accept_languages.best_match(["zh", "zh-CN", "en"]) if request.accept_languages else None
    return pick_language(accepted)


def page_texts() -> dict[str, str]:
    return dict(catalog(page_language())["web"])


@blueprint.get("/")
async def index() -> str:
    entries = await core().sales.public_catalogue()
    figures = {e.id: _figure(e) for e in entries}
    return await render_template("index.html", tx=page_texts(), entries=entries, figures=figures)


def _figure(entry: CatalogueEntry) -> str:
    """The sellable figure the bot and ``stock show`` show: a count, or on demand with its sales."""
    if entry.available >= UNCAPPED:
        return raw_t(page_language(), "sellable.on_demand_sold", sold=entry.sold)
    return str(entry.available)


@blueprint.get("/readyz")
async def readyz() -> tuple[Response, int]:
    """200 only when the database takes a write, the schema is current and the keyring matches
    (``/healthz`` stays a liveness check: the process answers and the database is reachable)."""
    try:
        reason = await core().platform.unready_reason()
    except Exception as exc:  # a probe answers; it never fails with a 500
        log.warning("readiness check failed with %s", type(exc).__name__)
        reason = "the readiness check failed"
    if reason is not None:
        return jsonify({"status": "unready", "reason": reason}), 503
    return jsonify({"status": "ready"}), 200
