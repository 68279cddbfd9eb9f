"""The operator web console under ``/admin`` (运营后台): server-rendered pages in the console's
frame, with htmx for the live parts; every asset ships in the package (no CDN).

A door like the chat and the CLI: each page calls the core's services, never the database, so
the ledger and the audit trail see a console action as they see a chat one. ``shell`` holds what
pages share (the signed-in person, texts, the role guard); ``auth`` signs people in and checks
every request; one module per area adds its pages to ``blueprint``."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"
blueprint = Blueprint(
    "console",
    __name__,
    url_prefix="/admin",
    template_folder=str(TEMPLATES),
    static_folder=str(TEMPLATES / "console" / "static"),
    static_url_path="/static",
)


def load_pages() -> Blueprint:
    """The blueprint with every area's pages registered (imported for their routes)."""
    from quanyi.webhooks.console import auth, dashboard, products, staff, stock, stock_upload  # noqa: F401

    return blueprint
