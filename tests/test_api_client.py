"""quanyi.client: it signs like apisign, docs/api.md's worked examples are true, and it works
end to end against the real app served by hypercorn."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from quanyi import client as qc
from quanyi.core.partners import apisign
from quanyi.core.services import Core
from quanyi.webhooks import api, create_app
from tests.apihelp import new_partner
from tests.helpers import product_with_stock

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"

# --- the same signature as apisign --------------------------------------------------------------

# The characters quoting treats specially come often; any other character now and then.
_QUERY_CHARS = st.one_of(
    st.sampled_from(list("~-_.+%&=/ :?#;aZ09")), st.characters(codec="utf-8", exclude_categories=("Cs",))
)
_query_part = st.text(_QUERY_CHARS, max_size=12)
_queries = st.one_of(
    st.text(_QUERY_CHARS, max_size=40),  # anything, including & = + % and broken escapes
    st.lists(st.tuples(_query_part, _query_part), max_size=5).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(min_size=1, max_size=60),
    method=st.sampled_from(["GET", "POST", "get", "post", "PUT", "Delete"]),
    path=st.text(_QUERY_CHARS, max_size=40).map(lambda p: "/" + p),
    query=_queries,
    timestamp=st.integers(min_value=0, max_value=10**12).map(str),
    nonce=st.from_regex(apisign.NONCE_RE, fullmatch=True),
    body=st.binary(max_size=200),
)
def test_the_client_signs_every_request_exactly_like_apisign(secret, method, path, query, timestamp, nonce, body):
    assert qc.canonical_query(query) == apisign.canonical_query(query)
    assert qc.canonical_request(method, path, query, timestamp, nonce, body) == apisign.canonical_request(
        method, path, query, timestamp, nonce, body
    )
    assert qc.sign(secret, method, path, query, timestamp, nonce, body) == apisign.sign(
        secret, method, path, query, timestamp, nonce, body
    )


@settings(max_examples=100, deadline=None)
@given(path=st.text(_QUERY_CHARS, max_size=30).map(lambda p: "/" + p), query=_queries, body=st.binary(max_size=100))
def test_verify_webhook_accepts_what_apisign_signs_and_nothing_altered(path, query, body):
    secret, now = "sk_" + "s" * 40, 1_800_000_000
    headers = apisign.headers("ak_" + "a" * 24, secret, "POST", path, query, body, now=now)
    lower = {name.lower(): value for name, value in headers.items()}  # frameworks may lower-case names
    assert qc.verify_webhook(secret, "POST", path, query, lower, body, now=now + 299)
    assert not qc.verify_webhook(secret + "x", "POST", path, query, headers, body, now=now)
    assert not qc.verify_webhook(secret, "POST", path, query, headers, body + b" ", now=now)
    assert not qc.verify_webhook(secret, "POST", path + "x", query, headers, body, now=now)
    assert not qc.verify_webhook(secret, "POST", path, query, headers, body, now=now + 301)
    assert not qc.verify_webhook(secret, "POST", path, query, {**headers, "X-Quanyi-Signature": ""}, body, now=now)


# --- docs/api.md cannot go stale ----------------------------------------------------------------


def _field(section: str, name: str) -> str:
    found = re.search(rf"^[-|] {re.escape(name)}:? ?\|? `([^`]+)`", section, re.M)
    assert found, f"{name} missing in docs/api.md"
    return found.group(1)


def _worked_examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    sections = re.split(r"^#### Example \d+:", text, flags=re.M)[1:]
    sections[-1] = sections[-1].split("\n## ", 1)[0]
    return sections


def test_the_worked_examples_in_the_docs_are_what_apisign_computes():
    text = DOC.read_text(encoding="utf-8")
    access_key, secret = _field(text, "access key"), _field(text, "secret")
    timestamp = _field(text, "timestamp")
    examples = _worked_examples()
    assert len(examples) == 2
    methods = set()
    for section in examples:
        method, target = _field(section, "request").split(" ", 1)
        path, _, query = target.partition("?")
        nonce = _field(section, "nonce")
        bodies = re.findall(r"```json\n(.*?)\n```", section, re.S)
        body = bodies[0].encode() if bodies else b""
        [canonical] = re.findall(r"```text\n(.*?)\n```", section, re.S)
        assert canonical == apisign.canonical_request(method, path, query, timestamp, nonce, body)
        assert _field(section, "body SHA-256") == hashlib.sha256(body).hexdigest() == canonical.split("\n")[-1]
        signature = _field(section, "signature")
        assert signature == apisign.sign(secret, method, path, query, timestamp, nonce, body)
        # The curl command sends what was signed.
        [curl] = re.findall(r"```sh\n(curl .*?)\n```", section, re.S)
        assert f"/{path.lstrip('/')}{'?' + query if query else ''}'" in curl
        for header, value in (
            ("X-Quanyi-Key", access_key),
            ("X-Quanyi-Timestamp", timestamp),
            ("X-Quanyi-Nonce", nonce),
            ("X-Quanyi-Signature", signature),
        ):
            assert f"-H '{header}: {value}'" in curl
        assert (f"--data-binary '{body.decode()}'" in curl) == bool(body)
        methods.add(method)
    assert methods == {"GET", "POST"}


def test_the_canonical_query_example_in_the_docs_is_true():
    found = re.search(r"Example: `([^`]+)` becomes\s+`([^`]+)`", DOC.read_text(encoding="utf-8"))
    assert found
    assert apisign.canonical_query(found.group(1)) == found.group(2)


def test_the_docs_list_every_error_code_with_its_http_status():
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", DOC.read_text(encoding="utf-8"), re.M))
    assert {code: int(status) for code, status in rows.items()} == api.STATUS


# --- end to end against the real app over HTTP ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def live(core: Core) -> AsyncIterator[str]:
    """The real app served by hypercorn on 127.0.0.1; yields its base URL."""
    port = _free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(create_app(core), config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.02)
        yield base
    finally:
        stop.set()
        await task


async def test_the_client_buys_queries_and_is_refused_against_a_live_server(core, live, tmp_path, monkeypatch, capsys):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    creds = await new_partner(core, "acme", balance="100.00", allocate={"VIP": 5})
    client = qc.QuanyiClient(live, creds.access_key, creds.secret, timeout=5)

    def run() -> dict[str, Any]:
        seen: dict[str, Any] = {"balance_before": client.balance()["balance"]}
        seen["products"] = client.products()
        seen["created"] = client.create_order("PO-1", "VIP", quantity=2, client_ip="203.0.113.7")
        seen["again"] = client.create_order("PO-1", "VIP", quantity=2)
        with pytest.raises(qc.ApiError) as conflict:
            client.create_order("PO-1", "VIP", quantity=1)
        seen["conflict"] = conflict.value
        seen["order"] = client.order("PO-1")
        with pytest.raises(qc.ApiError) as missing:
            client.order("PO-404")
        seen["missing"] = missing.value
        seen["balance_after"] = client.balance()
        seen["statement"] = client.statement()
        with pytest.raises(qc.ApiError) as forged:
            qc.QuanyiClient(live, creds.access_key, "sk_" + "x" * 43).balance()
        seen["forged"] = forged.value
        seen["items"] = client.create_order("PO-2", items=[{"sku": "VIP", "quantity": 2}])
        with pytest.raises(ValueError):
            client.create_order("PO-3")  # neither sku nor items
        return seen

    seen = await asyncio.to_thread(run)

    assert seen["balance_before"] == 10000
    [vip] = [p for p in seen["products"] if p["sku"] == "VIP"]
    assert (vip["price"], vip["currency"], vip["available"]) == (1500, "CNY", 5)
    created = seen["created"]
    assert created["order_no"] == "PO-1" and created["status"] == "delivered" and created["amount"] == 3000
    assert len(created["lines"][0]["codes"]) == 2
    assert seen["again"]["number"] == created["number"] and seen["again"]["lines"] == created["lines"]
    conflict = seen["conflict"]
    assert (conflict.status, conflict.code) == (409, "conflict") and "PO-1" in conflict.message
    assert seen["order"] == created
    assert (seen["missing"].status, seen["missing"].code) == (404, "not_found")
    assert seen["balance_after"] == {"partner": "acme", "currency": "CNY", "balance": 10000 - 3000}
    lines = [(line["kind"], line["amount"], line["order_no"]) for line in seen["statement"]["lines"]]
    assert ("partner_order", -3000, "PO-1") in lines
    assert seen["statement"]["closing_balance"] == 7000
    assert (seen["forged"].status, seen["forged"].code) == (401, "bad_signature")
    items = seen["items"]
    assert (items["status"], items["amount"], [len(line["codes"]) for line in items["lines"]]) == (
        "delivered",
        3000,
        [2],
    )

    # The command line, with the secret from the environment.
    monkeypatch.setenv("QUANYI_API_SECRET", creds.secret)
    argv = ["--base", live, "--key", creds.access_key]
    assert await asyncio.to_thread(qc.main, [*argv, "balance"]) == 0
    assert '"balance": 4000' in capsys.readouterr().out
    assert await asyncio.to_thread(qc.main, [*argv, "order", "PO-404"]) == 1
    assert "not_found (HTTP 404)" in capsys.readouterr().err


class DropFirstAnswer:
    """A TCP proxy in front of the server that forwards every request but swallows the first
    answer (the connection drops after the server did the work): a lost response."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
        self.requests += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(head + body)
        await up_writer.drain()
        answer = await up_reader.read()  # urllib asks for Connection: close
        up_writer.close()
        if self.requests > 1:
            writer.write(answer)
            await writer.drain()
        writer.close()


