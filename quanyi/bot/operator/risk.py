"""Risk control in the operator chat: rules switched on and off or edited, the blocklist, the
decisions, and holds approved with one tap or rejected with a typed reason; plus the outbox
messages about holds (to operators and to the buyer).

Only QUANYI_ADMIN_IDS reach this router: anyone else's /risk or forged button falls through to
the shop, which changes nothing. Handlers are module-level functions that aiogram calls with what
they name from the handler data (``core`` set on the dispatcher, ``lang`` from the language
middleware, ``state``, ``callback_data``, ``command``); ``build_risk_router`` registers them.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import IsAdmin
from quanyi.bot.operator.ops import OpsCb
from quanyi.bot.outbox_sender import Part, Renderer, WithButtons
from quanyi.bot.render import MESSAGE_LIMIT, money, reason_in
from quanyi.core.errors import InvalidInput, NotFound, QuanyiError, RiskBlocked
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.risk.views import ACTIONS, BLOCK_KINDS, METRICS, STATUSES, DecisionView
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import raw_t, t

log = logging.getLogger(__name__)

TYPED = F.text & ~F.text.startswith("/")


class RiskCb(CallbackData, prefix="rk"):
    action: str  # rules | toggle | approve | reject
    id: int = 0
    listed: bool = False  # pressed under /decisions, whose other buttons still count


class RejectHoldForm(StatesGroup):
    reason = State()


def build_risk_router() -> Router:
    """The operators' risk handlers, in the order aiogram tries them."""
    router = Router(name="risk_ops")
    router.message.filter(IsAdmin(Area.RISK, write=True))
    router.callback_query.filter(IsAdmin(Area.RISK, write=True))
    router.message.register(rules, Command("risk"))
    router.callback_query.register(rules_button, RiskCb.filter(F.action == "rules"))
    router.callback_query.register(toggle, RiskCb.filter(F.action == "toggle"))
    router.message.register(edit_rule, Command("risk_rule"))
    router.message.register(block, Command("block"))
    router.message.register(unblock, Command("unblock"))
    router.message.register(blocks, Command("blocks"))
    router.message.register(decisions, Command("decisions"))
    router.callback_query.register(approve, RiskCb.filter(F.action == "approve"))
    router.callback_query.register(ask_reason, RiskCb.filter(F.action == "reject"))
    router.message.register(cancel, Command("cancel"), StateFilter(RejectHoldForm))
    router.message.register(typed_reason, RejectHoldForm.reason, TYPED)
    return router


# --- handlers --------------------------------------------------------------------------------


async def rules(message: Message, core: Core, lang: str) -> None:
    text, markup = await rules_view(core, lang)
    await message.answer(text, reply_markup=markup)


async def rules_button(query: CallbackQuery, core: Core, lang: str) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await _edit(query.message, *await rules_view(core, lang))


async def toggle(query: CallbackQuery, callback_data: RiskCb, core: Core, lang: str) -> None:
    await core.risk.toggle_rule(callback_data.id)
    await query.answer()
    if isinstance(query.message, Message):
        await _edit(query.message, *await rules_view(core, lang))


