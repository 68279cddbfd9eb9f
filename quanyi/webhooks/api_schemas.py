"""JSON schemas of the partner API's bodies (OpenAPI 3.1 / JSON Schema 2020-12).

Amounts are integers in the currency's minor units (fen, cents); times are ISO 8601 with an
offset. The API's answers are checked against these in the tests (``tests/test_api_fuzz.py``).
"""

from __future__ import annotations

from typing import Any

_TIME = {"type": ["string", "null"], "format": "date-time"}
_MONEY = {"type": "integer", "description": "minor units of the currency (fen, cents)"}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "stable error code"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "the request field that is wrong"},
        "decision_id": {"type": "integer", "description": "the risk decision an operator reviews"},
    },
}

PRODUCT: dict[str, Any] = {
    "type": "object",
    "required": ["sku", "name", "kind", "price", "currency", "available", "needs_account"],
    "properties": {
        "sku": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["card_key", "redeem_link", "direct_recharge", "bundle", "manual"]},
        "price": _MONEY,
        "currency": {"type": "string"},
        "available": {"type": ["integer", "null"], "description": "units left; null: no cap"},
        "needs_account": {"type": "boolean"},
        "account_hint": {"type": ["string", "null"]},
    },
}
PRODUCTS: dict[str, Any] = {
    "type": "object",
    "required": ["products"],
    "properties": {"products": {"type": "array", "items": PRODUCT}},
}

_SKU = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
_QUANTITY = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1}
_ACCOUNT = {"type": "string", "maxLength": 128, "description": "the account a direct recharge credits"}
ORDER_ITEM: dict[str, Any] = {
    "type": "object",
    "required": ["sku"],
    "additionalProperties": False,
    "properties": {"sku": _SKU, "quantity": _QUANTITY, "account": _ACCOUNT},
}
ORDER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["order_no"],
    "additionalProperties": False,
    "description": "one product (sku, quantity, account) or several (items); not both",
    "oneOf": [{"required": ["sku"]}, {"required": ["items"]}],
    "properties": {
        "order_no": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.:-]{1,64}$",
            "description": "the partner's own order number: the idempotency key",
        },
        "sku": _SKU,
        "quantity": _QUANTITY,
        "account": _ACCOUNT,
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 20,
            "items": ORDER_ITEM,
            "description": "several products in one order, each once, priced and paid together",
        },
        "client_ip": {"type": "string", "maxLength": 64, "description": "the end customer's IP (risk rules)"},
        "device_id": {"type": "string", "maxLength": 128, "description": "the end customer's device (risk rules)"},
    },
}

_LINK = {
    "type": "object",
    "required": ["url", "entitlement", "uses", "max_uses", "expires_at", "state"],
    "properties": {
        "url": {"type": "string"},
        "entitlement": {"type": "string"},
        "uses": {"type": "integer"},
        "max_uses": {"type": "integer"},
        "expires_at": _TIME,
        "state": {"type": "string"},
    },
}
_CODE = {
    "type": "object",
    "required": ["serial", "code"],
    "properties": {"serial": {"type": ["string", "null"]}, "code": {"type": "string"}},
}
_LINE = {
    "type": "object",
    "required": ["line_no", "sku", "name", "quantity", "amount"],
    "properties": {
        "line_no": {"type": "integer"},
        "sku": {"type": "string"},
        "name": {"type": "string"},
        "quantity": {"type": "integer"},
        "amount": _MONEY,
        "codes": {"type": "array", "items": _CODE},
        "links": {"type": "array", "items": _LINK},
        "recharge": {
            "type": "object",
            "required": ["status", "account"],
            "properties": {
                "status": {"type": "string"},
                "account": {"type": "string"},
                "resolution": {"type": "string", "description": "after a failure: refunded | fallback | …"},
                "fallback": {
                    "type": "object",
                    "description": "the card key delivered instead of a failed recharge",
                    "required": ["number", "sku", "codes"],
                    "properties": {
                        "number": {"type": "string"},
                        "sku": {"type": ["string", "null"]},
                        "codes": {"type": "array", "items": _CODE},
                    },
                },
            },
        },
    },
}
ORDER_STATUSES = ["pending", "paid", "delivered", "failed", "cancelled", "refunded"]
ORDER: dict[str, Any] = {
    "type": "object",
    "required": [
        "order_no",
        "number",
        "status",
        "currency",
        "amount",
        "list_amount",
        "discount_amount",
        "refunded_amount",
        "failure_reason",
        "created_at",
        "paid_at",
        "delivered_at",
        "lines",
    ],
    "properties": {
        "order_no": {"type": "string"},
        "number": {"type": "string", "description": "quanyi's order number"},
        "status": {"type": "string", "enum": ORDER_STATUSES},
        "currency": {"type": "string"},
        "amount": _MONEY,
        "list_amount": _MONEY,
        "discount_amount": _MONEY,
        "refunded_amount": _MONEY,
        "failure_reason": {"type": ["string", "null"]},
        "created_at": _TIME,
        "paid_at": _TIME,
        "delivered_at": _TIME,
        "lines": {"type": "array", "items": _LINE},
    },
}

BALANCE: dict[str, Any] = {
    "type": "object",
    "required": ["partner", "currency", "balance"],
    "properties": {"partner": {"type": "string"}, "currency": {"type": "string"}, "balance": _MONEY},
}

STATEMENT: dict[str, Any] = {
    "type": "object",
    "required": ["currency", "from", "to", "opening_balance", "closing_balance", "lines"],
    "properties": {
        "currency": {"type": "string"},
        "from": {"type": "string", "format": "date"},
        "to": {"type": "string", "format": "date"},
        "opening_balance": _MONEY,
        "closing_balance": _MONEY,
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "kind", "amount", "order_no", "ref"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "kind": {"type": "string"},
                    "amount": {"type": "integer", "description": "into the balance positive, out negative"},
                    "order_no": {"type": ["string", "null"]},
                    "ref": {"type": "string"},
                },
            },
        },
    },
}

TOKEN_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["token"],
    "properties": {"token": {"type": "string", "description": "the code, or the whole /r/<code> link"}},
}
TOKEN: dict[str, Any] = {
    "type": "object",
    "required": ["valid", "state", "product", "entitlement", "uses_left", "max_uses", "expires_at"],
    "properties": {
        "valid": {"type": "boolean"},
        "state": {"type": "string"},
        "product": {"type": "string"},
        "entitlement": {"type": "string"},
        "uses_left": {"type": "integer"},
        "max_uses": {"type": "integer"},
        "expires_at": _TIME,
        "use_no": {"type": "integer"},
    },
}

WEBHOOK_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "order"],
    "properties": {
        "event": {"type": "string", "enum": ["order.delivered", "order.failed", "order.refunded"]},
        "sent_at": {"type": "string", "format": "date-time"},
        "order": {
            "type": "object",
            "required": ["order_no", "number", "status", "currency", "amount", "refunded_amount", "failure_reason"],
            "properties": {
                "order_no": {"type": "string"},
                "number": {"type": "string"},
                "status": {"type": "string"},
                "currency": {"type": "string"},
                "amount": _MONEY,
                "refunded_amount": _MONEY,
                "failure_reason": {"type": ["string", "null"]},
            },
        },
    },
}
