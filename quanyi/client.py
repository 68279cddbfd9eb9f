"""A small client of quanyi's partner API, standard library only: partners may copy this file.

It signs like ``quanyi.core.partners.apisign`` (the signing is duplicated on purpose so the file stands
alone; ``tests/test_api_client.py`` proves both sign alike). Errors raise ``ApiError``. A
``create_order`` that fails to connect is sent again with the same ``order_no``: the API is
idempotent by that number, so a retry never buys twice. See docs/api.md.

From a shell::

    export QUANYI_API_SECRET=sk_...
    python -m quanyi.client --base https://shop.example --key ak_... products
    python -m quanyi.client --base https://shop.example --key ak_... create PO-1 VIP --quantity 2
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = ["ApiError", "QuanyiClient", "sign", "verify_webhook"]

WINDOW_SECONDS = 300
_RETRY_STATUSES = {500, 502, 503, 504}


# --- signing: a deliberate copy of quanyi/core/partners/apisign.py ---------------------------
# This client is one stand-alone stdlib file a partner may copy into their own system, so it cannot
# import the server's package; tests/test_api_client.py proves both sign alike.


def canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))


def canonical_path(path: str) -> str:
    """The path in the signed form: decoded once, then every byte but A-Z a-z 0-9 - _ . ~ and
    ``/`` percent-encoded (so any spelling of the same path signs the same)."""
    return quote(unquote(path), safe="/-_.~")


def canonical_request(method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    body_hash = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), canonical_path(path), canonical_query(query), timestamp, nonce, body_hash])


def sign(secret: str, method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical request with the secret."""
    message = canonical_request(method, path, query, timestamp, nonce, body)
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_headers(
    access_key: str, secret: str, method: str, path: str, query: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_urlsafe(18)
    return {
        "X-Quanyi-Key": access_key,
        "X-Quanyi-Timestamp": timestamp,
        "X-Quanyi-Nonce": nonce,
        "X-Quanyi-Signature": sign(secret, method, path, query, timestamp, nonce, body),
    }


_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")


def verify_webhook(
    secret: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    window: int = WINDOW_SECONDS,
) -> bool:
    """True when a webhook quanyi sent is signed with ``secret`` and within the time window.

    ``path`` and ``query`` are those of your webhook URL as the request reached you, ``body``
    the raw bytes (before any JSON parsing). Remember ``X-Quanyi-Delivery`` (or the nonce) to
    drop a delivery you already handled: quanyi sends again until it sees a 2xx answer.
    """
    found = {name.lower(): (value or "").strip() for name, value in headers.items()}
    timestamp = found.get("x-quanyi-timestamp", "")
    nonce = found.get("x-quanyi-nonce", "")
    signature = found.get("x-quanyi-signature", "")
    if not (_TIMESTAMP_RE.match(timestamp) and _NONCE_RE.match(nonce) and _SIGNATURE_RE.match(signature)):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > window:
        return False
    expected = sign(secret, method, path, query, timestamp, nonce, body)
    return hmac.compare_digest(expected, signature)


# --- the client ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than 2xx: ``code`` is the API's stable error code (docs/api.md).

    ``status`` 0 with code ``connection_failed``: no answer at all (after the retries). For a
    ``create_order`` the outcome is then unknown: ask ``order(order_no)`` or create again with
    the same ``order_no``.
    """

    def __init__(self, status: int, code: str, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = dict(body or {})


class QuanyiClient:
    """Synchronous client; one instance may be shared by threads (it keeps no connection)."""

    def __init__(
        self,
        base_url: str,
        access_key: str,
        secret: str,
        timeout: float = 10,
        *,
        retries: int = 2,
        retry_delay: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_key = access_key
        self._secret = secret
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay

    def __repr__(self) -> str:  # never shows the secret
        return f"QuanyiClient({self.base_url!r}, {self.access_key!r})"

    # The endpoints.

    def products(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/products")["products"])

    def create_order(
        self,
        order_no: str,
        sku: str | None = None,
        quantity: int = 1,
        account: str | None = None,
        client_ip: str | None = None,
        device_id: str | None = None,
        *,
        items: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Buy ``quantity`` of ``sku`` — or several products, ``items=[{"sku": ..., "quantity": ...,
        "account": ...}, ...]`` — paid from the balance. Safe to repeat with the same ``order_no``
        and arguments (the same order comes back); other arguments: 409 conflict."""
        if (sku is None) == (items is None):
            raise ValueError("give sku or items")
        body: dict[str, Any] = {"order_no": order_no}
        if items is not None:
            body["items"] = items
        else:
            body.update(sku=sku, quantity=quantity)
            if account is not None:
                body["account"] = account
        for name, value in (("client_ip", client_ip), ("device_id", device_id)):
            if value is not None:
                body[name] = value
        return self._call("POST", "/api/v1/orders", body=body, retry=True)

    def order(self, order_no: str) -> dict[str, Any]:
        return self._call("GET", "/api/v1/orders/" + quote(order_no, safe=""))

    def balance(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/balance")

    def statement(self, from_: str | None = None, to: str | None = None) -> dict[str, Any]:
        """Balance movements; days ``YYYY-MM-DD`` (default: the last seven days)."""
        query = {name: value for name, value in (("from", from_), ("to", to)) if value is not None}
        return self._call("GET", "/api/v1/statement", query=query)

    def verify(self, token: str) -> dict[str, Any]:
        return self._call("POST", "/api/v1/redeem/verify", body={"token": token}, retry=True)

    def consume(self, token: str) -> dict[str, Any]:
        # Not retried: a lost answer may have taken the use; verify() tells.
        return self._call("POST", "/api/v1/redeem/consume", body={"token": token}, retry=False)

    # The transport.

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        retry: bool | None = None,
    ) -> dict[str, Any]:
        data = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        # A mapping, so each name goes once: the server refuses a repeated one (duplicate_parameter).
        query_text = urlencode(query or {}, quote_via=quote)
        url = self.base_url + path + ("?" + query_text if query_text else "")
        signed_path = urlsplit(url).path  # with the base URL's own prefix, as the server sees it
        attempts = 1 + (self.retries if (method == "GET" if retry is None else retry) else 0)
        for attempt in range(attempts):
            # A fresh timestamp and nonce each time: a nonce is accepted once.
            headers = signed_headers(self.access_key, self._secret, method, signed_path, query_text, data)
            headers.update({"Content-Type": "application/json", "Accept": "application/json"})
            request = urllib.request.Request(
                url, data=data if method != "GET" else None, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _json(response.read()) or {}
            except urllib.error.HTTPError as exc:
                error = _api_error(exc.code, exc.read())
                if exc.code not in _RETRY_STATUSES or attempt + 1 == attempts:
                    raise error from None
            except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, DNS
                if attempt + 1 == attempts:
                    reason = getattr(exc, "reason", exc)
                    raise ApiError(0, "connection_failed", f"{type(reason).__name__}: {reason}") from None
            time.sleep(self.retry_delay * 2**attempt)
        raise AssertionError("unreachable")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return None


def _api_error(status: int, raw: bytes) -> ApiError:
    body = _json(raw)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return ApiError(status, body["error"], str(body.get("message", "")), body)
    text = raw[:200].decode("utf-8", "replace").strip()
    return ApiError(status, "http_error", text or f"HTTP {status}")


# --- python -m quanyi.client -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quanyi.client", description="Call quanyi's partner API.")
    parser.add_argument("--base", default=os.environ.get("QUANYI_API_BASE"), help="e.g. https://shop.example")
    parser.add_argument("--key", default=os.environ.get("QUANYI_API_KEY"), help="access key id ak_...")
    parser.add_argument("--secret", help="the secret sk_... (better: env QUANYI_API_SECRET)")
    parser.add_argument("--timeout", type=float, default=10)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("products")
    commands.add_parser("balance")
    order = commands.add_parser("order")
    order.add_argument("order_no")
    create = commands.add_parser("create")
    create.add_argument("order_no")
    create.add_argument("sku")
    create.add_argument("--quantity", type=int, default=1)
    create.add_argument("--account")
    statement = commands.add_parser("statement")
    statement.add_argument("--from", dest="from_")
    statement.add_argument("--to")
    for name in ("verify", "consume"):
        commands.add_parser(name).add_argument("token")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    secret = args.secret or os.environ.get("QUANYI_API_SECRET")
    if not (args.base and args.key and secret):
        print("error: --base, --key and a secret (--secret or QUANYI_API_SECRET) are needed", file=sys.stderr)
        return 2
    client = QuanyiClient(args.base, args.key, secret, timeout=args.timeout)
    calls = {
        "products": lambda: {"products": client.products()},
        "balance": client.balance,
        "order": lambda: client.order(args.order_no),
        "create": lambda: client.create_order(args.order_no, args.sku, args.quantity, args.account),
        "statement": lambda: client.statement(args.from_, args.to),
        "verify": lambda: client.verify(args.token),
        "consume": lambda: client.consume(args.token),
    }
    try:
        answer = calls[args.command]()
    except ApiError as exc:
        print(f"error: {exc.code} (HTTP {exc.status}): {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(answer, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
