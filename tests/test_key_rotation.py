"""`quanyi keys rotate`: a new key, re-encryption of card keys and redemption links in resumable
batches, retirement of the old key; codes stay readable at every step and no key is ever printed."""

from __future__ import annotations

import base64
import json
import logging
import stat
from typing import Any

import pytest
from sqlalchemy import select

from quanyi.core.errors import ConfigError
from quanyi.core.models import StockItem
from quanyi.core.partners import accounts as partners
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KEY_FILE, KeyRing, create_key_file
from quanyi.core.platform.db import Database
from quanyi.core.platform.rotation import KeyUsage, key_usage, rotate
from quanyi.core.sales import redeem
from quanyi.core.services import Core, build_core
from quanyi.core.stock.items import item_aad
from tests.apihelp import new_partner
from tests.conftest import b64key, make_settings
from tests.helpers import product_with_stock
from tests.test_cli_pricing import InProcessCli, cmd  # noqa: F401  (fixture)
from tests.test_redeem import issue, link_product, paid_order


def file_core(db: Database, settings: Settings) -> Core:
    """A core whose keys come from keys.json in the data dir, as in the embedded set-up (the key
    file ``quanyi db upgrade`` writes for a new database)."""
    create_key_file(settings.data_dir / KEY_FILE)
    return build_core(settings, db=db, keyring=KeyRing.load(settings))


async def codes_in_db(db: Database, keyring: KeyRing) -> list[str]:
    async with db.read() as session:
        rows = (
            await session.execute(
                select(StockItem.product_id, StockItem.key_id, StockItem.secret_ct).order_by(StockItem.id)
            )
        ).all()
    return [keyring.decrypt(key_id, blob, item_aad(product_id)) for product_id, key_id, blob in rows]


async def links_of(core: Core, order_id: int, keyring: KeyRing) -> list[str]:
    async with core.db.read() as session:
        return await redeem.tokens_for_order(session, keyring, order_id)


def key_file(settings: Settings) -> dict[str, Any]:
    return json.loads((settings.data_dir / KEY_FILE).read_text())


async def test_rotation_reencrypts_codes_and_links_under_a_new_key_and_removes_the_old_one(db, settings, tmp_path):
    core = file_core(db, settings)
    codes = await product_with_stock(core, tmp_path, units=7)
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product)
    tokens = await issue(core, product, 2, order_id=order_id, order_line_id=line_id)
    creds = await new_partner(core, "acme")
    progress: list[tuple[str, int, int]] = []

    outcome = await rotate(db, settings, batch=3, on_progress=lambda *p: progress.append(p))

    assert (outcome.added, outcome.retired, outcome.report.finished) == ("k2", ["k1"], True)
    assert progress == [
        ("card keys", 3, 7),
        ("card keys", 6, 7),
        ("card keys", 7, 7),
        ("redemption links", 2, 2),
        ("partner API secrets", 1, 1),
    ]
    stored = key_file(settings)
    assert (sorted(stored["enc_keys"]), stored["active"], stored["retired"]) == (["k2"], "k2", ["k1"])
    assert stat.S_IMODE((settings.data_dir / KEY_FILE).stat().st_mode) == 0o600
    assert await key_usage(db) == {"k2": KeyUsage("k2", 7, 2, 1)}
    fresh = KeyRing.load(settings)
    assert await codes_in_db(db, fresh) == codes
    async with db.read() as session:  # the partner still signs with the same secret
        assert (await partners.secret_of(session, fresh, creds.access_key))[1] == creds.secret
    assert await links_of(core, order_id, fresh) == tokens
    # The ring loaded before the rotation (a running `quanyi serve`) reads the re-encrypted rows
    # and encrypts new codes with the new key.
    assert await codes_in_db(db, core.keyring) == codes
    assert core.keyring.encrypt("X", b"aad")[0] == "k2"

    again = await rotate(db, settings, batch=3)
    assert (again.added, again.retired) == ("k3", ["k2"])
    assert await codes_in_db(db, KeyRing.load(settings)) == codes


