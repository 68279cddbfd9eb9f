"""Filters shared by the chat's routers: who reaches the operator chat (staff by role; QUANYI_ADMIN_IDS are
owners), who is an active distributor, and a typed answer to a form."""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.filters import BaseFilter
from aiogram.types import TelegramObject

from quanyi.core.services import Core
from quanyi.core.staff.roles import Area


class IsAdmin(BaseFilter):
    """Staff whose role may use an area of the operator chat: ``IsAdmin()`` any role,
    ``IsAdmin(Area.STOCK, write=True)`` one that may change stock (owners, operators). The roles
    are the web console's (``core.staff``); ``QUANYI_ADMIN_IDS`` are owners."""

    def __init__(self, area: Area | None = None, *, write: bool = False) -> None:
        self.area = area
        self.write = write

    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool:
        user = getattr(event, "from_user", None)
        if user is None:
            return False
        if self.area is None:
            return await core.staff.is_staff(user.id)
        return await core.staff.may(user.id, self.area, write=self.write)


class IsDistributor(BaseFilter):
    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool:
        user = getattr(event, "from_user", None)
        return user is not None and await core.distributors.is_active(user.id)


# Typed answers to a form; commands (/start, /agent, /cancel) go to their own handlers.
TYPED = F.text & ~F.text.startswith("/")
