"""The buyer's messages about an order fulfilled by hand: handled by hand and by when, done
(with the operator's note), or failed and why, with what happens to the money."""

from __future__ import annotations

from quanyi.bot.outbox_sender import Part, Renderer
from quanyi.bot.render import deadline_text, mask_account, money
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales.manual_views import ManualTaskView
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t


async def _task(core: Core, message: Outgoing) -> ManualTaskView:
    return await core.sales.manual_task(int(str(message.payload.get("task_id", 0))))


def _values(task: ManualTaskView) -> dict[str, object]:
    return {"number": task.order_number, "name": task.product_name, "account": mask_account(task.account)}


async def render_queued(core: Core, message: Outgoing) -> list[Part]:
    task = await _task(core, message)
    deadline = deadline_text(task.deadline_at, core.settings.timezone)
    return [t(message.language, "manual.queued", deadline=deadline, **_values(task))]


async def render_done(core: Core, message: Outgoing) -> list[Part]:
    task = await _task(core, message)
    lang = message.language
    text = t(lang, "manual.done", **_values(task))
    if task.note:
        text += "\n" + t(lang, "manual.done_note", note=task.note)
    return [text]


async def render_failed(core: Core, message: Outgoing) -> list[Part]:
    """Failed (the operator's reason) or not done in time; then what happens to the money. The
    refund's own message follows when the money went back."""
    task = await _task(core, message)
    lang = message.language
    if task.status == "expired":
        head = t(
            lang, "manual.expired", deadline=deadline_text(task.deadline_at, core.settings.timezone), **_values(task)
        )
    else:
        head = t(lang, "manual.failed", reason=task.reason or raw_t(lang, "manual.reason_deadline"), **_values(task))
    amount = money(task.amount, task.currency)
    if str(message.payload.get("resolution", "")) == "refunded":
        outcome = t(lang, "manual.outcome_refunded", amount=amount)
    else:
        contact = core.settings.support_contact
        support = t(lang, "support_line", contact=contact) if contact else ""
        outcome = t(lang, "manual.outcome_refund_pending", amount=amount, support=support).strip()
    return ["\n".join([head, outcome])]


# The outbox kinds this module owns, rendered for the sender (collected by ``bot.renderers``).
RENDERERS: dict[str, Renderer] = {
    "manual_queued": render_queued,
    "manual_done": render_done,
    "manual_failed": render_failed,
}