async def test_a_lost_answer_to_create_order_is_retried_with_the_same_order_no_and_buys_once(core, live, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    creds = await new_partner(core, "acme", balance="100.00", allocate={"VIP": 5})
    proxy = DropFirstAnswer(int(live.rsplit(":", 1)[1]))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = qc.QuanyiClient(f"http://127.0.0.1:{port}", creds.access_key, creds.secret, timeout=5, retry_delay=0.01)
    try:
        order = await asyncio.to_thread(client.create_order, "PO-R", "VIP", 1)
    finally:
        server.close()
        await server.wait_closed()

    assert proxy.requests == 2  # the first one reached the server and made the order
    assert order["order_no"] == "PO-R" and order["status"] == "delivered"
    direct = qc.QuanyiClient(live, creds.access_key, creds.secret)
    balance = await asyncio.to_thread(direct.balance)
    assert balance["balance"] == 10000 - 1500  # charged once
    statement = await asyncio.to_thread(direct.statement)
    assert [line["order_no"] for line in statement["lines"] if line["kind"] == "partner_order"] == ["PO-R"]


async def test_no_server_at_all_is_a_connection_failed_api_error():
    client = qc.QuanyiClient(f"http://127.0.0.1:{_free_port()}", "ak_" + "a" * 24, "sk_x", timeout=1, retry_delay=0)
    with pytest.raises(qc.ApiError) as failed:
        await asyncio.to_thread(client.create_order, "PO-X", "VIP")
    assert (failed.value.status, failed.value.code) == (0, "connection_failed")
    assert "sk_x" not in str(failed.value) and "sk_x" not in repr(client)
