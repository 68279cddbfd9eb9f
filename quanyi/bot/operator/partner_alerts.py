"""Operators' alerts about partner systems (outbox kinds rendered here; ``bot.runner`` imports it)."""

from __future__ import annotations

from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.services import Core
from quanyi.i18n import t


async def webhook_failing(core: Core, message: Outgoing) -> list[Part]:
    p = message.payload
    return [
        t(
            message.language,
            "admin_webhook_failing",
            partner=p.get("partner", "?"),
            event=p.get("event", "?"),
            number=p.get("number", "?"),
            order_no=p.get("order_no", "?"),
            attempts=p.get("attempts", "?"),
            error=p.get("error", "?"),
        )
    ]


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_webhook_failing": webhook_failing,
}
