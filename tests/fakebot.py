"""A fake Telegram Bot API server for tests: the real aiogram client talks HTTP to it.

URL shape ``{base}/bot{token}/{method}`` (aiogram's ``TelegramAPIServer.from_base``).
Every call is recorded. Updates are queued for ``getUpdates`` long polling (or built
for a test to post to a webhook). Outgoing texts are checked the way Telegram checks
them (HTML parse mode, 4096 characters, 64-byte callback data), so a message that the
real Telegram would refuse is refused here too, with the real error shape.
"""

# Waiting helpers take timeout= like the Bot API's own long polling; that is their job here.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_TOKEN = "123:ABC"
BOT_USER = {"id": 123, "is_bot": True, "first_name": "Quanyi Test", "username": "quanyi_test_bot"}
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
# Fields aiogram sends JSON-encoded inside a form body.
JSON_FIELDS = {
    "reply_markup",
    "allowed_updates",
    "commands",
    "scope",
    "link_preview_options",
    "entities",
    "caption_entities",
    "reply_parameters",
    "prices",
    "suggested_tip_amounts",
}
# Tags Telegram's HTML parse mode knows.
HTML_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*)?>|&(#\d+|#x[0-9a-fA-F]+|lt|gt|amp|quot);|[<&]")

FAILURES: dict[str, tuple[int, str]] = {
    "429": (429, "Too Many Requests: retry after {retry_after}"),
    "500": (500, "Internal Server Error"),
    "403": (403, "Forbidden: bot was blocked by the user"),
    "400": (400, "Bad Request: chat not found"),
}


class Upload(bytes):
    """The bytes of a file the client uploaded, with the file name it gave."""

    filename: str = ""


class TelegramError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def visible_text(text: str, parse_mode: str | None) -> str:
    """What the user sees of ``text``; raises TelegramError where Telegram would refuse it."""
    if (parse_mode or "").upper() != "HTML":
        return text
    out: list[str] = []
    open_tags: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        closing, tag, _attrs, entity = match.groups()
        if tag is not None:
            tag = tag.lower()
            if tag not in HTML_TAGS:
                raise TelegramError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')
            if closing:
                if not open_tags or open_tags[-1] != tag:
                    raise TelegramError(400, f'Bad Request: can\'t parse entities: Unexpected end tag "{tag}"')
                open_tags.pop()
            else:
                open_tags.append(tag)
        elif entity is not None:
            out.append(html.unescape(match.group(0)))
        else:
            raise TelegramError(
                400, f"Bad Request: can't parse entities: Unexpected {match.group(0)!r} at byte offset {match.start()}"
            )
    out.append(text[pos:])
    if open_tags:
        raise TelegramError(
            400, f"Bad Request: can't parse entities: Can't find end tag corresponding to \"{open_tags[-1]}\""
        )
    return "".join(out)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str
    at: float
    status: int = 200
    description: str = ""
    done: bool = False  # the answer has been written


@dataclass
class BotMessage:
    """One message the bot sent (``send``, ``photo``, ``document``) or a new version of one (``edit``)."""

    kind: str
    chat_id: int
    message_id: int
    text: str
    plain: str
    reply_markup: dict[str, Any] | None
    at: float
    raw: dict[str, Any] = field(default_factory=dict)

    def buttons(self) -> list[dict[str, Any]]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]

    def button(self, text: str | None = None, *, data: str | None = None) -> dict[str, Any]:
        """The button with this callback data, or whose label is or contains ``text`` (exactly one)."""
        buttons = self.buttons()
        if data is not None:
            found = [b for b in buttons if b.get("callback_data") == data]
        else:
            assert text is not None, "give text or data"
            found = [b for b in buttons if b.get("text") == text] or [b for b in buttons if text in b.get("text", "")]
        if len(found) != 1:
            labels = [b.get("text") for b in buttons]
            raise AssertionError(f"expected one button matching {text or data!r}, found {len(found)} in {labels}")
        return found[0]