async def edit_rule(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    if len(words) < 2:
        await message.answer(t(lang, "risk.rule_usage"))
        return
    name, changes = words[0], words[1:]
    try:
        await core.risk.edit_rule(name, changes)
    except NotFound:
        await message.answer(t(lang, "risk.rule_unknown", name=name))
        return
    except InvalidInput as exc:
        await message.answer(t(lang, "risk.rule_bad", problem=reason_in(lang, exc)) + "\n" + t(lang, "risk.rule_usage"))
        return
    text, markup = await rules_view(core, lang)
    await message.answer(t(lang, "risk.rule_saved") + "\n\n" + text, reply_markup=markup)


async def block(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split(maxsplit=2)
    if len(words) < 3 or words[0] not in BLOCK_KINDS:
        await message.answer(t(lang, "risk.block_usage"))
        return
    kind, value, reason = words
    actor = f"operator:{message.from_user.id if message.from_user else '?'}"
    try:
        await core.risk.block(kind, value, reason=reason, actor=actor)
    except InvalidInput as exc:
        await message.answer(
            t(lang, "risk.rule_bad", problem=reason_in(lang, exc)) + "\n" + t(lang, "risk.block_usage")
        )
        return
    await message.answer(t(lang, "risk.blocked_added", kind=_kind(lang, kind), value=value, reason=reason))


async def unblock(message: Message, command: CommandObject, core: Core, lang: str) -> None:
    words = (command.args or "").split()
    if len(words) != 2 or words[0] not in BLOCK_KINDS:
        await message.answer(t(lang, "risk.unblock_usage"))
        return
    kind, value = words
    removed = await core.risk.unblock(kind, value)
    key = "risk.unblocked" if removed else "risk.not_blocked"
    await message.answer(t(lang, key, kind=_kind(lang, kind), value=value))


async def blocks(message: Message, core: Core, lang: str) -> None:
    entries = await core.risk.blocks()
    if not entries:
        await message.answer(t(lang, "risk.blocks_empty"))
        return
    tz = ZoneInfo(core.settings.timezone)
    rows = [
        t(
            lang,
            "risk.block_row",
            kind=_kind(lang, e.kind),
            value=e.value,
            reason=e.reason,
            by=e.created_by,
            at=_at(e.created_at, tz),
        )
        for e in entries
    ]
    await message.answer(_fit(t(lang, "risk.blocks_title"), rows))


async def decisions(message: Message, core: Core, lang: str) -> None:
    board = await core.risk.decision_board()
    open_, recent = board.open, board.recent
    if not open_ and not recent:
        await message.answer(t(lang, "risk.decisions_empty"))
        return
    tz = ZoneInfo(core.settings.timezone)
    keyboard = InlineKeyboardBuilder()
    rows = [t(lang, "risk.decisions_open")]
    rows += [_decision_row(lang, d, tz) for d in open_] or [t(lang, "risk.decisions_none_open")]
    for d in open_:
        if d.action == "hold":
            keyboard.row(*_decide_buttons(lang, d.id, listed=True))
    if recent:
        rows += [t(lang, "risk.decisions_recent"), *(_decision_row(lang, d, tz) for d in recent)]
    await message.answer(_fit(t(lang, "risk.decisions_title"), rows), reply_markup=keyboard.as_markup())


async def approve(query: CallbackQuery, callback_data: RiskCb, core: Core, lang: str) -> None:
    try:
        decision = await core.risk.approve_hold(callback_data.id, actor=f"operator:{query.from_user.id}")
    except QuanyiError:
        await query.answer(await _decided(core, lang, callback_data.id), show_alert=True)
        return
    text = t(lang, "risk.admin_approved", id=decision.id, user=decision.user_id or "")
    await query.answer()
    if isinstance(query.message, Message):
        if callback_data.listed:
            await query.message.answer(text)
        else:  # the hold's own message becomes the decision: its buttons have done their work
            await _edit(query.message, text, None)


async def ask_reason(query: CallbackQuery, callback_data: RiskCb, core: Core, lang: str, state: FSMContext) -> None:
    try:
        decision = await core.risk.open_hold(callback_data.id)
    except QuanyiError:
        await query.answer(await _decided(core, lang, callback_data.id), show_alert=True)
        return
    await query.answer()
    await state.set_state(RejectHoldForm.reason)
    await state.update_data(decision_id=decision.id)
    if isinstance(query.message, Message):
        await query.message.answer(
            t(
                lang,
                "risk.admin_ask_reason",
                id=decision.id,
                sku=decision.sku,
                quantity=decision.quantity,
                user=decision.user_id or "",
            )
        )


async def cancel(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "risk.admin_cancelled"))


async def typed_reason(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    decision_id = int((await state.get_data()).get("decision_id", 0))
    actor = f"operator:{message.from_user.id if message.from_user else '?'}"
    try:
        decision = await core.risk.reject_hold(decision_id, actor=actor, reason=message.text or "")
    except QuanyiError as exc:
        if exc.details.get("field") == "reason":
            await message.answer(t(lang, "risk.admin_bad_reason"))  # the form stays open
            return
        await state.clear()
        await message.answer(await _decided(core, lang, decision_id, escape=True))
        return
    await state.clear()
    await message.answer(t(lang, "risk.admin_rejected", id=decision.id, user=decision.user_id or ""))


# --- views -----------------------------------------------------------------------------------


async def rules_view(core: Core, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    rules = await core.risk.rules()
    keyboard = InlineKeyboardBuilder()
    back = InlineKeyboardButton(text=raw_t(lang, "ops.btn_back"), callback_data=OpsCb(view="menu").pack())
    if not rules:
        keyboard.row(back)
        return t(lang, "risk.rules_empty") + "\n" + t(lang, "risk.commands"), keyboard.as_markup()
    rows = []
    for rule in rules:
        state = raw_t(lang, "risk.rule_on" if rule.active else "risk.rule_off")
        window = t(lang, "risk.rule_window", window=_window(rule.window_seconds)) if rule.window_seconds else ""
        scope = ",".join(filter(None, [rule.channels, rule.skus, rule.languages]))
        rows.append(
            raw_t(
                lang,
                "risk.rule_row",
                state=state,
                name=_esc(rule.name),
                metric=rule.metric,
                window=window,
                threshold=rule.threshold_text,
                action=_action(lang, rule.action),
                scope=t(lang, "risk.rule_scope", scope=scope) if scope else "",
            )
        )
        label = raw_t(lang, "risk.rule_button", state=state, name=rule.name)[:60]
        keyboard.row(InlineKeyboardButton(text=label, callback_data=RiskCb(action="toggle", id=rule.id).pack()))
    keyboard.row(back)
    text = _fit(t(lang, "risk.rules_title"), [*rows, t(lang, "risk.commands")])
    return text, keyboard.as_markup()


def _decision_row(lang: str, d: DecisionView, tz: ZoneInfo) -> str:
    where = " / ".join(filter(None, [d.client_ip, d.device_id]))
    return raw_t(
        lang,
        "risk.decision_row",
        id=d.id,
        action=_action(lang, d.action),
        status=_status(lang, d.status),
        user=d.user_id if d.user_id is not None else "-",
        sku=_esc(d.sku),
        quantity=d.quantity,
        amount=_esc(money(d.amount, d.currency)),
        channel=_esc(d.channel),
        where=t(lang, "risk.decision_where", where=where) if where else "",
        at=_at(d.created_at, tz),
        reason=_esc(decision_reason(lang, d)),
    )


def _decide_buttons(lang: str, decision_id: int, *, listed: bool = False) -> list[InlineKeyboardButton]:
    suffix = f" #{decision_id}" if listed else ""
    return [
        InlineKeyboardButton(
            text=raw_t(lang, "risk.approve_button") + suffix,
            callback_data=RiskCb(action="approve", id=decision_id, listed=listed).pack(),
        ),
        InlineKeyboardButton(
            text=raw_t(lang, "risk.reject_button") + suffix,
            callback_data=RiskCb(action="reject", id=decision_id, listed=listed).pack(),
        ),
    ]


# --- helpers ---------------------------------------------------------------------------------


async def _decided(core: Core, lang: str, decision_id: int, *, escape: bool = False) -> str:
    decision = await core.risk.decision(decision_id)
    if decision is None or decision.action != "hold" or decision.status == "open":
        return (t if escape else raw_t)(lang, "risk.admin_unknown", id=decision_id)
    values = {"id": decision_id, "status": _status(lang, decision.status)}
    return t(lang, "risk.admin_decided", **values) if escape else raw_t(lang, "risk.admin_decided", **values)


def _window(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _action(lang: str, action: str) -> str:
    return raw_t(lang, f"risk.action_{action}") if action in ACTIONS else _esc(action)


def _status(lang: str, status: str) -> str:
    return raw_t(lang, f"risk.status_{status}") if status in STATUSES else _esc(status)


def _kind(lang: str, kind: str) -> str:
    return raw_t(lang, f"risk.kind_{kind}") if kind in BLOCK_KINDS else kind


def _at(when: datetime, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%m-%d %H:%M")


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _fit(title: str, rows: list[str]) -> str:
    lines = [title]
    for row in rows:
        if sum(len(line) + 1 for line in lines) + len(row) > MESSAGE_LIMIT - 100:
            lines.append("…")
            break
        lines.append(row)
    return "\n".join(lines)


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in str(exc):
            raise


# --- outbox messages -------------------------------------------------------------------------


async def _load(core: Core, message: Outgoing) -> DecisionView | None:
    return await core.risk.decision(int(str(message.payload.get("decision_id", 0))))


async def render_hold(core: Core, message: Outgoing) -> list[Part]:
    decision = await _load(core, message)
    lang = message.language
    if decision is None:
        return []
    text = t(
        lang,
        "risk.admin_hold",
        id=decision.id,
        user=decision.user_id if decision.user_id is not None else "-",
        sku=decision.sku,
        quantity=decision.quantity,
        amount=money(decision.amount, decision.currency),
        channel=decision.channel,
        reason=decision_reason(lang, decision),
    )
    if decision.status != "open":
        # Decided before this message went out (another operator, the CLI): nothing to press.
        return [text + "\n" + t(lang, "risk.admin_status", status=_status(lang, decision.status))]
    return [WithButtons(text, InlineKeyboardMarkup(inline_keyboard=[_decide_buttons(lang, decision.id)]))]


async def render_approved(core: Core, message: Outgoing) -> list[Part]:
    decision = await _load(core, message)
    if decision is None:
        return []
    return [t(message.language, "risk.hold_approved", sku=decision.sku, quantity=decision.quantity)]


async def render_rejected(core: Core, message: Outgoing) -> list[Part]:
    decision = await _load(core, message)
    if decision is None:
        return []
    # ``risk.reject`` keeps the operator's reason, written for the buyer, in the decision.
    values = {"sku": decision.sku, "quantity": decision.quantity, "reason": decision.reason}
    return [t(message.language, "risk.hold_rejected", **values)]


def decision_reason(lang: str, decision: DecisionView) -> str:
    """Why the shop decided, in the operator's language: a rule's reason by its metric, or the
    operator's own words for a block."""
    if decision.metric in METRICS:
        return raw_t(lang, f"risk.reason_{decision.metric}", threshold=decision.limit)
    return decision.reason


# --- the buyer's side, used by the shop ----------------------------------------------------------


async def refusal_text(core: Core, lang: str, exc: RiskBlocked) -> str:
    """Why a buyer is refused, in the buyer's language: the rule's reason by its metric, or the
    operator's reason for a blocklist entry; never the rule's name or numbers beyond its limit."""
    rule = await core.risk.refusal_rule(exc.decision_id)
    if rule is not None and rule.metric in METRICS:
        reason = raw_t(lang, f"risk.reason_{rule.metric}", threshold=rule.threshold_text)
        return t(lang, "risk.blocked", reason=reason)
    return t(lang, "risk.blocked", reason=exc.reason)


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_risk_hold": render_hold,
    "risk_hold_approved": render_approved,
    "risk_hold_rejected": render_rejected,
}
