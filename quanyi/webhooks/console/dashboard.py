"""The console's first page (the live dashboard is built on it)."""

from __future__ import annotations

from typing import Any

from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import guard, page


@blueprint.get("/")
@guard(Area.DASHBOARD)
async def dashboard() -> Any:
    return await page("console/dashboard.html")
