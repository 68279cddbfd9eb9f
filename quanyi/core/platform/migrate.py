"""Schema migrations (alembic), run from ``quanyi db upgrade`` and checked by ``serve``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from quanyi.core.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parents[2] / "alembic"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def run(connection: object) -> None:
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a SQLite table (copy, drop, rename); with foreign keys
            # on, the drop fails for rows other tables point at. The pragma only works outside
            # a transaction; the check afterwards proves the rebuilt tables still line up.
            await _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            async with conn.begin():
                await conn.run_sync(run)
                if sqlite:
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise ConfigError(f"migration left {len(broken)} rows with broken references; rolled back")
        finally:
            if sqlite:
                await _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")


async def _sqlite_pragma(conn: AsyncConnection, pragma: str) -> None:
    raw = await conn.get_raw_connection()
    await raw.driver_connection.execute(pragma)  # type: ignore[union-attr]


async def require_current(engine: AsyncEngine) -> None:
    """Refuse to run against a database that is behind the code's schema."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()

    def current(connection: object) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()  # type: ignore[arg-type]

    async with engine.connect() as conn:
        revision = await conn.run_sync(current)
    if revision != head:
        raise ConfigError(f"database schema is at {revision or 'nothing'}, code needs {head}: run `quanyi db upgrade`")


def run_upgrade(engine: AsyncEngine) -> None:
    asyncio.run(upgrade(engine))
