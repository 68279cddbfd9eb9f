"""The generic signed JSON-over-HTTP supplier protocol and the adapter that speaks it.

docs/suppliers.md is the specification; this module and ``sim.py`` are its two ends.
Every request we send and every callback we receive carries ``X-Quanyi-Timestamp`` and
``X-Quanyi-Signature`` = hex HMAC-SHA256(secret, timestamp + "." + body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from quanyi.core.errors import CallbackRejected, MalformedJson, SupplierError, SupplierOrderUnknown
from quanyi.core.payments._http import request_json
from quanyi.core.platform.jsonsafe import loads_limited
from quanyi.core.suppliers.base import (
    ORDER_NUMBER,
    STATES,
    RechargeRequest,
    Supplier,
    SupplierResult,
    check_order_number,
    plain_text,
)

TIMESTAMP_HEADER = "X-Quanyi-Timestamp"
SIGNATURE_HEADER = "X-Quanyi-Signature"
WINDOW_SECONDS = 300
REASON_LIMIT = 200

_TIMESTAMP = re.compile(r"\d{1,12}", re.ASCII)
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}", re.ASCII)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}


def query_body(order_number: str) -> bytes:
    """A query is a GET without a body: it signs its order number instead, so a signed query
    cannot be replayed to read another order."""
    return order_number.encode()


def verify_signature(headers: Mapping[str, str], body: bytes, secret: str, now: float) -> None:
    """Raise ``CallbackRejected`` unless ``headers`` sign ``body`` with ``secret`` within the window."""
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if timestamp is None or signature is None:
        raise CallbackRejected("missing signature headers")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise CallbackRejected("timestamp is not whole seconds")
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        raise CallbackRejected("timestamp outside the allowed window")
    if not _HEX_SIGNATURE.fullmatch(signature):
        raise CallbackRejected("signature is not hex HMAC-SHA256")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.lower().encode()):
        raise CallbackRejected("bad signature")


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def decode(body: bytes) -> dict[str, Any] | None:
    """The JSON object in ``body``, or None when it is not one (NaN and Infinity are not JSON;
    nesting deeper than ``jsonsafe.MAX_DEPTH`` is refused unparsed)."""
    try:
        data = loads_limited(body)
    except MalformedJson:
        return None
    return data if isinstance(data, dict) else None


def read_order(data: Mapping[str, Any]) -> SupplierResult:
    """An order object as the protocol defines it; raises ``ValueError`` naming what is wrong."""
    number = data.get("order_number")
    if not isinstance(number, str) or not ORDER_NUMBER.fullmatch(number):
        raise ValueError("order_number is missing or malformed")
    supplier_order_id = data.get("supplier_order_id")
    if not plain_text(supplier_order_id, 128):
        raise ValueError("supplier_order_id is missing or malformed")
    state = data.get("state")
    if state not in STATES:
        raise ValueError("state is not processing, success or failed")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("reason is not text")
    amount = data.get("amount")
    if amount is not None and (not isinstance(amount, int) or isinstance(amount, bool)):
        raise ValueError("amount is not a whole number of minor units")
    if data.get("currency") is not None and not isinstance(data.get("currency"), str):
        raise ValueError("currency is not text")
    return SupplierResult(
        order_number=number,
        supplier_order_id=supplier_order_id,
        state=state,
        reason=reason[:REASON_LIMIT] if reason else None,
        raw=dict(data),
    )


class GenericSupplier(Supplier):
    def __init__(
        self,
        name: str,
        base_url: str,
        secret: str,
        *,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self.timeout_seconds = timeout_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return f"GenericSupplier(name={self.name!r})"

    async def place(self, request: RechargeRequest) -> SupplierResult:
        payload = {
            "order_number": request.order_number,
            "product_code": request.product_code,
            "account": request.account,
            "amount": request.amount,
            "currency": request.currency,
            "callback_url": request.callback_url,
        }
        what = f"{self.name} supplier place"
        status, data = await self._call("POST", "/orders", encode(payload), what)
        if status == 409:
            raise SupplierError(f"{what}: this order number was placed before with other terms", status=status)
        if status not in (200, 201):
            raise SupplierError(_refused(what, status, data), status=status)
        result = _answered_order(data, what)
        if result.order_number != request.order_number:
            raise SupplierError(f"{what} answered for another order")
        if data.get("amount", request.amount) != request.amount or data.get("currency", request.currency) != (
            request.currency
        ):
            raise SupplierError(f"{what} answered with another amount or currency")
        return result

    async def query(self, order_number: str) -> SupplierResult:
        check_order_number(order_number)
        what = f"{self.name} supplier query"
        status, data = await self._call("GET", f"/orders/{order_number}", query_body(order_number), what)
        if status == 404:
            raise SupplierOrderUnknown(f"{what}: the supplier has no order {order_number}", status=status)
        if status != 200:
            raise SupplierError(_refused(what, status, data), status=status)
        result = _answered_order(data, what)
        if result.order_number != order_number:
            raise SupplierError(f"{what} answered for another order")
        return result

    def parse_callback(self, headers: Mapping[str, str], raw_body: bytes) -> SupplierResult:
        verify_signature(headers, raw_body, self._secret, self._clock())
        try:
            data = loads_limited(raw_body)
        except MalformedJson as exc:  # its stable code is the callback's answer
            raise CallbackRejected(exc.message, code=exc.code) from None
        if not isinstance(data, dict):
            raise CallbackRejected("body is not a JSON object")
        try:
            return read_order(data)
        except ValueError as exc:
            raise CallbackRejected(str(exc)) from None

    async def _call(self, method: str, path: str, signed: bytes, what: str) -> tuple[int, dict[str, Any]]:
        headers = signed_headers(self._secret, signed, self._clock())
        if method == "POST":
            headers["Content-Type"] = "application/json"
        return await request_json(
            method,
            self.base_url + path,
            what=what,
            error=SupplierError,
            timeout_seconds=self.timeout_seconds,
            headers=headers,
            content=signed if method == "POST" else None,
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # A plain dict from a test or another server keeps the sender's spelling of the name.
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _refused(what: str, status: int, data: Mapping[str, Any]) -> str:
    # Only the supplier's error code, when it is a plain token: its free text may echo our request.
    code = data.get("error")
    detail = f" ({code})" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
    return f"{what} answered HTTP {status}{detail}"


def _answered_order(data: Mapping[str, Any], what: str) -> SupplierResult:
    try:
        return read_order(data)
    except ValueError as exc:
        raise SupplierError(f"{what} answered a malformed order: {exc}") from None
