"""One order's page (订单详情): lines, price, payments, refunds, recharges, manual tasks, its chat
messages and its audit trail; and what may be done to it: refund it whole or one line (support
staff up to their limit), record a refund paid outside quanyi, send the delivery again, and
reveal its codes (audited, never cached)."""

from __future__ import annotations

from typing import Any

from quart import Response, redirect, request, url_for

from quanyi.core.errors import Forbidden, NotFound, QuanyiError, RefundNotSupported
from quanyi.core.platform import audit
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import audit as audit_words
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import core, guard, me, message, page, reason, text

NOTICES = ("refunded", "manual", "already", "resent")


@blueprint.get("/orders/<number>")
@guard(Area.ORDERS)
async def order(number: str) -> Any:
    notice = request.args.get("done", "")
    return await _order_page(number, notice=notice if notice in NOTICES else "")


async def _order_page(
    number: str,
    *,
    error: str = "",
    notice: str = "",
    manual_offer: dict[str, Any] | None = None,
    status: int = 200,
) -> Any:
    try:
        file = await core().sales.order_file(number)
    except QuanyiError as exc:
        return await message(text("console_orders.order_title", number=number[:32]), reason(exc), status=404, bad=True)
    return await page(
        "console/order.html",
        status=status,
        file=file,
        sheet=file.sheet,
        error=error,
        notice=notice,
        manual_offer=manual_offer,
        word=word,
        who=audit_words.actor_name,
        action_name=audit_words.action_name,
        front_name=lambda front: audit_words.front_name(front),
        change_lines=audit_words.change_lines,
    )


def word(table: str, value: str) -> str:
    """A status word of ``words.<table>`` in the page's language; a value it lacks as it is."""
    try:
        return text(f"words.{table}.{value}")
    except (KeyError, TypeError):
        return value


def _line(raw: str) -> int | None:
    """The line number posted (empty or 0: the whole order); ``ValueError`` when not a number."""
    raw = raw.strip()
    if not raw or raw == "0":
        return None
    if not raw.isdigit() or len(raw) > 6:
        raise ValueError(raw)
    return int(raw)


@blueprint.post("/orders/<number>/refund")
@guard(Area.ORDERS, write=True)
async def order_refund(number: str) -> Any:
    form = await request.form
    why = form.get("reason", "").replace("\x00", "")  # PostgreSQL refuses a NUL in text
    manual = form.get("manual", "") == "1"
    try:
        line_no = _line(form.get("line", ""))
    except ValueError:
        return await _order_page(number, error=text("console_orders.bad_line"), status=400)
    try:
        # Support staff refund up to the limit the owner gave them (Forbidden past it).
        await core().staff.require_order_refund(me().user_id, number, line_no)
        result = await core().sales.refund_order(number, line_no=line_no, reason=why, actor=me().actor, manual=manual)
    except RefundNotSupported:
        offer = {"line": line_no or 0, "reason": why}
        return await _order_page(number, error=text("console_orders.no_refund_api"), manual_offer=offer, status=400)
    except Forbidden as exc:
        return await _order_page(number, error=reason(exc), status=403)
    except NotFound as exc:
        return await _order_page(number, error=reason(exc), status=404)
    except QuanyiError as exc:
        return await _order_page(number, error=reason(exc), status=400)
    await core().platform.record(
        audit.Entry(
            me().actor,
            "web",
            "web refund",
            "order",
            number,
            new={"line": line_no, "status": result.status, "amount": result.amount, "manual": manual},
        )
    )
    done = "already" if result.status == "already" else ("manual" if manual else "refunded")
    return redirect(url_for("console.order", number=number, done=done), 303)


@blueprint.post("/orders/<number>/resend")
@guard(Area.ORDERS, write=True)
async def order_resend(number: str) -> Any:
    try:
        await core().sales.resend_delivery(number, me().actor, front="web")
    except NotFound as exc:
        return await _order_page(number, error=reason(exc), status=404)
    except QuanyiError as exc:
        return await _order_page(number, error=reason(exc), status=400)
    return redirect(url_for("console.order", number=number, done="resent"), 303)


@blueprint.post("/orders/<number>/reveal")
@guard(Area.ORDERS, write=True)
async def order_reveal(number: str) -> Any:
    try:
        codes = await core().sales.reveal_codes(number, me().actor, front="web")
    except NotFound as exc:
        return await _order_page(number, error=reason(exc), status=404)
    except QuanyiError as exc:
        return await _order_page(number, error=reason(exc), status=400)
    body, status, _ = await page("console/order_codes.html", codes=codes)
    return Response(body, status, {"Cache-Control": "no-store", "Content-Type": "text/html; charset=utf-8"})
