"""The OpenAPI 3.1 document of the partner API, built from the endpoints ``api.endpoint`` declared."""

from __future__ import annotations

import copy
import json
from typing import Any

from quart import Quart

from quanyi.core.partners import apisign
from quanyi.webhooks import api, markdown
from quanyi.webhooks import api_schemas as schemas

ERROR_REF = "#/components/schemas/Error"
# One scheme per header: OpenAPI's apiKey names a single header, and a signed request needs
# all four (one security requirement listing them all means "and").
SIGNING_SCHEMES = {
    "QuanyiKey": (apisign.KEY_HEADER, "The access key id (`ak_…`) of one of the partner's active keys."),
    "QuanyiTimestamp": (
        apisign.TIMESTAMP_HEADER,
        f"Unix seconds; refused (`stale_request`) when more than {apisign.WINDOW_SECONDS} s from the server's clock.",
    ),
    "QuanyiNonce": (
        apisign.NONCE_HEADER,
        "16-64 characters of A-Z a-z 0-9 _ -, new for every request (`replayed_nonce` otherwise).",
    ),
    "QuanyiSignature": (apisign.SIGNATURE_HEADER, "Lower-case hex HMAC-SHA256 of the canonical request."),
}
SIGNING_TEXT = """Every endpoint except the documentation is signed with the key's secret (`sk_…`).
The canonical request is six lines joined by a line feed (`\\n`):

1. METHOD: upper case (`GET`, `POST`)
2. PATH: the path, decoded once and percent-encoded again leaving only A-Z a-z 0-9 - _ . ~ / (e.g. `/api/v1/orders`)
3. QUERY: the query's name=value pairs sorted by name then value, each part percent-encoded
   (RFC 3986: only `A-Z a-z 0-9 - _ . ~` left as they are), joined by `&`; empty without a query
4. TIMESTAMP: the `X-Quanyi-Timestamp` value
5. NONCE: the `X-Quanyi-Nonce` value
6. BODY-SHA256: hex SHA-256 of the body bytes (of the empty string for no body)

`X-Quanyi-Signature` = hex HMAC-SHA256(secret, canonical request). A missing or malformed header,
an unknown or revoked key is `unauthorized`; a wrong signature is `bad_signature` (all 401).
A query parameter given more than once is refused before anything else with 400
`duplicate_parameter` (`field` names it): sorted pairs sign `a=1&a=2` and `a=2&a=1` alike."""


def signing_example() -> dict[str, str]:
    """A worked example of the scheme with a made-up key: what the docs page shows."""
    secret = "sk_example_secret_do_not_use"
    method, path, query = "GET", "/api/v1/statement", "to=2026-01-31&from=2026-01-01"
    timestamp, nonce = "1767225600", "n0nce-example-0123456789"
    body = b""
    return {
        "access_key": "ak_EXAMPLE0123456789AB",
        "secret": secret,
        "method": method,
        "target": f"{path}?{query}",
        "timestamp": timestamp,
        "nonce": nonce,
        "canonical": apisign.canonical_request(method, path, query, timestamp, nonce, body),
        "signature": apisign.sign(secret, method, path, query, timestamp, nonce, body),
    }


def errors_by_status(endpoint: api.Endpoint) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for code in endpoint.errors:
        grouped.setdefault(api.STATUS[code], []).append(code)
    return dict(sorted(grouped.items()))


def _error_response(codes: list[str]) -> dict[str, Any]:
    schema = copy.deepcopy(schemas.ERROR)
    schema["properties"]["error"] = {**schema["properties"]["error"], "enum": codes}
    return {
        "description": "error: " + ", ".join(f"`{code}`" for code in codes),
        "content": {"application/json": {"schema": {"allOf": [{"$ref": ERROR_REF}, schema]}}},
    }


