"""The partner API documents itself: an OpenAPI 3.1 document and an HTML page built from the
endpoints ``api.endpoint`` declared, both served unsigned."""

from __future__ import annotations

import hashlib
import re

import pytest
from openapi_spec_validator import validate

from quanyi.core.partners import apisign
from quanyi.webhooks import api, create_app, openapi


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_the_document_is_valid_openapi_3_1_and_names_the_server():
    doc = openapi.document("https://shop.example/")
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": "https://shop.example/api/v1"}]


def test_every_endpoint_is_documented_with_its_schemas_and_every_error_under_its_status():
    doc = openapi.document("https://shop.example")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == {(e.method, e.path) for e in api.ENDPOINTS}
    assert len(api.ENDPOINTS) >= 9
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and "create_order" in ids and "openapi" in ids
    for e in api.ENDPOINTS:
        op = doc["paths"][e.path][e.method.lower()]
        assert (op["summary"], op["description"]) == (e.summary, e.description)
        if e.request is not None:
            assert op["requestBody"]["content"]["application/json"]["schema"] == e.request
        for status, schema in e.responses.items():
            assert op["responses"][str(status)]["content"][e.content_type]["schema"] == schema
        for code in e.errors:
            answer = op["responses"][str(api.STATUS[code])]
            [error_schema] = [s for s in answer["content"]["application/json"]["schema"]["allOf"] if "properties" in s]
            assert code in error_schema["properties"]["error"]["enum"]
            assert code in answer["description"]
        assert [p["name"] for p in op.get("parameters", [])] == [p.name for p in e.params]
        signed = {name: [] for name in openapi.SIGNING_SCHEMES}
        assert op["security"] == ([signed] if e.signed else [])
        assert ("bad_signature" in e.errors) is e.signed
    schemes = doc["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} == {
        apisign.KEY_HEADER,
        apisign.TIMESTAMP_HEADER,
        apisign.NONCE_HEADER,
        apisign.SIGNATURE_HEADER,
    }
    assert all(s["type"] == "apiKey" and s["in"] == "header" for s in schemes.values())
    assert "HMAC-SHA256" in schemes["QuanyiSignature"]["description"]


def test_the_worked_example_is_a_real_signature_of_its_canonical_request():
    ex = openapi.signing_example()
    lines = ex["canonical"].split("\n")
    assert lines == [
        "GET",
        "/api/v1/statement",
        "from=2026-01-01&to=2026-01-31",
        ex["timestamp"],
        ex["nonce"],
        hashlib.sha256(b"").hexdigest(),
    ]
    presented = apisign.presented(
        {
            apisign.KEY_HEADER: ex["access_key"],
            apisign.TIMESTAMP_HEADER: ex["timestamp"],
            apisign.NONCE_HEADER: ex["nonce"],
            apisign.SIGNATURE_HEADER: ex["signature"],
        }
    )
    path, query = ex["target"].split("?")
    assert apisign.matches(ex["secret"], presented, "GET", path, query, b"")


async def test_the_document_and_the_docs_page_are_served_unsigned(core):
    client = create_app(core).test_client()
    response = await client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    assert await response.get_json() == openapi.document(core.settings.public_url)

    response = await client.get("/api/v1/docs")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    page = await response.get_data(as_text=True)
    for e in api.ENDPOINTS:
        assert e.path in page and e.summary.replace("'", "&#39;") in page
    for code in api.STATUS:
        assert f"<code>{code}</code>" in page
    assert openapi.signing_example()["signature"] in page
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"<script|<link|src=|@import|url\(", page)
    # Texts are escaped: a docstring's ``partner:<code>`` is shown, not parsed as a tag.
    assert "partner:&lt;code&gt;" in page and "partner:<code>" not in page
