"""Engine, sessions and transactions for SQLite (embedded) and PostgreSQL.

SQLite allows one writer at a time. Writers in this process queue on an asyncio lock
instead of spinning in SQLite's busy handler, and take the write lock at BEGIN
(``BEGIN IMMEDIATE``) so a transaction never fails half-way on lock upgrade. Readers
use plain deferred transactions and, with WAL, never wait for writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import CTE, Connection, CursorResult, Engine, Result, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from quanyi.core.platform.audit_chain import Chain

T = TypeVar("T")
# Where a session's ``info`` and a write connection's execution options carry the audit chain's key.
AUDIT_CHAIN = "quanyi_audit_chain"


def write_audit(session: Session) -> None:
    from quanyi.core.platform import audit

    audit.write_pending(session)


class Database:
    def __init__(self, url: str, *, echo: bool = False, **engine_kwargs: Any) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                _create_private(Path(database))
            engine_kwargs.setdefault("connect_args", {})
            engine_kwargs["connect_args"].setdefault("timeout", 30)
        else:
            engine_kwargs.setdefault("pool_size", 20)
            engine_kwargs.setdefault("max_overflow", 10)
        self.engine: AsyncEngine = create_async_engine(url, echo=echo, **engine_kwargs)
        # On SQLite, hot write paths run whole transactions in a worker thread over the plain
        # sqlite3 driver: one hop per transaction instead of one per statement (run_write).
        self._sync_engine: Engine | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine)
            if self.url.database and self.url.database != ":memory:":
                self._sync_engine = create_engine(
                    self.url.set(drivername="sqlite"),
                    echo=echo,
                    connect_args={"check_same_thread": False, "timeout": 30},
                )
                _configure_sqlite(self._sync_engine)
        # Every session and write connection carries the audit chain (see ``audit_chain``); a
        # session copies this dict when it opens.
        self._audit: dict[str, Any] = {}
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=self._audit)
        from quanyi.core.platform import audit

        audit.install()
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def audit_chain(self) -> Chain | None:
        return self._audit.get(AUDIT_CHAIN)

    @audit_chain.setter
    def audit_chain(self, chain: Chain) -> None:
        """The audit key, set by ``build_core``: without it nothing can be appended to the trail."""
        self._audit[AUDIT_CHAIN] = chain

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A read-write transaction, committed on normal exit, rolled back on error.

        Services never commit; the caller's ``transaction()`` is the unit of work.
        """
        if self._write_lock is None:
            async with self._write_session() as session:
                yield session
            return
        async with self._write_lock, self._write_session() as session:
            yield session

    @asynccontextmanager
    async def _write_session(self) -> AsyncIterator[AsyncSession]:
        async with self.engine.connect() as conn:
            await conn.execution_options(quanyi_write=True)
            async with conn.begin():
                session = AsyncSession(bind=conn, expire_on_commit=False, info=self._audit)
                try:
                    yield session
                    # The last flush; operators' changes go on the audit trail in this transaction.
                    await session.run_sync(write_audit)
                finally:
                    await session.close()

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction on a synchronous connection and return its result.

        SQLite: in a worker thread, holding this process's write lock. PostgreSQL: on an
        async connection through ``run_sync``. ``fn`` must use Core statements only.
        """
        if self._sync_engine is not None:
            assert self._write_lock is not None
            async with self._write_lock:
                return await asyncio.to_thread(self._run_in_thread, fn)
        async with self._write_lock or contextlib.nullcontext(), self.engine.connect() as conn:
            await conn.execution_options(quanyi_write=True, **self._audit)
            async with conn.begin():
                return await conn.run_sync(fn)

    def _run_in_thread(self, fn: Callable[[Connection], T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            conn.execution_options(quanyi_write=True, **self._audit)
            with conn.begin():
                return fn(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> bool:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()


def _create_private(path: Path) -> None:
    """Create a new SQLite file readable by its owner only (0600); SQLite gives its -wal and -shm
    files the database file's mode. An existing file keeps its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _configure_sqlite(sync_engine: Engine) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin,
        # so that SAVEPOINTs and BEGIN IMMEDIATE work.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("quanyi_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def locked_pick(query: Select[Any], name: str = "picked") -> CTE:
    """Rows to change, locked and skipped if another transaction holds them.

    Use as ``update(T).where(T.id == pick.c.id)``. A materialized CTE, not
    ``WHERE id IN (subquery)``: PostgreSQL may run an IN-subquery with LIMIT and
    SKIP LOCKED more than once and so change more rows than the LIMIT. SQLite has
    one writer and ignores the lock clause.
    """
    return query.with_for_update(skip_locked=True).cte(name).prefix_with("MATERIALIZED", dialect="postgresql")


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


def upsert(session: AsyncSession, model: type[Any]) -> Any:
    """``INSERT ... ON CONFLICT`` for the session's dialect (SQLite and PostgreSQL share the syntax)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


async def on_connection(session: AsyncSession, step: Callable[[Connection], T]) -> T:
    """Run a set-based step written for a synchronous connection (see ``run_write``) inside the
    session's transaction, so the one-by-one path and the batched path share one statement.
    The session is flushed first, as ``session.execute`` would, so the step sees its pending rows."""

    def run(sync: Session) -> T:
        sync.flush()
        return step(sync.connection())

    return await session.run_sync(run)


# What a door catches when the database itself fails (unreachable, locked, full): it says why in one
# line rather than show a traceback. Rules refused by the core raise ``QuanyiError`` instead.
DatabaseError = SQLAlchemyError


def redacted_url(url: str) -> str:
    """The database URL as it may be shown: the password replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)