class FakeTelegram:
    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: list[BotMessage] = []
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.webhook: dict[str, Any] | None = None
        self.pushed_callbacks: list[str] = []
        self._current: dict[tuple[int, int], dict[str, Any]] = {}  # latest version of each bot message
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._failures: dict[str, list[tuple[str, int, int | None]]] = {}
        self._delays: dict[str, float] = {}
        # Real Telegram refuses URL buttons to loopback hosts; tests opt in to that check.
        self.refuse_local_urls = False
        # Refusals a test provokes on purpose, by description; the shop fixture ignores them.
        self.expected_refusals: set[str] = set()
        # Telegram Stars: pre-checkout answers by query id, invoices sent, charges made.
        self.pre_checkout_answers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, message) -> sendInvoice params
        self.star_charges: dict[str, dict[str, Any]] = {}  # charge id -> user_id, amount, payload, refunded
        self.documents: dict[tuple[int, int], Upload] = {}  # (chat, message) -> the uploaded file
        self.photos: dict[tuple[int, int], Upload] = {}  # (chat, message) -> the uploaded image
        self.user_files: dict[str, bytes] = {}  # file_id -> bytes of a document a user sent the bot
        # Telegram tells the bot of a refund it made too (a refunded_payment service message).
        self.echo_star_refunds = True
        self.allowed_updates: list[str] | None = None  # as the last getUpdates asked
        self._pre_checkout_ids = itertools.count(1)
        self._charge_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.base = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests drive ----------------------------------------------------------------------

    def user(self, user_id: int, language_code: str | None = "zh", first_name: str = "Buyer") -> FakeUser:
        return FakeUser(self, user_id, language_code, first_name)

    async def push_update(self, update: dict[str, Any]) -> None:
        """Queue an update (already holding its update_id) for getUpdates."""
        if "callback_query" in update:
            self.pushed_callbacks.append(str(update["callback_query"]["id"]))
        self._updates.append(update)
        await self._notify()

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def fail_next(
        self,
        times: int = 1,
        error: str = "500",
        *,
        method: str = "sendMessage",
        retry_after: int = 1,
        after: int = 0,
        chat_id: int | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` (after ``after`` that succeed) fail with ``error``:
        429, 500, 403 or 400 (chat not found); with ``chat_id``, only calls to that chat count
        (senders that work on several chats at once reach Telegram in no fixed order)."""
        assert error in FAILURES, error
        queue = self._failures.setdefault(method, [])
        queue.extend([("ok", 0, chat_id)] * after)
        queue.extend([(error, retry_after, chat_id)] * times)

    def slow_down(self, method: str, seconds: float) -> None:
        """Answer ``method`` only after ``seconds`` (to make concurrent callers overlap)."""
        self._delays[method] = seconds

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def messages_to(self, chat_id: int, *, kinds: tuple[str, ...] = ("send", "photo", "document")) -> list[BotMessage]:
        return [m for m in self.messages if m.chat_id == chat_id and m.kind in kinds]

    def mark(self) -> int:
        return len(self.messages)

    async def wait_for(
        self,
        predicate: Callable[[BotMessage], bool] | None = None,
        *,
        chat_id: int | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> BotMessage:
        """The first bot message (send or edit) after ``since`` to ``chat_id`` matching ``predicate``."""

        def find() -> BotMessage | None:
            for message in self.messages[since:]:
                if (chat_id is None or message.chat_id == chat_id) and (predicate is None or predicate(message)):
                    return message
            return None

        found = await self._wait(find, timeout)
        if found is None:
            seen = [(m.kind, m.chat_id, m.plain[:80]) for m in self.messages[since:]]
            raise AssertionError(f"no matching bot message to chat {chat_id} within {timeout}s; saw {seen}")
        return found

    async def wait_call(
        self, method: str, predicate: Callable[[Call], bool] | None = None, *, timeout: float = 5.0
    ) -> Call:
        def find() -> Call | None:
            for call in self.calls:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            return None

        found = await self._wait(find, timeout)
        if found is None:
            raise AssertionError(f"no {method} call within {timeout}s; calls: {[c.method for c in self.calls]}")
        return found

    async def finished(self, call: Call, *, timeout: float = 5.0) -> Call:
        if await self._wait(lambda: call if call.done else None, timeout) is None:
            raise AssertionError(f"{call.method} still unanswered after {timeout}s")
        return call

    async def callback_answer(self, callback_id: str, *, timeout: float = 5.0) -> dict[str, Any]:
        found = await self._wait(lambda: self.callback_answers.get(callback_id), timeout)
        if found is None:
            raise AssertionError(f"callback query {callback_id} was not answered within {timeout}s")
        return found

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds, re-checked after every call the server sees."""
        if await self._wait(lambda: True if condition() else None, timeout) is None:
            raise AssertionError(f"condition still false after {timeout}s")

    def current(self, message: BotMessage) -> dict[str, Any]:
        """The message as it is now in the chat (after any edits), in Bot API shape."""
        return self._current[(message.chat_id, message.message_id)]

    async def _wait(self, find: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        async with self._changed:
            while (found := find()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    return find()
            return found

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the Bot API ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        params = await _read_params(request)
        call = Call(method=method, params=params, token=token, at=time.monotonic())
        self.calls.append(call)
        await self._notify()
        try:
            if token != self.token:
                raise TelegramError(401, "Unauthorized")
            if delay := self._delays.get(method):
                await asyncio.sleep(delay)
            queued = self._failures.get(method)
            if queued and queued[0][2] is not None and str(queued[0][2]) != str(params.get("chat_id")):
                pass  # aimed at another chat
            elif queued and queued[0][0] == "ok":
                queued.pop(0)
            elif queued:
                error, retry_after, _ = queued.pop(0)
                code, description = FAILURES[error]
                raise TelegramError(
                    code,
                    description.format(retry_after=retry_after),
                    {"retry_after": retry_after} if error == "429" else None,
                )
            handler = getattr(self, "_api_" + method, None)
            if handler is None:
                raise TelegramError(404, "Not Found: method not found")
            result = await handler(params)
        except TelegramError as exc:
            call.status, call.description, call.done = exc.code, exc.description, True
            await self._notify()
            body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
            return web.json_response(body, status=exc.code)
        if request.transport is None or request.transport.is_closing():
            # The client hung up before the answer (it closed its session mid-request).
            call.status, call.description = 499, "client closed the request"
        call.done = True
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    async def _api_getMe(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    async def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            raise TelegramError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                "the webhook first",
            )
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        if params.get("allowed_updates") is not None:
            self.allowed_updates = list(params["allowed_updates"])
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not self._updates and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    break
        limit = int(params.get("limit") or 100)
        return self._updates[:limit]

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    async def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = params
        return True

    async def _api_setMyCommands(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        self.callback_answers[str(params["callback_query_id"])] = params
        return True

    async def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        text = str(params.get("text") or "")
        plain = self._check_text(text, params.get("parse_mode"))
        markup = self._check_markup(params.get("reply_markup"), self.refuse_local_urls)
        return self._store("send", chat_id, next(self._message_ids), text, plain, markup, {"text": text})

    async def _api_editMessageText(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        message_id = int(params.get("message_id") or 0)
        if (chat_id, message_id) not in self._current:
            raise TelegramError(400, "Bad Request: message to edit not found")
        text = str(params.get("text") or "")
        plain = self._check_text(text, params.get("parse_mode"))
        markup = self._check_markup(params.get("reply_markup"), self.refuse_local_urls)
        old = self._current[(chat_id, message_id)]
        if old.get("text") == plain and old.get("reply_markup") == markup:
            raise TelegramError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of "
                "the message",
            )
        return self._store("edit", chat_id, message_id, text, plain, markup, {"text": text})

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        """Only the inline keyboard changes; without ``reply_markup`` (or with an empty one) it goes."""
        chat_id = _chat_id(params)
        message_id = int(params.get("message_id") or 0)
        old = self._current.get((chat_id, message_id))
        if old is None:
            raise TelegramError(400, "Bad Request: message to edit not found")
        markup = self._check_markup(params.get("reply_markup"), self.refuse_local_urls)
        if markup is not None and not any(markup.get("inline_keyboard", [])):
            markup = None
        if old.get("reply_markup") == markup:
            raise TelegramError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of "
                "the message",
            )
        previous = next(m for m in reversed(self.messages) if (m.chat_id, m.message_id) == (chat_id, message_id))
        kept = {"message_id", "date", "chat", "from", "reply_markup", "edit_date"}
        content = {key: value for key, value in old.items() if key not in kept}
        return self._store("edit", chat_id, message_id, previous.text, previous.plain, markup, content)

    async def _api_sendPhoto(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        caption = str(params.get("caption") or "")
        plain = visible_text(caption, params.get("parse_mode")) if caption else ""
        photo = params.get("photo")
        if not photo:
            raise TelegramError(400, "Bad Request: there is no photo in the request")
        size = len(photo) if isinstance(photo, bytes) else 0
        extra = {
            "photo": [
                {
                    "file_id": f"photo{next(self._callback_ids)}",
                    "file_unique_id": "u",
                    "width": 1,
                    "height": 1,
                    "file_size": size,
                }
            ],
            "caption": plain,
        }
        message_id = next(self._message_ids)
        if isinstance(photo, bytes):
            self.photos[(chat_id, message_id)] = photo if isinstance(photo, Upload) else Upload(photo)
        return self._store(
            "photo",
            chat_id,
            message_id,
            caption,
            plain,
            self._check_markup(params.get("reply_markup")),
            extra,
        )

    async def _api_sendDocument(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        caption = str(params.get("caption") or "")
        plain = visible_text(caption, params.get("parse_mode")) if caption else ""
        document = params.get("document")
        if not document:
            raise TelegramError(400, "Bad Request: there is no document in the request")
        if len(plain) > CAPTION_LIMIT:
            raise TelegramError(400, "Bad Request: message caption is too long")
        file: dict[str, Any] = {"file_id": f"doc{next(self._callback_ids)}", "file_unique_id": "d"}
        if isinstance(document, Upload):
            file |= {"file_name": document.filename, "file_size": len(document)}
        message_id = next(self._message_ids)
        if isinstance(document, bytes):
            self.documents[(chat_id, message_id)] = document if isinstance(document, Upload) else Upload(document)
        return self._store(
            "document",
            chat_id,
            message_id,
            caption,
            plain,
            self._check_markup(params.get("reply_markup")),
            {"document": file, "caption": plain},
        )

    async def _api_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id") or "")
        if file_id not in self.user_files:
            raise TelegramError(400, "Bad Request: invalid file_id")
        size = len(self.user_files[file_id])
        return {"file_id": file_id, "file_unique_id": file_id, "file_size": size, "file_path": f"documents/{file_id}"}

    async def _download(self, request: web.Request) -> web.Response:
        data = self.user_files.get(request.match_info["path"].removeprefix("documents/"))
        if request.match_info["token"] != self.token or data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    def photo_of(self, message: BotMessage) -> Upload:
        """The image uploaded with a photo message."""
        return self.photos[(message.chat_id, message.message_id)]

    def document_of(self, message: BotMessage) -> Upload:
        """The file uploaded with a document message (its bytes and ``filename``)."""
        return self.documents[(message.chat_id, message.message_id)]

    async def _api_sendInvoice(self, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        title, description = str(params.get("title") or ""), str(params.get("description") or "")
        payload, currency = str(params.get("payload") or ""), str(params.get("currency") or "")
        if not 1 <= len(title) <= 32:
            raise TelegramError(400, "Bad Request: TITLE_INVALID")
        if not 1 <= len(description) <= 255:
            raise TelegramError(400, "Bad Request: DESCRIPTION_INVALID")
        if not 1 <= len(payload.encode()) <= 128:
            raise TelegramError(400, "Bad Request: INVOICE_PAYLOAD_INVALID")
        prices = params.get("prices")
        if not isinstance(prices, list) or not prices:
            raise TelegramError(400, "Bad Request: can't parse prices JSON object")
        if currency == "XTR":
            # Stars: no payment provider, exactly one price, a whole positive number of Stars.
            if params.get("provider_token"):
                raise TelegramError(400, "Bad Request: PAYMENT_PROVIDER_INVALID")
            if len(prices) != 1:
                raise TelegramError(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")
        total = 0
        for price in prices:
            amount = price.get("amount") if isinstance(price, dict) else None
            if not isinstance(amount, int) or amount <= 0 or not price.get("label"):
                raise TelegramError(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")
            total += amount
        invoice = {
            "title": title,
            "description": description,
            "start_parameter": str(params.get("start_parameter") or ""),
            "currency": currency,
            "total_amount": total,
        }
        message_id = next(self._message_ids)
        self.invoices[(chat_id, message_id)] = params
        markup = self._check_markup(params.get("reply_markup"))
        return self._store(
            "invoice", chat_id, message_id, title, f"{title}\n{description}", markup, {"invoice": invoice}
        )

    async def _api_answerPreCheckoutQuery(self, params: dict[str, Any]) -> Any:
        query_id = str(params.get("pre_checkout_query_id") or "")
        if not query_id.startswith("pcq") or query_id in self.pre_checkout_answers:
            raise TelegramError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        ok = params.get("ok") in (True, "true", "True", "1")
        if not ok and not str(params.get("error_message") or "").strip():
            raise TelegramError(400, "Bad Request: ERROR_MESSAGE_EMPTY")
        self.pre_checkout_answers[query_id] = {**params, "ok": ok, "answered_at": time.monotonic()}
        return True

    async def _api_refundStarPayment(self, params: dict[str, Any]) -> Any:
        charge_id = str(params.get("telegram_payment_charge_id") or "")
        charge = self.star_charges.get(charge_id)
        if charge is None or str(charge["user_id"]) != str(params.get("user_id")):
            raise TelegramError(400, "Bad Request: CHARGE_NOT_FOUND")
        if charge["refunded"]:
            raise TelegramError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        charge["refunded"] = True
        if self.echo_star_refunds:
            user = FakeUser(self, int(charge["user_id"]), None, "Buyer")
            await self.push_update(user.refunded_payment_update(charge_id))
        return True

    async def pre_checkout_answer(self, query_id: str, *, timeout: float = 5.0) -> dict[str, Any]:
        found = await self._wait(lambda: self.pre_checkout_answers.get(query_id), timeout)
        if found is None:
            raise AssertionError(f"pre-checkout query {query_id} was not answered within {timeout}s")
        return found

    def invoice_of(self, message: BotMessage) -> dict[str, Any]:
        """The sendInvoice parameters of an invoice message (payload, prices, currency...)."""
        return self.invoices[(message.chat_id, message.message_id)]

    # -- helpers -------------------------------------------------------------------------------

    def _check_text(self, text: str, parse_mode: str | None) -> str:
        if not text.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        plain = visible_text(text, parse_mode)
        if len(plain) > TEXT_LIMIT:
            raise TelegramError(400, "Bad Request: message is too long")
        return plain

    @staticmethod
    def _check_markup(markup: Any, refuse_local_urls: bool = False) -> dict[str, Any] | None:
        if not markup:
            return None
        for row in markup.get("inline_keyboard", []):
            for button in row:
                if not button.get("text"):
                    raise TelegramError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
                if data is None and not button.get("url"):
                    raise TelegramError(400, "Bad Request: can't parse inline keyboard button")
                url = str(button.get("url") or "")
                if refuse_local_urls and ("//127." in url or "//localhost" in url):
                    raise TelegramError(400, "Bad Request: BUTTON_URL_INVALID")
        return markup  # type: ignore[no-any-return]

    def _store(
        self,
        kind: str,
        chat_id: int,
        message_id: int,
        text: str,
        plain: str,
        markup: dict[str, Any] | None,
        content: dict[str, Any],
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group", "first_name": "Buyer"},
            "from": BOT_USER,
            **content,
        }
        if "text" in content:
            result["text"] = plain
        if markup:
            result["reply_markup"] = markup
        if kind == "edit":
            result["edit_date"] = int(time.time())
        self._current[(chat_id, message_id)] = result
        self.messages.append(BotMessage(kind, chat_id, message_id, text, plain, markup, time.monotonic(), result))
        return result


class FakeUser:
    """A Telegram user in a private chat with the bot (chat id = user id)."""

    def __init__(self, server: FakeTelegram, user_id: int, language_code: str | None, first_name: str) -> None:
        self.server = server
        self.id = user_id
        self.language_code = language_code
        self.first_name = first_name
        self.cursor = server.mark()

    @property
    def tg_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.language_code is not None:
            user["language_code"] = self.language_code
        return user

    def message_update(self, text: str | None = None, **content: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self.server._message_ids),
            "date": int(time.time()),
            "chat": {"id": self.id, "type": "private", "first_name": self.first_name},
            "from": self.tg_user,
            **content,
        }
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return {"update_id": self.server.next_update_id(), "message": message}

    def callback_update(
        self, message: BotMessage, text: str | None = None, *, data: str | None = None
    ) -> dict[str, Any]:
        button = message.button(text, data=data)
        if "callback_data" not in button:
            raise AssertionError(f"button {button.get('text')!r} is a URL button, not a callback button")
        callback_id = f"cq{next(self.server._callback_ids)}"
        return {
            "update_id": self.server.next_update_id(),
            "callback_query": {
                "id": callback_id,
                "from": self.tg_user,
                "message": self.server.current(message),
                "chat_instance": f"ci{self.id}",
                "data": button["callback_data"],
            },
        }

    async def send(self, text: str) -> None:
        """Type ``text`` in the chat; later ``expect`` calls look only at replies after it."""
        self.cursor = self.server.mark()
        await self.server.push_update(self.message_update(text))

    def pre_checkout_update(
        self, payload: str, amount: int, *, currency: str = "XTR", query_id: str | None = None
    ) -> dict[str, Any]:
        return {
            "update_id": self.server.next_update_id(),
            "pre_checkout_query": {
                "id": query_id or f"pcq{next(self.server._pre_checkout_ids)}",
                "from": self.tg_user,
                "currency": currency,
                "total_amount": amount,
                "invoice_payload": payload,
            },
        }

    def successful_payment_update(
        self, payload: str, amount: int, charge_id: str, *, currency: str = "XTR"
    ) -> dict[str, Any]:
        payment = {
            "currency": currency,
            "total_amount": amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        return self.message_update(successful_payment=payment)

    def refunded_payment_update(self, charge_id: str) -> dict[str, Any]:
        charge = self.server.star_charges[charge_id]
        refund = {
            "currency": "XTR",
            "total_amount": charge["amount"],
            "invoice_payload": charge["payload"],
            "telegram_payment_charge_id": charge_id,
        }
        return self.message_update(refunded_payment=refund)

    async def pre_checkout(self, payload: str, amount: int, *, currency: str = "XTR") -> dict[str, Any]:
        """Tap Pay: Telegram asks the bot first; returns the bot's answer (``ok``, ``error_message``)."""
        self.cursor = self.server.mark()
        update = self.pre_checkout_update(payload, amount, currency=currency)
        await self.server.push_update(update)
        return await self.server.pre_checkout_answer(str(update["pre_checkout_query"]["id"]))

    async def pay(self, invoice: BotMessage) -> str | None:
        """Pay an invoice as Telegram does: ask the bot, and only on ``ok`` charge and send
        ``successful_payment``. Returns the charge id, or None when the bot refused."""
        params = self.server.invoice_of(invoice)
        amount = sum(int(price["amount"]) for price in params["prices"])
        return await self.pay_payload(str(params["payload"]), amount, currency=str(params["currency"]))

    async def pay_payload(self, payload: str, amount: int, *, currency: str = "XTR") -> str | None:
        """``pay`` for an invoice known by its payload and amount."""
        answer = await self.pre_checkout(payload, amount, currency=currency)
        if not answer["ok"]:
            return None
        charge_id = f"stxCHARGE{next(self.server._charge_ids):06d}"
        self.server.star_charges[charge_id] = {
            "user_id": self.id,
            "amount": amount,
            "payload": payload,
            "refunded": False,
        }
        await self.send_successful_payment(payload, amount, charge_id, currency=currency)
        return charge_id

    async def send_successful_payment(
        self, payload: str, amount: int, charge_id: str, *, currency: str = "XTR"
    ) -> None:
        """Telegram's ``successful_payment`` message (again, to replay it)."""
        self.cursor = self.server.mark()
        await self.server.push_update(self.successful_payment_update(payload, amount, charge_id, currency=currency))

    async def send_document(
        self, data: bytes, filename: str, caption: str = "", *, file_size: int | None = None
    ) -> None:
        """Send the bot a file; ``file_size`` overrides the size Telegram reports."""
        self.cursor = self.server.mark()
        file_id = f"userdoc{next(self.server._callback_ids)}"
        self.server.user_files[file_id] = data
        document = {"file_id": file_id, "file_unique_id": file_id, "file_name": filename}
        document["file_size"] = len(data) if file_size is None else file_size
        content: dict[str, Any] = {"document": document}
        if caption:
            content["caption"] = caption
            if caption.startswith("/"):
                length = len(caption.split()[0])
                content["caption_entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        await self.server.push_update(self.message_update(**content))

    async def send_sticker(self) -> None:
        self.cursor = self.server.mark()
        sticker = {
            "file_id": "sticker1",
            "file_unique_id": "s1",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "👍",
        }
        await self.server.push_update(self.message_update(sticker=sticker))

    async def press(self, message: BotMessage, text: str | None = None, *, data: str | None = None) -> str:
        """Press an inline button of ``message``; returns the callback query id."""
        self.cursor = self.server.mark()
        update = self.callback_update(message, text, data=data)
        await self.server.push_update(update)
        return str(update["callback_query"]["id"])

    async def expect(
        self, predicate: Callable[[BotMessage], bool] | str | None = None, *, timeout: float = 5.0
    ) -> BotMessage:
        """The next bot message (send or edit) in this chat since the last action matching ``predicate``
        (a callable, or text the visible message must contain)."""
        if isinstance(predicate, str):
            needle = predicate
            predicate = lambda m: needle in m.plain  # noqa: E731
        return await self.server.wait_for(predicate, chat_id=self.id, since=self.cursor, timeout=timeout)


def _chat_id(params: dict[str, Any]) -> int:
    value = params.get("chat_id")
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TelegramError(400, "Bad Request: chat not found") from None


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
        return params
    form = await request.post()
    files: dict[str, bytes] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            upload = Upload(value.file.read())
            upload.filename = value.filename
            files[key] = upload
        elif key in JSON_FIELDS:
            params[key] = json.loads(value)
        else:
            params[key] = value
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            params[key] = files.pop(value.removeprefix("attach://"), b"")
    params.update(files)
    return params
