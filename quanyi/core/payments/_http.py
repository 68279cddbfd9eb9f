"""One HTTP call to a payment provider's API, the same way for every provider.

Errors name the call and what failed, never the URL or the provider's text: a URL may
carry a merchant key or a bot token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from quanyi.core.errors import QuanyiError
from quanyi.core.platform.jsonsafe import loads_limited


async def request_json(
    http_method: str,
    url: str,
    *,
    what: str,
    error: type[QuanyiError],
    timeout_seconds: float,
    json: Mapping[str, Any] | None = None,
    data: Sequence[tuple[str, str]] | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """Returns the HTTP status and the JSON object answered; raises ``error`` otherwise.

    ``content`` is sent byte for byte (a signed request must send exactly the bytes it signed).
    """
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as client:
            async with client.request(
                http_method,
                url,
                json=dict(json) if json is not None else None,
                data=content if content is not None else (list(data) if data else None),
                params=dict(params) if params is not None else None,
                headers=dict(headers or {}),
            ) as response:
                status = response.status
                try:
                    body = loads_limited(await response.read())
                except QuanyiError:  # not JSON, or nested past the limit: no answer we can use
                    body = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise error(f"{what} failed ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise error(f"{what} answered HTTP {status} without a JSON object")
    return status, body
