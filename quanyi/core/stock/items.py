"""Card-key stock: importing, levels, and taking items for orders.

Taking stock is one conditional UPDATE over a locked pick (``FOR UPDATE SKIP LOCKED``
on PostgreSQL; SQLite has a single writer), so an item can never go to two orders.

An import holds a lease for its whole run (``ImportLease``), which the operating system or
the database server lets go the moment its process dies; the next import that can take a
batch's lease has proved that import dead and clears its staged rows at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import ColumnElement, Connection, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from quanyi.core.errors import Conflict, InvalidInput, NotFound
from quanyi.core.models import Order, Product, ProductKind, StockBatch, StockItem, StockStatus, utcnow
from quanyi.core.platform import audit
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database, locked_pick, on_connection, rowcount, upsert
from quanyi.core.stock.stockfile import MAX_FILE_BYTES, RejectedLine, StockLine, read_stock_file

log = logging.getLogger(__name__)
BATCH_ROWS = 5000
# Only where no lease can prove an importer dead (an in-memory SQLite database): an import
# commits a chunk every second or so, so ten silent minutes means it died.
STALE_IMPORT = timedelta(minutes=10)
# PostgreSQL advisory locks of import leases are (hash of this name and the schema, batch id):
# advisory locks are per database, and several schemas (each with its own batch ids) may share one.
IMPORT_LOCKS = "quanyi.import:"


@dataclass
class ImportReport:
    sku: str
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    lines: int = 0
    rejected_examples: list[RejectedLine] = field(default_factory=list)
    # Batches of dead imports this import cleared before it began.
    cleared: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StockLevel:
    sku: str
    name: str
    available: int
    reserved: int
    sold: int
    void: int
    expired: int


@dataclass(frozen=True)
class Code:
    serial: str | None
    secret: str


def item_aad(product_id: int) -> bytes:
    # Binds a ciphertext to its product: a row copied to another product fails to decrypt.
    return f"quanyi:stock:{product_id}".encode()


async def import_stock(
    db: Database,
    keyring: KeyRing,
    sku: str,
    path: Path,
    *,
    fmt: str | None = None,
    progress: Callable[[int], None] | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> ImportReport:
    """Import a stock file all or nothing.

    A first pass checks the whole file's structure before anything is written. The
    second pass writes rows as ``staged`` (invisible to sales) in short transactions, so
    sales go on during a long import, and one final UPDATE makes them available. A crash
    leaves only staged rows, which nothing sells and which the next import clears at once
    (``abort_stale_batches``).
    """
    async with db.read() as session:
        product = await session.scalar(select(Product).where(Product.sku == sku))
        if product is None:
            raise NotFound(f"no product {sku}", key="err_stock.no_product", sku=sku)
        if product.kind != ProductKind.CARD_KEY:
            raise InvalidInput(
                f"{sku} is a {product.kind} product; only card_key products take stock files",
                key="err_stock.not_card_key",
                sku=sku,
            )
        product_id = product.id

    report = ImportReport(sku=sku)
    for entry in read_stock_file(path, fmt, max_bytes=max_bytes):  # pass 1: raises StockFileError, writes nothing
        report.lines = entry.line
    report.cleared = await abort_stale_batches(db)
    batch_id, lease = await _open_batch(db, product_id, path.name)
    try:
        await _write_staged(db, keyring, product_id, batch_id, path, fmt, report, progress)
        async with db.transaction() as session:
            done = await session.execute(
                update(StockBatch)
                .where(StockBatch.id == batch_id, StockBatch.status == "importing")
                .values(
                    status="done",
                    imported=report.imported,
                    duplicates=report.duplicates,
                    rejected=report.rejected,
                    finished_at=utcnow(),
                )
            )
            if not rowcount(done):
                raise _taken_over(batch_id)
            await session.execute(
                update(StockItem)
                .where(StockItem.batch_id == batch_id, StockItem.status == StockStatus.STAGED)
                .values(status=StockStatus.AVAILABLE)
                .execution_options(synchronize_session=False)
            )
    except BaseException:
        await abort_batch(db, batch_id)
        raise
    finally:
        await lease.release()
    return report


async def _open_batch(db: Database, product_id: int, source: str) -> tuple[int, ImportLease]:
    """A new importing batch, and its lease, taken before the batch is committed: no one
    ever sees the batch importing while its lease is free."""
    lease: ImportLease | None = None
    try:
        async with db.transaction() as session:
            batch = StockBatch(product_id=product_id, source=source[:255], status="importing")
            session.add(batch)
            await session.flush()
            lease = await ImportLease.take(db, batch.id)
            if lease is None:  # a leftover holder of a reused id (a database recreated under a live import)
                raise Conflict(
                    f"import #{batch.id} is held by another process; run it again",
                    key="err_stock.import_busy",
                    batch=batch.id,
                )
            return batch.id, lease
    except BaseException:
        if lease is not None:
            await lease.release()
        raise


def _taken_over(batch_id: int) -> Conflict:
    return Conflict(
        f"import #{batch_id} was taken over by another import that found it dead; run it again",
        key="err_stock.import_taken_over",
        batch=batch_id,
    )


async def _write_staged(
    db: Database,
    keyring: KeyRing,
    product_id: int,
    batch_id: int,
    path: Path,
    fmt: str | None,
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> None:
    aad = item_aad(product_id)
    pending: list[StockLine] = []
    for entry in read_stock_file(path, fmt):
        if isinstance(entry, RejectedLine):
            report.rejected += 1
            if len(report.rejected_examples) < 20:
                report.rejected_examples.append(entry)
            continue
        pending.append(entry)
        if len(pending) >= BATCH_ROWS:
            await _insert_rows(db, keyring, aad, product_id, batch_id, pending, report)
            pending = []
            if progress:
                progress(entry.line)
    if pending:
        await _insert_rows(db, keyring, aad, product_id, batch_id, pending, report)
    if progress:
        progress(report.lines)


async def _insert_rows(
    db: Database,
    keyring: KeyRing,
    aad: bytes,
    product_id: int,
    batch_id: int,
    lines: Sequence[StockLine],
    report: ImportReport,
) -> None:
    unique: dict[bytes, StockLine] = {}
    for line in lines:
        digest = keyring.lookup_hash(line.secret)
        if digest in unique:
            report.duplicates += 1
        else:
            unique[digest] = line
    now = utcnow()
    async with db.transaction() as session:
        # First, so that a takeover and this chunk are ordered by the batch row's lock: either the
        # takeover sees (and deletes) these rows, or this chunk sees the batch aborted and rolls back.
        beat = await session.execute(
            update(StockBatch)
            .where(StockBatch.id == batch_id, StockBatch.status == "importing")
            .values(heartbeat_at=now)
        )
        if not rowcount(beat):
            raise _taken_over(batch_id)
        existing = set(
            await session.scalars(select(StockItem.secret_hash).where(StockItem.secret_hash.in_(list(unique))))
        )
        rows = []
        for digest, line in unique.items():
            if digest in existing:
                report.duplicates += 1
                continue
            key_id, blob = keyring.encrypt(line.secret, aad)
            rows.append(
                {
                    "product_id": product_id,
                    "batch_id": batch_id,
                    "serial": line.serial,
                    "key_id": key_id,
                    "secret_ct": blob,
                    "secret_hash": digest,
                    "status": StockStatus.STAGED.value,
                    "expires_at": line.expires_at,
                    "created_at": now,
                }
            )
        inserted = 0
        if rows:
            try:
                async with session.begin_nested():
                    await session.execute(insert(StockItem), rows)
                inserted = len(rows)
            except IntegrityError:
                # A concurrent import of the same codes committed between our check and this
                # insert: the slower conflict-tolerant insert counts those as duplicates.
                result = await session.execute(
                    upsert(session, StockItem)
                    .on_conflict_do_nothing(index_elements=[StockItem.secret_hash])
                    .returning(StockItem.id),
                    rows,
                )
                inserted = len(result.all())
        report.imported += inserted
        report.duplicates += len(rows) - inserted


async def abort_stale_batches(db: Database, *, silent_for: timedelta = STALE_IMPORT) -> list[int]:
    """Clear the staged rows of imports whose process died, so their codes can be imported
    again at once; returns the batches cleared. An import is dead when its lease can be taken
    (the lock its process held went with it); a live one is left alone, however slow."""
    async with db.read() as session:
        importing = (
            await session.execute(
                select(StockBatch.id, StockBatch.heartbeat_at)
                .where(StockBatch.status == "importing")
                .order_by(StockBatch.id)
            )
        ).all()
    provable = ImportLease.provable(db)
    cleared: list[int] = []
    for batch_id, heartbeat_at in importing:
        if not provable:
            if heartbeat_at < utcnow() - silent_for and await abort_batch(db, batch_id):
                cleared.append(batch_id)
            continue
        lease = await ImportLease.take(db, batch_id)
        if lease is None:
            continue  # its importer is alive
        try:
            if await abort_batch(db, batch_id):
                cleared.append(batch_id)
                log.warning("import #%s had died; its staged rows are cleared", batch_id)
        finally:
            await lease.release()
    return cleared


async def abort_batch(db: Database, batch_id: int) -> bool:
    """Mark an importing batch aborted and delete its staged rows; False when it was not importing."""
    async with db.transaction() as session:
        # The batch row first: a chunk of its import in flight either committed before (and its
        # rows are deleted here) or sees the batch aborted and rolls back (``_insert_rows``).
        aborted = await session.execute(
            update(StockBatch)
            .where(StockBatch.id == batch_id, StockBatch.status == "importing")
            .values(status="aborted", finished_at=utcnow())
        )
        await session.execute(
            delete(StockItem).where(StockItem.batch_id == batch_id, StockItem.status == StockStatus.STAGED)
        )
        return bool(rowcount(aborted))


class ImportLease:
    """Proof that an import's process is alive, held for the whole import.

    SQLite (one machine): an exclusive ``flock`` on ``<database>.import-<batch>.lock``, which the
    kernel drops when the process dies. PostgreSQL: a session advisory lock on a connection kept
    for the import, which the server drops when the session ends. Whoever takes a batch's
    lease holds it or has proved its importer dead; ``flock`` and session locks conflict within
    one process too, so two imports in one server never take each other's.
    """

    def __init__(
        self, batch_id: int, *, fd: int | None = None, path: Path | None = None, conn: AsyncConnection | None = None
    ) -> None:
        self.batch_id = batch_id
        self._fd, self._path, self._conn = fd, path, conn

    @staticmethod
    def provable(db: Database) -> bool:
        """False for an in-memory SQLite database: no file to lock (and no other process)."""
        return not db.is_sqlite or _lease_path(db, 0) is not None

    @classmethod
    async def take(cls, db: Database, batch_id: int) -> ImportLease | None:
        """The lease of ``batch_id``; None when a live process holds it."""
        if db.is_sqlite:
            path = _lease_path(db, batch_id)
            if path is None:
                return cls(batch_id)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            return cls(batch_id, fd=fd, path=path)
        conn = await db.engine.connect()
        try:
            # Autocommit: the session holds the lock, no transaction stays open for the import.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            held = await conn.scalar(_TRY_LOCK, _lock_key(batch_id))
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            return None
        return cls(batch_id, conn=conn)

    async def release(self) -> None:
        if self._fd is not None:
            # Unlinked while still locked: whoever opens the name later gets a new, free file,
            # and finds the batch no longer importing.
            if self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.execute(_UNLOCK, _lock_key(self.batch_id))
            except BaseException:
                # A connection that may still hold the lock never goes back to the pool.
                await conn.invalidate()
                raise
            finally:
                await conn.close()


def _lease_path(db: Database, batch_id: int) -> Path | None:
    database = db.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return path.with_name(f"{path.name}.import-{batch_id}.lock")


_TRY_LOCK = text("SELECT pg_try_advisory_lock(hashtext(CAST(:space AS text) || current_schema()), :batch)")
_UNLOCK = text("SELECT pg_advisory_unlock(hashtext(CAST(:space AS text) || current_schema()), :batch)")


def _lock_key(batch_id: int) -> dict[str, object]:
    # Two int4 halves: imports of this schema, and the batch id (wrapping only past 2**31 batches).
    return {"space": IMPORT_LOCKS, "batch": batch_id % 2**31}


async def staged_counts(session: AsyncSession, sku: str | None = None) -> dict[str, int]:
    """Rows imports have written but not yet made sellable, per SKU (a running import's progress,
    or a dead one's until the next import clears it)."""
    query = (
        select(Product.sku, func.count())
        .join(StockItem, StockItem.product_id == Product.id)
        .where(StockItem.status == StockStatus.STAGED)
        .group_by(Product.sku)
    )
    if sku is not None:
        query = query.where(Product.sku == sku)
    return {row_sku: count for row_sku, count in (await session.execute(query)).all()}


def _sellable(now: datetime) -> ColumnElement[bool]:
    return or_(StockItem.expires_at.is_(None), StockItem.expires_at > now)


async def available_counts(session: AsyncSession, product_ids: Iterable[int]) -> dict[int, int]:
    ids = list(product_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(StockItem.product_id, func.count())
        .where(
            StockItem.product_id.in_(ids),
            StockItem.status == StockStatus.AVAILABLE,
            _sellable(utcnow()),
        )
        .group_by(StockItem.product_id)
    )
    return {product_id: count for product_id, count in rows.all()}


async def stock_levels(session: AsyncSession, sku: str | None = None) -> list[StockLevel]:
    query = select(Product).order_by(Product.sort_order, Product.id)
    if sku is not None:
        query = query.where(Product.sku == sku)
    products = list(await session.scalars(query))
    if sku is not None and not products:
        raise NotFound(f"no product {sku}", key="err_stock.no_product", sku=sku)
    now = utcnow()
    ids = [p.id for p in products]
    # Two walks of the (product_id, status, ...) indexes, in their order: per status, then the
    # available codes past their expiry (a million codes counted without sorting anything).
    rows = await session.execute(
        select(StockItem.product_id, StockItem.status, func.count())
        .where(StockItem.product_id.in_(ids))
        .group_by(StockItem.product_id, StockItem.status)
    )
    counts: dict[tuple[int, str], int] = {}
    for product_id, status, count in rows.all():
        counts[(product_id, status)] = count
    expired = await session.execute(
        select(StockItem.product_id, func.count())
        .where(
            StockItem.product_id.in_(ids),
            StockItem.status == StockStatus.AVAILABLE,
            StockItem.expires_at.is_not(None),
            StockItem.expires_at <= now,
        )
        .group_by(StockItem.product_id)
    )
    for product_id, count in expired.all():
        counts[(product_id, "expired")] = count
        counts[(product_id, StockStatus.AVAILABLE)] -= count
    return [
        StockLevel(
            sku=p.sku,
            name=p.name,
            available=counts.get((p.id, StockStatus.AVAILABLE), 0),
            reserved=counts.get((p.id, StockStatus.RESERVED), 0),
            sold=counts.get((p.id, StockStatus.SOLD), 0),
            void=counts.get((p.id, StockStatus.VOID), 0),
            expired=counts.get((p.id, "expired"), 0),
        )
        for p in products
    ]


async def take_items(
    session: AsyncSession,
    *,
    product_id: int,
    order_id: int,
    order_line_id: int,
    quantity: int,
    status: StockStatus,
) -> list[int]:
    """Move up to ``quantity`` available items to ``status`` for an order line; returns their ids.

    Fewer ids than asked means the pool ran short; the caller decides (usually by rolling
    back its savepoint).
    """
    now = utcnow()
    pick = locked_pick(
        select(StockItem.id)
        .where(
            StockItem.product_id == product_id,
            StockItem.status == StockStatus.AVAILABLE,
            _sellable(now),
        )
        .order_by(StockItem.id)
        .limit(quantity)
    )
    values: dict[str, object] = {
        "status": status.value,
        "order_id": order_id,
        "order_line_id": order_line_id,
    }
    if status == StockStatus.SOLD:
        values["sold_at"] = now
    result = await session.execute(
        update(StockItem)
        .where(StockItem.id == pick.c.id, StockItem.status == StockStatus.AVAILABLE)
        .values(**values)
        .returning(StockItem.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def sell_reserved(session: AsyncSession, order_id: int) -> int:
    """A paid order's reserved items become sold; returns how many."""
    return (await on_connection(session, lambda conn: sell_reserved_many(conn, [order_id])))[order_id]


# Built once: on the payment path building a statement costs more than running it.
_SELL_RESERVED = (
    update(StockItem)
    .where(StockItem.order_id.in_(bindparam("ids", expanding=True)), StockItem.status == StockStatus.RESERVED)
    .values(status=StockStatus.SOLD, sold_at=bindparam("now"))
    .returning(StockItem.order_id)
)


def sell_reserved_many(conn: Connection, order_ids: Collection[int], now: datetime | None = None) -> Counter[int]:
    """The reserved items of many paid orders become sold, in one statement; returns the
    number sold per order."""
    if not order_ids:
        return Counter()
    sold = conn.execute(_SELL_RESERVED, {"ids": list(order_ids), "now": now or utcnow()}).scalars()
    return Counter(cast("Iterable[int]", sold))  # order_id is set on every reserved item


async def release_reserved(session: AsyncSession, order_id: int) -> int:
    result = await session.execute(
        update(StockItem)
        .where(StockItem.order_id == order_id, StockItem.status == StockStatus.RESERVED)
        .values(status=StockStatus.AVAILABLE, order_id=None, order_line_id=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


async def order_codes(
    session: AsyncSession, keyring: KeyRing, order_id: int, *, actor: str = "system", purpose: str = "system"
) -> dict[int, list[Code]]:
    """Decrypt the sold codes of an order, per order line id. Only for delivery and re-display;
    each decryption is on the audit trail (``actor`` asked, for ``purpose``), so the session must write."""
    items = await session.execute(
        select(StockItem.order_line_id, StockItem.product_id, StockItem.serial, StockItem.key_id, StockItem.secret_ct)
        .where(StockItem.order_id == order_id, StockItem.status == StockStatus.SOLD)
        .order_by(StockItem.id)
    )
    codes: dict[int, list[Code]] = {}
    for line_id, product_id, serial, key_id, blob in items.all():
        secret = keyring.decrypt(key_id, blob, item_aad(product_id))
        codes.setdefault(line_id or 0, []).append(Code(serial, secret))
    if codes:
        number = await session.scalar(select(Order.number).where(Order.id == order_id))
        await audit.record(
            session,
            actor=actor,
            front="core",
            action=f"codes.decrypt.{purpose}",
            object_type="order",
            object_id=number or order_id,
            new={"codes": sum(len(c) for c in codes.values())},
        )
    return codes


async def unsell(session: AsyncSession, order_id: int) -> int:
    """Return an order's items to the pool (a paid order that could not be filled whole)."""
    result = await session.execute(
        update(StockItem)
        .where(StockItem.order_id == order_id, StockItem.status.in_([StockStatus.SOLD, StockStatus.RESERVED]))
        .values(status=StockStatus.AVAILABLE, order_id=None, order_line_id=None, sold_at=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


@dataclass
class VoidReport:
    sku: str
    voided: int = 0
    not_found: int = 0
    already_void: int = 0
    # Codes that had been sold already: their orders, for the operator to follow up.
    sold_orders: list[str] = field(default_factory=list)


async def void_codes(
    db: Database,
    keyring: KeyRing,
    sku: str,
    path: Path,
    *,
    fmt: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    progress: Callable[[int], None] | None = None,
) -> VoidReport:
    """Void the listed codes of a product (a leaked or disputed batch): never sold again.

    The file is read like a stock file (and refused whole when malformed). Available and
    reserved codes are voided; a pending order that held one is refilled from the pool
    when it is paid. Codes already sold are reported with their orders.
    """
    async with db.read() as session:
        product = await session.scalar(select(Product).where(Product.sku == sku))
        if product is None:
            raise NotFound(f"no product {sku}", key="err_stock.no_product", sku=sku)
        product_id = product.id
    for _ in read_stock_file(path, fmt, max_bytes=max_bytes):  # structure first: a malformed file changes nothing
        pass
    report = VoidReport(sku=sku)
    batch: list[bytes] = []

    async def flush() -> None:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(StockItem.secret_hash, StockItem.status, Order.number)
                    .outerjoin(Order, Order.id == StockItem.order_id)
                    .where(StockItem.product_id == product_id, StockItem.secret_hash.in_(batch))
                )
            ).all()
            found = {digest for digest, _, _ in rows}
            report.not_found += len(set(batch) - found)
            for _, status, number in rows:
                if status == StockStatus.VOID:
                    report.already_void += 1
                elif status == StockStatus.SOLD and number:
                    report.sold_orders.append(number)
            result = await session.execute(
                update(StockItem)
                .where(
                    StockItem.product_id == product_id,
                    StockItem.secret_hash.in_(batch),
                    StockItem.status.in_([StockStatus.AVAILABLE, StockStatus.RESERVED, StockStatus.STAGED]),
                )
                .values(status=StockStatus.VOID)
                .execution_options(synchronize_session=False)
            )
            report.voided += rowcount(result)
        batch.clear()

    for entry in read_stock_file(path, fmt):
        if isinstance(entry, RejectedLine):
            continue
        batch.append(keyring.lookup_hash(entry.secret))
        if len(batch) >= BATCH_ROWS:
            await flush()
            if progress:
                progress(entry.line)
    if batch:
        await flush()
    return report
