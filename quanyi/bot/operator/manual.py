"""Operator chat: manual fulfilment (代充). A paid manual order arrives as a task with a Take
button; the operator who takes it (one wins, the others hear who) gets Done (with an optional
note for the buyer) and Can't do it (with a reason; the buyer is refunded). ``/queue`` lists the
open tasks. Plus the outbox messages to operators about them.

Only QUANYI_ADMIN_IDS reach these handlers; core checks that the operator acting holds the task.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from quanyi.bot.filters import TYPED, IsAdmin
from quanyi.bot.outbox_sender import Part, Renderer, WithButtons
from quanyi.bot.render import MESSAGE_LIMIT, deadline_text, money
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales.manual_views import ManualTaskClosed, ManualTaskView
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area
from quanyi.i18n import plain_t, raw_t, t


class ManualCb(CallbackData, prefix="mt"):
    action: str  # take | done | nonote | fail
    id: int


class ManualForm(StatesGroup):
    note = State()
    reason = State()


def build_manual_router() -> Router:
    router = Router(name="manual_ops")
    router.message.filter(IsAdmin(Area.SUPPORT, write=True))
    router.callback_query.filter(IsAdmin(Area.SUPPORT, write=True))
    router.message.register(queue, Command("queue"))
    router.callback_query.register(take, ManualCb.filter(F.action == "take"))
    router.callback_query.register(ask_note, ManualCb.filter(F.action == "done"))
    router.callback_query.register(done_without_note, ManualCb.filter(F.action == "nonote"))
    router.callback_query.register(ask_reason, ManualCb.filter(F.action == "fail"))
    router.message.register(cancel_form, Command("cancel"), StateFilter(ManualForm))
    router.message.register(typed_note, ManualForm.note, TYPED)
    router.message.register(typed_reason, ManualForm.reason, TYPED)
    return router


# --- texts ------------------------------------------------------------------------------------


def state_text(lang: str, task: ManualTaskView) -> str:
    if task.status == "taken":
        return raw_t(lang, "manual.state_taken", operator=task.taken_by or "?")
    return raw_t(lang, f"manual.state_{task.status}")


def task_text(core: Core, lang: str, task: ManualTaskView) -> str:
    buyer = f"@{task.username} ({task.user_id})" if task.username else str(task.user_id or "-")
    return t(
        lang,
        "manual.admin_task",
        id=task.id,
        number=task.order_number,
        name=task.product_name,
        quantity=task.quantity,
        amount=money(task.amount, task.currency),
        buyer=buyer,
        account=task.account,
        deadline=deadline_text(task.deadline_at, core.settings.timezone),
    )


def _button(lang: str, key: str, action: str, task_id: int, suffix: str = "") -> InlineKeyboardButton:
    return InlineKeyboardButton(
        text=raw_t(lang, key) + suffix, callback_data=ManualCb(action=action, id=task_id).pack()
    )


def _take_markup(lang: str, task_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[_button(lang, "manual.take_button", "take", task_id)]])


def _held_markup(lang: str, task_id: int, suffix: str = "") -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _button(lang, "manual.done_button", "done", task_id, suffix),
                _button(lang, "manual.fail_button", "fail", task_id, suffix),
            ]
        ]
    )


def _refusal(lang: str, exc: ManualTaskClosed) -> str:
    """Why the tap did nothing, as an alert: who has it, or what became of it."""
    status = str(exc.details.get("status", ""))
    if status == "taken":
        return plain_t(lang, "manual.taken_by_other", operator=exc.details.get("taken_by") or "?")
    state = raw_t(lang, f"manual.state_{status}") if status in _STATES else status
    return plain_t(lang, "manual.closed", state=state)


_STATES = ("queued", "taken", "done", "failed", "expired")


# --- /queue and the buttons ---------------------------------------------------------------------


async def queue(message: Message, core: Core, lang: str) -> None:
    tasks = await core.sales.manual_queue()
    if not tasks:
        await message.answer(t(lang, "manual.queue_empty"))
        return
    me = message.from_user.id if message.from_user else 0
    tz = core.settings.timezone
    lines = [t(lang, "manual.queue_title", count=len(tasks))]
    keyboard = InlineKeyboardBuilder()
    for task in tasks:
        row = t(
            lang,
            "manual.queue_row",
            id=task.id,
            number=task.order_number,
            name=task.product_name,
            account=task.account,
            deadline=deadline_text(task.deadline_at, tz),
            state=state_text(lang, task),
        )
        if sum(len(line) + 1 for line in lines) + len(row) > MESSAGE_LIMIT - 100:
            break
        lines.append(row)
        if task.status == "queued":
            keyboard.row(_button(lang, "manual.take_button", "take", task.id, f" #{task.id}"))
        elif task.taken_by == me:
            keyboard.row(*_held_markup(lang, task.id, f" #{task.id}").inline_keyboard[0])
    await message.answer("\n".join(lines), reply_markup=keyboard.as_markup())


async def take(query: CallbackQuery, callback_data: ManualCb, core: Core, lang: str) -> None:
    try:
        task = await core.sales.take_manual(callback_data.id, query.from_user.id)
    except ManualTaskClosed as exc:
        await query.answer(_refusal(lang, exc), show_alert=True)
        return
    except NotFound:
        await query.answer(plain_t(lang, "manual.unknown", id=callback_data.id), show_alert=True)
        return
    await query.answer()
    text = task_text(core, lang, task) + "\n" + t(lang, "manual.taken_by_you")
    message = query.message
    if not isinstance(message, Message):
        return
    if _single_task(message):  # the task's own message: it becomes the operator's to finish
        await _edit(message, text, _held_markup(lang, task.id))
    else:  # under /queue, whose other buttons still count
        await message.answer(text, reply_markup=_held_markup(lang, task.id))


async def ask_note(query: CallbackQuery, callback_data: ManualCb, core: Core, lang: str, state: FSMContext) -> None:
    task = await _held(query, callback_data, core, lang)
    if task is None:
        return
    await state.set_state(ManualForm.note)
    await state.update_data(task_id=task.id)
    if isinstance(query.message, Message):
        markup = InlineKeyboardMarkup(inline_keyboard=[[_button(lang, "manual.no_note_button", "nonote", task.id)]])
        await query.message.answer(t(lang, "manual.ask_note", number=task.order_number), reply_markup=markup)


async def done_without_note(
    query: CallbackQuery, callback_data: ManualCb, core: Core, lang: str, state: FSMContext
) -> None:
    try:
        task = await core.sales.finish_manual(callback_data.id, query.from_user.id)
    except ManualTaskClosed as exc:
        await state.clear()
        await query.answer(_refusal(lang, exc), show_alert=True)
        return
    except NotFound:
        await query.answer(plain_t(lang, "manual.unknown", id=callback_data.id), show_alert=True)
        return
    await state.clear()
    await query.answer()
    if isinstance(query.message, Message):
        await _edit(query.message, t(lang, "manual.admin_done", number=task.order_number), None)


async def typed_note(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    task_id = int((await state.get_data()).get("task_id", 0))
    operator = message.from_user.id if message.from_user else 0
    await state.clear()
    try:
        task = await core.sales.finish_manual(task_id, operator, note=message.text or "")
    except ManualTaskClosed as exc:
        await message.answer(_refusal(lang, exc))
        return
    except NotFound:
        await message.answer(t(lang, "manual.unknown", id=task_id))
        return
    await message.answer(t(lang, "manual.admin_done", number=task.order_number))


async def ask_reason(query: CallbackQuery, callback_data: ManualCb, core: Core, lang: str, state: FSMContext) -> None:
    task = await _held(query, callback_data, core, lang)
    if task is None:
        return
    await state.set_state(ManualForm.reason)
    await state.update_data(task_id=task.id)
    if isinstance(query.message, Message):
        await query.message.answer(t(lang, "manual.ask_reason", number=task.order_number))


async def typed_reason(message: Message, core: Core, lang: str, state: FSMContext) -> None:
    task_id = int((await state.get_data()).get("task_id", 0))
    operator = message.from_user.id if message.from_user else 0
    try:
        task = await core.sales.fail_manual(task_id, operator, reason=message.text or "")
    except InvalidInput:
        await message.answer(t(lang, "manual.bad_reason"))  # the form stays open
        return
    except ManualTaskClosed as exc:
        await state.clear()
        await message.answer(_refusal(lang, exc))
        return
    except NotFound:
        await state.clear()
        await message.answer(t(lang, "manual.unknown", id=task_id))
        return
    await state.clear()
    amount = money(task.amount, task.currency)
    key = "manual.admin_failed" if task.resolution == "refunded" else "manual.admin_failed_pending"
    await message.answer(t(lang, key, number=task.order_number, amount=amount))


async def cancel_form(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "manual.form_cancelled"))


async def _held(query: CallbackQuery, callback_data: ManualCb, core: Core, lang: str) -> ManualTaskView | None:
    """The task if the operator pressing holds it; otherwise the alert says why not."""
    try:
        task = await core.sales.held_manual(callback_data.id, query.from_user.id)
    except ManualTaskClosed as exc:
        await query.answer(_refusal(lang, exc), show_alert=True)
        return None
    except NotFound:
        await query.answer(plain_t(lang, "manual.unknown", id=callback_data.id), show_alert=True)
        return None
    await query.answer()
    return task


def _single_task(message: Message) -> bool:
    markup = message.reply_markup
    buttons = [b for row in markup.inline_keyboard for b in row] if markup is not None else []
    return len(buttons) == 1


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in str(exc):
            raise


# --- outbox messages to operators ---------------------------------------------------------------


async def _task(core: Core, message: Outgoing) -> ManualTaskView:
    return await core.sales.manual_task(int(str(message.payload.get("task_id", 0))))


async def render_queued(core: Core, message: Outgoing) -> list[Part]:
    task = await _task(core, message)
    lang = message.language
    text = task_text(core, lang, task)
    if task.status != "queued":
        # Taken or decided before this message went out: nothing to take.
        return [text + "\n" + t(lang, "manual.admin_state", state=state_text(lang, task))]
    return [WithButtons(text, _take_markup(lang, task.id))]


async def render_expired(core: Core, message: Outgoing) -> list[Part]:
    task = await _task(core, message)
    values = {"number": task.order_number, "name": task.product_name, "account": task.account}
    return [
        t(
            message.language,
            "manual.admin_expired",
            deadline=deadline_text(task.deadline_at, core.settings.timezone),
            **values,
        )
    ]


async def render_refund_pending(core: Core, message: Outgoing) -> list[Part]:
    task = await _task(core, message)
    lang = message.language
    return [
        t(
            lang,
            "manual.admin_refund_pending",
            number=task.order_number,
            name=task.product_name,
            state=state_text(lang, task),
            amount=money(task.amount, task.currency),
        )
    ]


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "admin_manual_queued": render_queued,
    "admin_manual_expired": render_expired,
    "admin_manual_refund_pending": render_refund_pending,
}
