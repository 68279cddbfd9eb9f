"""``quanyi partner``: an operator adds a partner, rotates its keys, tops up its balance and turns
it off, in this process on a SQLite data dir; the printed credentials sign real API calls."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from quanyi.core.models import AuditRecord, Partner, PartnerKey
from quanyi.core.services import Core
from quanyi.webhooks import create_app
from tests.apihelp import Creds, call
from tests.helpers import product_with_stock
from tests.test_cli_channels import _open
from tests.test_cli_pricing import InProcessCli, assert_refused, cmd  # noqa: F401  (fixture)


def printed(output: str, label: str) -> str:
    [value] = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith(label + ":")]
    return value


async def creds_of(core: Core, code: str, output: str) -> Creds:
    async with core.db.read() as session:
        partner_id = await session.scalar(select(Partner.id).where(Partner.code == code))
    assert partner_id is not None
    return Creds(code, partner_id, printed(output, "access key"), printed(output, "secret"))


async def balance(client: Any, creds: Creds) -> tuple[int, Any]:
    return await call(client, creds, "GET", "/api/v1/balance")


async def state(core: Core) -> list[tuple[Any, ...]]:
    async with core.db.read() as session:
        partners = (
            await session.execute(select(Partner.code, Partner.balance, Partner.active, Partner.webhook_url))
        ).all()
        keys = (await session.execute(select(PartnerKey.access_key, PartnerKey.active))).all()
    return sorted(tuple(row) for row in [*partners, *keys])


async def test_a_partner_added_on_the_cli_signs_api_calls_with_the_secret_shown_once(
    cmd: InProcessCli, tmp_path: Path
) -> None:
    core = await _open(tmp_path, upgrade=True)
    try:
        await product_with_stock(core, tmp_path, units=3)
        added = cmd.ok("partner", "add", "acme", "--name", "Acme Spa", "--webhook", "https://acme.example/events")
        creds = await creds_of(core, "acme", added)
        assert creds.access_key.startswith("ak_") and creds.secret.startswith("sk_")
        assert added.count(creds.secret) == 1 and "docs/api.md" in added
        client = create_app(core).test_client()
        assert await balance(client, creds) == (200, {"partner": "acme", "currency": "CNY", "balance": 0})

        listed = cmd.ok("partner", "list")
        row = next(line.split() for line in listed.splitlines() if line.startswith("acme"))
        assert row[:7] == ["acme", "acme", "yes", "0.00", "CNY", "1", "yes"]
        cmd.ok("stock", "allocate", "VIP", "--to", "acme", "--units", "2")
        shown = cmd.ok("partner", "show", "acme")
        assert creds.access_key in shown and "https://acme.example/events" in shown
        assert "VIP" in shown.split("allocations:")[1]
        help_text = cmd.ok("partner", "add", "--help")
        assert "stock allocate" in help_text and "channel price" in help_text
        for text in (listed, shown, cmd.ok("audit", "list", "--limit", "500")):
            assert creds.secret not in text

        async with core.db.read() as session:
            records = list(await session.scalars(select(AuditRecord)))
        recorded = {r.action for r in records}
        assert {"partner add", "create partner", "create partner_key"} <= recorded
        assert not [r for r in records if creds.secret in f"{r.old} {r.new} {r.object_id}"]
        assert "partner show" not in recorded and "partner list" not in recorded  # reads are not recorded
    finally:
        await core.close()


async def test_keys_rotate_a_revoked_key_gets_401_and_the_new_one_is_never_recorded(
    cmd: InProcessCli, tmp_path: Path
) -> None:
    core = await _open(tmp_path, upgrade=True)
    try:
        first = await creds_of(core, "acme", cmd.ok("partner", "add", "acme", "--name", "Acme"))
        second_out = cmd.ok("partner", "key", "add", "acme")
        second = await creds_of(core, "acme", second_out)
        assert second.access_key != first.access_key and second_out.count(second.secret) == 1
        client = create_app(core).test_client()
        assert (await balance(client, first))[0] == 200 and (await balance(client, second))[0] == 200

        revoked = cmd.ok("partner", "key", "revoke", "acme", first.access_key)
        assert "1 active key(s) left" in revoked
        assert (await balance(client, first))[0] == 401
        assert (await balance(client, second))[0] == 200
        shown = cmd.ok("partner", "show", "acme")
        first_row = next(line for line in shown.splitlines() if line.startswith(first.access_key))
        assert "revoked" in first_row and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d$", first_row.rstrip())
        assert first.secret not in shown and second.secret not in shown

        async with core.db.read() as session:
            records = list(await session.scalars(select(AuditRecord)))
        assert "partner key add" in {r.action for r in records}
        assert "partner key revoke" in {r.action for r in records}
        for secret in (first.secret, second.secret):
            assert not [r for r in records if secret in f"{r.old} {r.new} {r.object_id}"]

        cmd.ok("partner", "disable", "acme")
        assert (await balance(client, second))[0] == 401
        assert "no" in next(line for line in cmd.ok("partner", "list").splitlines() if line.startswith("acme"))
        cmd.ok("partner", "enable", "acme")
        assert (await balance(client, second))[0] == 200
        cmd.ok("partner", "webhook", "acme", "https://acme.example/hook")
        assert "https://acme.example/hook" in cmd.ok("partner", "show", "acme")
        assert "webhook off" in cmd.ok("partner", "webhook", "acme", "--off")
    finally:
        await core.close()


async def test_a_top_up_shows_on_the_api_balance_and_the_ledger_stays_balanced(
    cmd: InProcessCli, tmp_path: Path
) -> None:
    core = await _open(tmp_path, upgrade=True)
    try:
        creds = await creds_of(core, "acme", cmd.ok("partner", "add", "acme", "--name", "Acme"))
        client = create_app(core).test_client()
        assert "balance 100.00 CNY" in cmd.ok("partner", "topup", "acme", "100.00", "--note", "wire 42")
        assert "took back 20.50 CNY; balance 79.50 CNY" in cmd.ok("partner", "topup", "acme", "-20.50")
        status, body = await balance(client, creds)
        assert (status, body["balance"]) == (200, 7950)
        assert cmd.ok("ledger", "check")
        balances = cmd.ok("ledger", "balances")
        assert f"partner:{creds.partner_id}:balance" in balances
    finally:
        await core.close()


async def test_bad_input_is_refused_in_one_line_and_changes_nothing(cmd: InProcessCli, tmp_path: Path) -> None:
    core = await _open(tmp_path, upgrade=True)
    try:
        creds = await creds_of(core, "acme", cmd.ok("partner", "add", "acme", "--name", "Acme"))
        cmd.ok("partner", "topup", "acme", "10.00")
        before = await state(core)
        assert_refused(
            cmd,
            {
                ("partner", "add", "acme", "--name", "Again"): "already exists",
                ("partner", "add", "A B", "--name", "Bad"): "channel code",
                ("partner", "add", "beta", "--name", "Beta", "--currency", "XYZ"): "unknown currency",
                ("partner", "add", "beta", "--name", "Beta", "--webhook", "ftp://x"): "webhook URL",
                ("partner", "topup", "acme", "abc"): "not an amount",
                ("partner", "topup", "acme", "1.234"): "at most 2 decimals",
                ("partner", "topup", "acme", "0"): "must not be zero",
                ("partner", "topup", "acme", "-10.01"): "is short of",
                ("partner", "topup", "nobody", "5.00"): "no partner nobody",
                ("partner", "key", "revoke", "acme", "ak_nope"): "has no key ak_nope",
                ("partner", "key", "add", "nobody"): "no partner nobody",
                ("partner", "webhook", "acme", "ftp://x"): "webhook URL",
                ("partner", "webhook", "acme"): "give a webhook URL or --off",
                ("partner", "webhook", "acme", "https://a.example", "--off"): "give a webhook URL or --off",
                ("partner", "show", "nobody"): "no partner nobody",
                ("partner", "disable", "nobody"): "no partner nobody",
            },
        )
        assert await state(core) == before
        client = create_app(core).test_client()
        assert await balance(client, creds) == (200, {"partner": "acme", "currency": "CNY", "balance": 1000})
        for _ in range(4):
            cmd.ok("partner", "key", "add", "acme")
        assert "5 active keys" in cmd.fails("partner", "key", "add", "acme")
    finally:
        await core.close()