def _operation(endpoint: api.Endpoint, handlers: dict[tuple[str, str], str]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": handlers[(endpoint.method, endpoint.path)].lstrip("_"),
        "summary": endpoint.summary,
        "description": endpoint.description,
        "tags": [endpoint.tag],
        "security": [{name: [] for name in SIGNING_SCHEMES}] if endpoint.signed else [],
    }
    if endpoint.params:
        operation["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in endpoint.params
        ]
    if endpoint.request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": endpoint.request}}}
    responses: dict[str, Any] = {}
    for status, schema in sorted(endpoint.responses.items()):
        responses[str(status)] = {
            "description": "success" if status < 300 else "answer",
            "content": {endpoint.content_type: {"schema": schema}},
        }
    for status, codes in errors_by_status(endpoint).items():
        responses[str(status)] = _error_response(codes)
    operation["responses"] = responses
    return operation


def handler_names() -> dict[tuple[str, str], str]:
    """(method, OpenAPI path) → the handler's name, read from the routes the blueprint adds to an app."""
    app = Quart(__name__)
    app.register_blueprint(api.blueprint)
    prefix = api.blueprint.url_prefix or ""
    names: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(api.blueprint.name + "."):
            continue
        path = rule.rule.removeprefix(prefix).replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            names[(method, path)] = rule.endpoint.split(".", 1)[1]
    return names


def document(public_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``servers`` points at ``public_url``'s ``/api/v1``."""
    paths: dict[str, dict[str, Any]] = {}
    handlers = handler_names()
    for endpoint in api.ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, handlers)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "quanyi partner API",
            "version": "1",
            "description": (
                "Signed requests, JSON in, JSON out. Amounts are integers in the currency's minor units; "
                'errors are `{"error": <stable code>, "message": <text>}` with the HTTP status of the code.\n\n'
                + SIGNING_TEXT
            ),
        },
        "servers": [{"url": public_url.rstrip("/") + "/api/v1"}],
        "tags": [{"name": tag} for tag in dict.fromkeys(endpoint.tag for endpoint in api.ENDPOINTS)],
        "paths": paths,
        "components": {
            "schemas": {"Error": schemas.ERROR, "WebhookEvent": schemas.WEBHOOK_EVENT},
            "securitySchemes": {
                name: {
                    "type": "apiKey",
                    "in": "header",
                    "name": header,
                    "description": text + ("\n\n" + SIGNING_TEXT if name == "QuanyiSignature" else ""),
                }
                for name, (header, text) in SIGNING_SCHEMES.items()
            },
        },
    }


def _pretty(schema: Any) -> str:
    return json.dumps(schema, ensure_ascii=False, indent=2)


def page(public_url: str) -> dict[str, Any]:
    """What the HTML docs page shows, taken from the document so the two cannot disagree; its
    texts (Markdown, as OpenAPI has them) are rendered to escaped HTML."""
    doc = document(public_url)
    operations = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            responses = []
            for status, answer in op["responses"].items():
                [(content_type, body)] = answer["content"].items()
                codes = body["schema"]["allOf"][1]["properties"]["error"]["enum"] if "allOf" in body["schema"] else []
                responses.append(
                    {
                        "status": status,
                        "content_type": content_type,
                        "codes": codes,
                        "schema": "" if codes else _pretty(body["schema"]),
                    }
                )
            request_body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            operations.append(
                {
                    "id": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": markdown.inline(op["summary"]),
                    "description": markdown.block(op["description"]),
                    "signed": bool(op["security"]),
                    "params": [
                        {**param, "description": markdown.inline(param["description"])}
                        for param in op.get("parameters", [])
                    ],
                    "request": _pretty(request_body) if request_body is not None else "",
                    "responses": responses,
                }
            )
    return {
        "title": doc["info"]["title"],
        "server": doc["servers"][0]["url"],
        "intro": markdown.block(doc["info"]["description"].split("\n\n", 1)[0]),
        "signing": markdown.block(SIGNING_TEXT),
        "headers": [(header, markdown.inline(text)) for header, text in SIGNING_SCHEMES.values()],
        "example": signing_example(),
        "operations": operations,
        "error_schema": _pretty(doc["components"]["schemas"]["Error"]),
        "webhook_schema": _pretty(doc["components"]["schemas"]["WebhookEvent"]),
        "statuses": sorted(api.STATUS.items(), key=lambda item: (item[1], item[0])),
    }
