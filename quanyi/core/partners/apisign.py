"""Signed requests of the partner API (and of the webhooks quanyi sends to partners).

A request carries four headers::

    X-Quanyi-Key:        the access key id (``ak_…``)
    X-Quanyi-Timestamp:  Unix seconds
    X-Quanyi-Nonce:      16-64 characters of [A-Za-z0-9_-], never used twice in the window
    X-Quanyi-Signature:  hex HMAC-SHA256(secret, canonical request)

and the canonical request is six lines joined by ``\\n``::

    METHOD            upper case: GET, POST
    PATH              the path, percent-decoded once and then percent-encoded again with
                      only A-Z a-z 0-9 - _ . ~ / left as they are (so /api/v1/orders/A%2C1
                      and /api/v1/orders/A,1 both sign as /api/v1/orders/A%2C1)
    QUERY             the query's name=value pairs sorted by name then value, each part
                      percent-encoded (RFC 3986, only A-Z a-z 0-9 - _ . ~ left as they are),
                      joined by &; empty when there is no query. A name may appear once:
                      the API refuses a repeated one (``duplicate_names``)
    TIMESTAMP         the X-Quanyi-Timestamp value
    NONCE             the X-Quanyi-Nonce value
    BODY-SHA256       hex SHA-256 of the body bytes (of the empty string for no body)

This module is pure (no database): ``quanyi.client`` and the tests sign with it, the API
checks with it. The window and the nonce store are the caller's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from quanyi.core.errors import QuanyiError

WINDOW_SECONDS = 300
KEY_HEADER = "X-Quanyi-Key"
TIMESTAMP_HEADER = "X-Quanyi-Timestamp"
NONCE_HEADER = "X-Quanyi-Nonce"
SIGNATURE_HEADER = "X-Quanyi-Signature"
ACCESS_KEY_RE = re.compile(r"^ak_[A-Za-z0-9]{16,36}$")
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")


def canonical_query(query: str) -> str:
    """The query string in the signed form: pairs sorted, every part RFC 3986-encoded."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))


def duplicate_names(query: str) -> list[str]:
    """Names given more than once in ``query``, decoded as the signature decodes them, in order of
    first repeat. Sorting makes ``a=1&a=2`` and ``a=2&a=1`` sign alike although a reader taking
    the first value sees two meanings: the server refuses such a query."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    return repeated


def canonical_path(path: str) -> str:
    """The path in the signed form: decoded once, then every byte but A-Z a-z 0-9 - _ . ~ and
    ``/`` percent-encoded (so any spelling of the same path signs the same)."""
    return quote(unquote(path), safe="/-_.~")


def canonical_request(method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    body_hash = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), canonical_path(path), canonical_query(query), timestamp, nonce, body_hash])


def sign(secret: str, method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = canonical_request(method, path, query, timestamp, nonce, body)
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def headers(
    access_key: str, secret: str, method: str, path: str, query: str, body: bytes, *, now: int, nonce: str | None = None
) -> dict[str, str]:
    """The four headers for one request."""
    nonce = nonce or new_nonce()
    timestamp = str(int(now))
    return {
        KEY_HEADER: access_key,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: sign(secret, method, path, query, timestamp, nonce, body),
    }


@dataclass(frozen=True)
class Presented:
    """The signing headers of a request, checked for shape (not yet for truth)."""

    access_key: str
    timestamp: int
    nonce: str
    signature: str


class SignatureError(QuanyiError):
    """Why a request's signature is refused; ``code`` is the API error code (``unauthorized``,
    ``stale_request``, ``bad_signature``, ``replayed_nonce``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def presented(request_headers: Mapping[str, str] | Any) -> Presented:
    """The four headers, each checked for shape; ``SignatureError`` names the first wrong one."""
    values = {
        name: (request_headers.get(name) or "").strip()
        for name in (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise SignatureError("unauthorized", f"missing header {missing[0]}")
    if not ACCESS_KEY_RE.fullmatch(values[KEY_HEADER]):
        raise SignatureError("unauthorized", f"{KEY_HEADER} is not an access key id")
    if not TIMESTAMP_RE.fullmatch(values[TIMESTAMP_HEADER]):
        raise SignatureError("unauthorized", f"{TIMESTAMP_HEADER} must be Unix seconds")
    if not NONCE_RE.fullmatch(values[NONCE_HEADER]):
        raise SignatureError("unauthorized", f"{NONCE_HEADER} must be 16-64 characters of A-Z a-z 0-9 _ -")
    if not SIGNATURE_RE.fullmatch(values[SIGNATURE_HEADER]):
        raise SignatureError("unauthorized", f"{SIGNATURE_HEADER} must be 64 lower-case hex digits")
    return Presented(values[KEY_HEADER], int(values[TIMESTAMP_HEADER]), values[NONCE_HEADER], values[SIGNATURE_HEADER])


def check_window(timestamp: int, now: float, window: int = WINDOW_SECONDS) -> None:
    if abs(now - timestamp) > window:
        raise SignatureError("stale_request", f"the timestamp is more than {window} seconds from the server's clock")


def matches(secret: str, p: Presented, method: str, path: str, query: str, body: bytes) -> bool:
    """Constant-time comparison of the presented signature with the one ``secret`` makes."""
    expected = sign(secret, method, path, query, str(p.timestamp), p.nonce, body)
    return hmac.compare_digest(expected, p.signature)
