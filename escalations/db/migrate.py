"""Plain-SQL migrations, applied in file-name order, recorded, under an advisory lock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

# Any constant shared by every process that migrates this database.
MIGRATION_LOCK = 7_391_004_211


class MigrationError(RuntimeError):
    """An applied migration was edited afterwards; the database and the code disagree."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def packaged_migrations() -> list[Migration]:
    folder = resources.files("escalations.db") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name
    )
    return [Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is missing; return the versions applied now."""
    migrations = packaged_migrations() if migrations is None else migrations
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    text PRIMARY KEY,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = {
                r["version"]: r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            done: list[str] = []
            for migration in migrations:
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version} was changed after it was applied; "
                            "add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                        migration.version,
                        migration.checksum,
                    )
                done.append(migration.version)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        await conn.close()