async def test_an_interrupted_rotation_leaves_codes_readable_and_the_next_run_finishes_it_without_a_new_key(
    db, settings, tmp_path, monkeypatch
):
    core = file_core(db, settings)
    codes = await product_with_stock(core, tmp_path, units=5)
    real_encrypt = KeyRing.encrypt
    calls = {"n": 0}

    def crash_in_second_batch(self: KeyRing, plaintext: str, aad: bytes) -> tuple[str, bytes]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return real_encrypt(self, plaintext, aad)

    monkeypatch.setattr(KeyRing, "encrypt", crash_in_second_batch)
    with pytest.raises(RuntimeError):
        await rotate(db, settings, batch=2)
    monkeypatch.setattr(KeyRing, "encrypt", real_encrypt)

    # The first batch committed, the second rolled back: mixed key ids, every code readable.
    assert await key_usage(db) == {"k1": KeyUsage("k1", 3, 0), "k2": KeyUsage("k2", 2, 0)}
    assert sorted(key_file(settings)["enc_keys"]) == ["k1", "k2"]
    assert await codes_in_db(db, KeyRing.load(settings)) == codes

    stopped = await rotate(db, settings, batch=2, max_batches=1)  # plain rotate detects the unfinished run
    assert (stopped.added, stopped.report.done["card keys"], stopped.report.finished) == (None, 2, False)
    assert stopped.retired == []
    assert await codes_in_db(db, KeyRing.load(settings)) == codes

    resumed = await rotate(db, settings, batch=2, resume=True)
    assert (resumed.added, resumed.report.done["card keys"], resumed.retired) == (None, 1, ["k1"])
    assert (sorted(key_file(settings)["enc_keys"]), key_file(settings)["active"]) == (["k2"], "k2")
    assert await key_usage(db) == {"k2": KeyUsage("k2", 5, 0)}
    assert await codes_in_db(db, KeyRing.load(settings)) == codes


async def test_keys_from_the_environment_are_never_invented_and_idle_ones_are_named(db, tmp_path):
    old, new, lookup = b64key(), b64key(), b64key()
    only_old = make_settings(tmp_path, card_keys=f"k1:{old}", lookup_key=lookup)
    core = build_core(only_old, db=db, keyring=KeyRing.load(only_old))
    codes = await product_with_stock(core, tmp_path, units=3)

    with pytest.raises(ConfigError, match="QUANYI_CARD_KEY_ACTIVE"):
        await rotate(db, only_old)
    assert await key_usage(db) == {"k1": KeyUsage("k1", 3, 0)}

    both = make_settings(tmp_path, card_keys=f"k1:{old},k2:{new}", card_key_active="k2", lookup_key=lookup)
    outcome = await rotate(db, both, batch=2)
    assert (outcome.added, outcome.removable, outcome.retired) == (None, ["k1"], [])
    assert not (tmp_path / "data" / KEY_FILE).exists()
    assert await key_usage(db) == {"k2": KeyUsage("k2", 3, 0)}
    only_new = make_settings(tmp_path, card_keys=f"k2:{new}", lookup_key=lookup)
    assert await codes_in_db(db, KeyRing.load(only_new)) == codes


async def test_the_cli_rotates_with_progress_resumes_and_never_prints_a_key(cmd, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    cmd.ok("db", "upgrade")
    cmd.ok("product", "add", "--sku", "VIP", "--name", "VIP month", "--kind", "card_key", "--price", "15.00")
    codes = [f"VIP-CODE-{n:04d}" for n in range(5)]
    (tmp_path / "codes.txt").write_text("\n".join(codes) + "\n")
    cmd.ok("stock", "import", "VIP", str(tmp_path / "codes.txt"))
    first_file = (cmd.data_dir / KEY_FILE).read_text()

    status = cmd.ok("keys", "status")
    assert "active: k1" in status and "k1      active  5" in status

    first = cmd.ok("keys", "rotate", "--batch", "2", "--max-batches", "2")
    assert "added key k2" in first
    assert "re-encrypted 2 / 5 card keys" in first and "re-encrypted 4 / 5 card keys" in first
    assert "keys rotate --resume" in first
    mixed = cmd.ok("keys", "status")
    assert "k1      loaded  1" in mixed and "k2      active  4" in mixed and "run `quanyi keys rotate`" in mixed

    second = cmd.ok("keys", "rotate", "--batch", "2")
    assert "added key" not in second and "continuing the rotation to the active key k2" in second
    assert "re-encrypted 1 / 1 card keys" in second and "removed from the key file): k1" in second
    last_file = (cmd.data_dir / KEY_FILE).read_text()
    assert sorted(json.loads(last_file)["enc_keys"]) == ["k2"]
    assert "Usage" not in cmd.fails("keys", "rotate", "--batch", "0")

    secrets = [v for f in (first_file, last_file) for v in json.loads(f)["enc_keys"].values()]
    secrets += [json.loads(last_file)["lookup_key"], *codes]
    forms = {s for v in secrets for s in (v, repr(base64.b64decode(v)) if not v.startswith("VIP") else v)}
    printed = first + second + status + mixed + caplog.text
    assert [s for s in forms if s in printed] == []
