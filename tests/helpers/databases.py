"""PostgreSQL for tests: a migrated template database, cloned into a clean database per test."""

from __future__ import annotations

import asyncpg

from escalations.db.migrate import migrate

TEMPLATE_DB = "escalations_template"


def with_database(url: str, database: str) -> str:
    """``url`` (any database on the server, query kept) naming ``database`` instead."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


async def create_template(server_url: str, name: str = TEMPLATE_DB) -> str:
    """(Re)create the migrated template database ``name`` on the server; returns its name."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate(with_database(server_url, name))
    return name


async def create_database(server_url: str, name: str, template: str) -> str:
    """A new database ``name`` cloned from ``template``; returns its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
