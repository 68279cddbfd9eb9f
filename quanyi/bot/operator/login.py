"""Operator chat: ``/login`` sends a one-time sign-in link to the web console, and a staff member
whose role may not use an operator command is told so (instead of the shop answering it).

The roles are the console's (``core.staff``): what an area's router lets through is decided by its
``IsAdmin(area)`` filter; this router comes after all of them and catches what they refused."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, LinkPreviewOptions, Message

from quanyi.bot.filters import IsAdmin
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import plain_t, raw_t, t

# Each operator command and the area it belongs to (for the refusal's words).
COMMAND_AREAS: dict[str, Area] = {
    **dict.fromkeys(("admin", "order", "review"), Area.ORDERS),
    **dict.fromkeys(("audit",), Area.AUDIT),
    **dict.fromkeys(("queue", "tickets"), Area.SUPPORT),
    **dict.fromkeys(("stock", "allocate", "takeback", "threshold", "import", "void"), Area.STOCK),
    **dict.fromkeys(("channels", "channel_add", "channel_price"), Area.CHANNELS),
    **dict.fromkeys(("invite", "distributors", "topup"), Area.DISTRIBUTORS),
    **dict.fromkeys(
        ("partners", "partner_new", "partner_key", "partner_revoke", "partner_topup", "partner_webhook"),
        Area.PARTNERS,
    ),
    **dict.fromkeys(
        (
            "pricing",
            "coupons",
            "coupon_on",
            "coupon_off",
            "coupon_export",
            "coupon_new",
            "coupon_import",
            "promotions",
            "promo_on",
            "promo_off",
            "promo_new",
            "bundles",
            "bundle_new",
            "bundle_parts",
        ),
        Area.PRICING,
    ),
    **dict.fromkeys(("products", "product", "product_add"), Area.CATALOG),
    **dict.fromkeys(("reconcile", "withdrawals"), Area.BOOKS),
    **dict.fromkeys(("report",), Area.REPORTS),
    **dict.fromkeys(("risk", "risk_rule", "block", "unblock", "blocks", "decisions"), Area.RISK),
}


def build_login_router() -> Router:
    router = Router(name="operator_login")
    router.message.filter(IsAdmin())
    router.message.register(send_login_link, Command("login"))
    return router


# The prefixes of the operator chat's buttons (CallbackData prefixes in quanyi.bot.operator and
# the operators' pricing menu): a press of one that no router took is a role refusal.
OPERATOR_BUTTONS = ("oa", "pc", "wa", "oi", "pn", "mt", "op", "ol", "pe", "pp", "rf", "rp", "rk", "psk", "tk", "pz")


def build_role_refusal_router() -> Router:
    """After every operator router: staff whose role let none of them through are told why."""
    router = Router(name="operator_role_refusal")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(refuse, Command(*COMMAND_AREAS))
    router.callback_query.register(refuse_button, F.data.func(_operator_button))
    return router


def _operator_button(data: str) -> bool:
    return data.split(":", 1)[0] in OPERATOR_BUTTONS


async def send_login_link(message: Message, core: Core, lang: str) -> None:
    user_id = message.from_user.id if message.from_user else 0
    url = await core.staff.login_link(user_id, actor=f"operator:{user_id}", front="chat")
    minutes = core.settings.login_link_minutes
    await message.answer(
        t(lang, "console_chat.login_link", url=url, minutes=minutes),
        link_preview_options=LinkPreviewOptions(is_disabled=True),  # a preview would fetch the page
    )


async def refuse(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    user_id = message.from_user.id if message.from_user else 0
    area = COMMAND_AREAS.get(command.command, Area.ORDERS)
    await message.answer(t(lang, "console_chat.refused", **await _words(core, lang, user_id, area)))


async def refuse_button(query: CallbackQuery, core: Core, lang: str) -> None:
    words = await _words(core, lang, query.from_user.id, None)
    await query.answer(plain_t(lang, "console_chat.refused_button", **words), show_alert=True)


async def _words(core: Core, lang: str, user_id: int, area: Area | None) -> dict[str, str]:
    role = await core.staff.role_of(user_id)
    words = {"role": raw_t(lang, f"console.role.{role.value if role else 'read_only'}")}
    if area is not None:
        words["area"] = raw_t(lang, f"console.area.{area.value}")
    return words
