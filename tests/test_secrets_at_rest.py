"""Card-key secrets are encrypted at rest and never reach the database files or a log."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import secrets
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.core.catalog.products import add_product
from quanyi.core.errors import CardKeyError, ConfigError
from quanyi.core.models import Order, Product, StockItem
from quanyi.core.money import Money
from quanyi.core.platform import outbox
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KEY_FILE, KeyRing, create_key_file
from quanyi.core.platform.logs import RedactSecrets, configure_logging, secrets_of
from quanyi.core.platform.migrate import upgrade
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import delivered_codes
from quanyi.core.services import build_core
from quanyi.core.stock.items import import_stock, item_aad
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock, sandbox_event

CONTROL = "PLAINTEXT-CONTROL-7f3a9c"  # stored in the clear on purpose: proves the scan sees the data


def forms(secret: str) -> list[bytes]:
    """Every way a secret could sit in a file: its UTF-8 bytes, hex text, and an unkeyed digest."""
    raw = secret.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), hashlib.sha256(raw).digest()]


def database_files(db_path: Path) -> bytes:
    parts = [db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def log_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in records)


async def test_no_secret_in_the_database_files_or_logs_after_an_import_and_a_sale(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # statements, parameters and rows
    settings = make_settings(tmp_path)  # the embedded default: SQLite file and key file in the data dir
    create_key_file(settings.data_dir / KEY_FILE)  # as `quanyi db upgrade` does for a new database
    core = build_core(settings)
    db_path = settings.data_dir / "quanyi.db"
    try:
        await upgrade(core.db.engine)
        async with core.db.transaction() as session:
            await add_product(
                session, sku="VIP", name="VIP", kind="card_key", price=Money.parse("15.00", "CNY"), description=CONTROL
            )
        codes = [(f"SN-{n}", f"SECRET-{secrets.token_hex(12)}") for n in range(4)]
        codes.append(("SN-4", f"卡密-{secrets.token_hex(8)}"))
        stock = tmp_path / "keys.csv"
        stock.write_text("serial,secret\n" + "".join(f"{serial},{secret}\n" for serial, secret in codes))
        report = await import_stock(core.db, core.keyring, "VIP", stock)
        assert report.imported == len(codes)

        placed = await new_order(core, quantity=2)
        event = sandbox_event(placed.order.number, placed.order.amount)
        assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED
        sender = OutboxSender(core, bot=None)  # type: ignore[arg-type]  # only rendering, nothing is sent
        due = await outbox.claim_due(core.db, limit=10, lease=timedelta(seconds=60))
        texts = [text for message in due if message.kind == "delivery" for text in await sender.render(message)]
        delivered = [secret for _, secret in codes if any(secret in text for text in texts)]
        assert len(delivered) == 2  # the buyer does get the plaintext, in the chat message only

        live = database_files(db_path)  # WAL mode: recent pages sit in the -wal file
        assert CONTROL.encode() in live
        for _, secret in codes:
            for form in forms(secret):
                assert form not in live, f"a secret ({form[:6]!r}...) is readable in the database files"
    finally:
        await core.close()

    checkpointed = database_files(db_path)
    assert CONTROL.encode() in checkpointed
    for _, secret in codes:
        for form in forms(secret):
            assert form not in checkpointed

    logged = log_text(caplog.records)
    assert "INSERT INTO stock_items" in logged and "SN-3" in logged  # parameters were logged
    for _, secret in codes:
        assert secret not in logged
        assert secret.encode().hex() not in logged


def test_the_key_file_is_created_0600_for_a_new_database_and_reused_after(tmp_path):
    settings = make_settings(tmp_path / "fresh")
    path = settings.data_dir / KEY_FILE
    assert not settings.data_dir.exists()
    with pytest.raises(ConfigError, match="no key file"):  # loading never makes keys
        KeyRing.load(settings)
    assert not path.exists()
    old_umask = os.umask(0)  # the mode must not depend on a lenient umask
    try:
        assert create_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    first = KeyRing.load(settings)

    assert not create_key_file(path)  # never replaced
    second = KeyRing.load(settings)
    assert path.read_bytes() == content
    key_id, blob = first.encrypt("CODE-123", b"aad")
    assert second.decrypt(key_id, blob, b"aad") == "CODE-123"
    assert second.lookup_hash("CODE-123") == first.lookup_hash("CODE-123")
    data = json.loads(content)
    assert data["lookup_key"] not in data["enc_keys"].values()  # a separate HMAC key
    assert data["audit_key"] not in (data["lookup_key"], *data["enc_keys"].values())
    assert "CODE-123" not in repr(first) and data["lookup_key"] not in repr(first)


def _env_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    for name in ("QUANYI_CARD_KEYS", "QUANYI_CARD_KEY_ACTIVE", "QUANYI_LOOKUP_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QUANYI_DATA_DIR", str(tmp_path / "data"))
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _b64key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def test_keys_from_the_environment_rotate_and_refuse_unknown_or_tampered_ciphertexts(monkeypatch, tmp_path):
    old, new, lookup = _b64key(), _b64key(), _b64key()
    before = KeyRing.load(_env_settings(monkeypatch, tmp_path, QUANYI_CARD_KEYS=f"old:{old}", QUANYI_LOOKUP_KEY=lookup))
    old_id, old_blob = before.encrypt("CODE-OLD-42", b"aad")
    assert old_id == "old"

    ring = KeyRing.load(
        _env_settings(
            monkeypatch,
            tmp_path,
            QUANYI_CARD_KEYS=f"old:{old},new:{new}",
            QUANYI_CARD_KEY_ACTIVE="new",
            QUANYI_LOOKUP_KEY=lookup,
        )
    )
    assert not (tmp_path / "data" / KEY_FILE).exists()  # keys from the environment write no key file
    new_id, new_blob = ring.encrypt("CODE-NEW-43", b"aad")
    assert new_id == "new"
    assert ring.decrypt(old_id, old_blob, b"aad") == "CODE-OLD-42"  # rotated keys still open old rows
    assert ring.lookup_hash("CODE-OLD-42") == before.lookup_hash("CODE-OLD-42")  # the lookup key is separate

    only_new = KeyRing.load(
        _env_settings(monkeypatch, tmp_path, QUANYI_CARD_KEYS=f"new:{new}", QUANYI_LOOKUP_KEY=lookup)
    )
    with pytest.raises(CardKeyError) as unknown:
        only_new.decrypt(old_id, old_blob, b"aad")
    tampered = bytearray(new_blob)
    tampered[-1] ^= 0x01
    with pytest.raises(CardKeyError) as forged:
        ring.decrypt(new_id, bytes(tampered), b"aad")
    with pytest.raises(CardKeyError):
        ring.decrypt(new_id, new_blob, b"other aad")
    for error in (unknown.value, forged.value):
        text = str(error) + repr(error) + error.message
        for leak in ("CODE-OLD-42", "CODE-NEW-43", old, new, lookup):
            assert leak not in text

    other_lookup = KeyRing.load(
        _env_settings(monkeypatch, tmp_path, QUANYI_CARD_KEYS=f"new:{new}", QUANYI_LOOKUP_KEY=_b64key())
    )
    assert other_lookup.lookup_hash("CODE-NEW-43") != ring.lookup_hash("CODE-NEW-43")


@pytest.mark.parametrize(
    "env",
    [
        {"QUANYI_CARD_KEYS": "k1:" + base64.b64encode(b"k" * 32).decode()},  # no lookup key
        {"QUANYI_LOOKUP_KEY": base64.b64encode(b"l" * 32).decode()},  # no card keys
        {"QUANYI_CARD_KEYS": "k1:not-base64-TOPSECRET!", "QUANYI_LOOKUP_KEY": base64.b64encode(b"l" * 32).decode()},
        {
            "QUANYI_CARD_KEYS": "k1:" + base64.b64encode(b"short").decode(),
            "QUANYI_LOOKUP_KEY": base64.b64encode(b"l" * 32).decode(),
        },
        {
            "QUANYI_CARD_KEYS": "k1:" + base64.b64encode(b"k" * 32).decode(),
            "QUANYI_CARD_KEY_ACTIVE": "k9",
            "QUANYI_LOOKUP_KEY": base64.b64encode(b"l" * 32).decode(),
        },
    ],
    ids=["no-lookup-key", "no-card-keys", "bad-base64", "short-key", "unknown-active-id"],
)
def test_incomplete_or_invalid_environment_keys_are_refused_without_echoing_them(monkeypatch, tmp_path, env):
    with pytest.raises(ConfigError) as caught:
        KeyRing.load(_env_settings(monkeypatch, tmp_path, **env))
    assert "TOPSECRET" not in caught.value.message
    assert base64.b64encode(b"k" * 32).decode() not in caught.value.message


async def test_a_ciphertext_moved_to_another_product_does_not_decrypt(core, tmp_path):
    codes = await product_with_stock(core, tmp_path, sku="CHEAP", units=1)
    await product_with_stock(core, tmp_path, sku="DEAR", price="99.00", units=0)
    async with core.db.transaction() as session:
        dear = await session.scalar(select(Product.id).where(Product.sku == "DEAR"))
        cheap = await session.scalar(select(Product.id).where(Product.sku == "CHEAP"))
        item = (await session.execute(select(StockItem.key_id, StockItem.secret_ct))).one()
        # Someone with database access re-labels a cheap code as stock of a dear product.
        await session.execute(update(StockItem).values(product_id=dear))
    assert core.keyring.decrypt(item.key_id, item.secret_ct, item_aad(cheap)) == codes[0]
    with pytest.raises(CardKeyError):
        core.keyring.decrypt(item.key_id, item.secret_ct, item_aad(dear))

    placed = await new_order(core, sku="DEAR")
    assert (
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount)) == PaymentOutcome.DELIVERED
    )
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == placed.order.number))
        with pytest.raises(CardKeyError) as caught:
            await delivered_codes(session, core.keyring, order)
    assert codes[0] not in str(caught.value)


def test_the_logging_filter_redacts_the_bot_token_and_the_epay_key(tmp_path):
    token = "7123456789:AAH-fake_TokenValue0123456789abcdef"
    epay_key = "EpayMerchantKey-9f8e7d6c"
    settings = make_settings(tmp_path, bot_token=token, epay_key=epay_key)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets(secrets_of(settings)))
    log = logging.getLogger("quanyi.test_redaction")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        log.warning("POST https://api.telegram.org/bot%s/sendMessage failed", token)
        log.info("epay sign key=%s", epay_key)
        log.info("token as-is: " + token)
        log.info("another bot's URL: https://api.telegram.org/bot555:OtherToken_x/getMe")
        try:
            raise ConnectionError(f"Cannot connect to https://api.telegram.org/bot{token}/getUpdates ({epay_key})")
        except ConnectionError:
            log.exception("polling failed")
    finally:
        log.removeHandler(handler)
    output = stream.getvalue()
    assert "polling failed" in output and "ConnectionError" in output and "sendMessage failed" in output
    assert output.count("<redacted>") >= 6
    for leak in (token, token.split(":")[1], epay_key, "OtherToken_x"):
        assert leak not in output


def test_configure_logging_installs_the_redaction_on_the_root_handler(tmp_path, capsys):
    token = "7123456789:AAH-fake_TokenValue0123456789abcdef"
    settings = make_settings(tmp_path, bot_token=token, log_level="INFO")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(settings)
        logging.getLogger("quanyi.anything").warning("token %s", token)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "token <redacted>" in err and token not in err
