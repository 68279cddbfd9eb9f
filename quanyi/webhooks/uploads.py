"""Large request bodies for the console's uploads (``/admin/upload/``), held in constant memory.

Quart reads a request's body in a task of its own as fast as the server hands it over and keeps
what the view has not taken yet, so a client faster than the view (a stock file from the same
machine, a view still checking the session) would pile the file up in memory. Here an upload's
body says when more than ``HIGH_WATER`` bytes wait, and the ASGI ``receive`` the app is given
waits until the view has taken them: the server stops reading the socket, and TCP slows the
client down. Its size limit is set when the request arrives (raised later, in a hook, Quart would
already have dropped what came past 64 KB)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from quart import Request
from quart.wrappers.request import Body

UPLOAD_PREFIX = "/admin/upload/"
HIGH_WATER = 1024 * 1024  # bytes an upload may hold in memory before the server stops reading
SCOPE_KEY = "quanyi.upload_body"


class UploadBody(Body):
    """A body that tells ``paced_receive`` whether the view has taken what arrived."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.drained = asyncio.Event()
        self.drained.set()
        self.whole = False  # awaited whole (``get_data``): then it is never paced

    def append(self, data: bytes) -> None:
        super().append(data)
        if not self.whole and len(self._data) >= HIGH_WATER:
            self.drained.clear()

    def __await__(self) -> Generator[Any, None, Any]:
        self.whole = True
        self.drained.set()
        return super().__await__()

    def set_complete(self) -> None:
        super().set_complete()
        self.drained.set()

    async def __anext__(self) -> bytes:
        try:
            return await super().__anext__()
        finally:
            self.drained.set()


def request_class(upload_limit: int) -> type[Request]:
    """Requests with their body limit set on arrival: ``upload_limit`` under ``UPLOAD_PREFIX``
    (an ``UploadBody``, found by the ASGI wrapper through the scope), Quart's own elsewhere."""

    class QuanyiRequest(Request):
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            upload = path.startswith(UPLOAD_PREFIX)
            if upload:
                self.body_class = UploadBody
                kwargs["max_content_length"] = upload_limit
                kwargs["body_timeout"] = 600
            super().__init__(method, scheme, path, *args, **kwargs)
            if upload:
                kwargs["scope"][SCOPE_KEY] = self.body

    return QuanyiRequest


class PacedUploads:
    """ASGI wrapper: an upload's next piece is received only once the view has taken the last."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(UPLOAD_PREFIX):
            await self.app(scope, receive, send)
            return

        async def paced_receive() -> Any:
            body = scope.get(SCOPE_KEY)
            if isinstance(body, UploadBody):
                await body.drained.wait()
            return await receive()

        await self.app(scope, paced_receive, send)
