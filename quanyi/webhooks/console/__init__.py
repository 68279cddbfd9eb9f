"""The operator web console under ``/admin`` (运营后台): server-rendered pages in the console's
frame, with htmx for the live parts; every asset ships in the package (no CDN).

A door like the chat and the CLI: each page calls the core's services, never the database, so
the ledger and the audit trail see a console action as they see a chat one. ``shell`` holds what
pages share (the signed-in person, texts, the role guard); ``auth`` signs people in and checks
every request; one module per area adds its pages to ``blueprint``."""

from __future__ import annotations

from importlib import import_module
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


# The modules that add pages (auth first: its hooks guard every other page).
PAGES = (
    "auth",
    "dashboard",
    "staff",
    "orders",
    "orders_file",
    "products",
    "stock",
    "stock_upload",
    "channels",
    "distributors",
    "partners",
    "pricing",
    "risk",
    "books",
    "books_reconcile",
    "books_withdrawals",
    "reports",
    "audit",
)


def load_pages() -> Blueprint:
    """The blueprint with every area's pages registered (imported for their routes)."""
    for name in PAGES:
        import_module(f"{__name__}.{name}")

    return blueprint
