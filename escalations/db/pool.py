"""The asyncpg pool: built once at start-up by whoever runs the process, then passed down.

``create_pool(dsn)`` is the plain pool the worker and the CLI use. Given an
``acquire_timeout``, it builds a ``BoundedPool`` instead (the API's), whose
every use is bounded in time and whose infrastructure failures are typed:

- ``pool.acquire()`` (and ``pool.fetchval`` & co., which use it) waits at most
  ``acquire_timeout`` seconds for a connection, connecting included;
- each statement runs under ``command_timeout`` (asyncpg's own timeout);
- a timeout raises ``DatabaseTimeout`` (a ``TimeoutError``), a refused or lost
  connection ``DatabaseUnavailable`` (a ``ConnectionError``); a connection that
  timed out or failed is terminated at once rather than waited on, so a frozen
  server costs the caller one timeout, not two;
- ``min_size`` may be 0: then nothing connects before the first use, so a
  process starts while PostgreSQL is down and connects once it is back.

``ping(pool, timeout)`` is the health probe: one ``SELECT 1`` round trip.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext


class DatabaseUnavailable(ConnectionError):
    """PostgreSQL refused or dropped the connection, or is shutting down / starting up."""


class DatabaseTimeout(TimeoutError):
    """PostgreSQL did not answer (a connection or a statement) within the configured time."""


# SQLSTATE classes and errors that mean "the server is not there right now", not "your query is wrong".
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08 (connection was closed in the middle of operation, ...)
    asyncpg.CannotConnectNowError,  # 57P03: starting up / shutting down
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
)


def database_fault(exc: BaseException) -> type[DatabaseUnavailable] | type[DatabaseTimeout] | None:
    """Whether ``exc`` (raised by asyncpg) is an infrastructure fault, and which kind.

    Statement errors (constraint violations, syntax, ...) are not: they return None.
    """
    if isinstance(exc, (DatabaseUnavailable, DatabaseTimeout)):
        return type(exc)
    if isinstance(exc, asyncpg.QueryCanceledError):  # 57014: statement_timeout or a cancel request
        return DatabaseTimeout
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return DatabaseTimeout
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return DatabaseUnavailable
    if isinstance(exc, asyncpg.InterfaceError) and ("closed" in str(exc) or "closing" in str(exc)):
        return DatabaseUnavailable  # the pool or the connection is closed (shutdown, terminated)
    if isinstance(exc, OSError):  # refused, reset, unreachable, name resolution
        return DatabaseUnavailable
    return None


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class _BoundedAcquire(PoolAcquireContext):
    """``async with pool.acquire() as conn``: bounded, with infrastructure failures typed."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        try:
            return await super().__aenter__()
        except Exception as exc:
            raise _typed(exc, f"no PostgreSQL connection within {self.timeout:g}s") from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        # The proxy's connection; None once asyncpg has already dropped it (server gone mid-query).
        connection = getattr(self.connection, "_con", None)
        broken = exc_val is not None and (
            isinstance(exc_val, asyncio.CancelledError) or database_fault(exc_val) is not None
        )
        if broken and connection is not None and not connection.is_closed():
            # A statement timed out or the link failed: the connection may be stuck waiting on a
            # frozen server (or on the cancel request asyncpg sends). Drop it rather than wait.
            connection.terminate()
        try:
            await super().__aexit__(exc_type, exc_val, exc_tb)
        except Exception as release_error:
            if exc_val is not None and not isinstance(exc_val, Exception):
                raise exc_val from release_error  # a cancellation stays one
            if isinstance(exc_val, Exception) and database_fault(exc_val) is not None:
                raise _typed(exc_val, "a PostgreSQL statement did not finish in time") from release_error
            # Handing the connection back failed (reset on a server that stopped answering).
            raise _typed(release_error, "PostgreSQL did not answer in time") from release_error
        if isinstance(exc_val, Exception) and database_fault(exc_val) is not None:
            typed = _typed(exc_val, "a PostgreSQL statement did not finish in time")
            if typed is not exc_val:
                raise typed from exc_val

    def __await__(self) -> Any:
        return self._acquire_typed().__await__()

    async def _acquire_typed(self) -> Any:
        self.done = True
        try:
            return await self.pool._acquire(self.timeout)
        except Exception as exc:
            raise _typed(exc, f"no PostgreSQL connection within {self.timeout:g}s") from exc


def _typed(exc: Exception, timeout_message: str) -> Exception:
    kind = database_fault(exc)
    if kind is None or isinstance(exc, kind):
        return exc
    if kind is DatabaseTimeout:
        return DatabaseTimeout(timeout_message)
    return DatabaseUnavailable(f"PostgreSQL is unavailable ({type(exc).__name__})")


class BoundedPool(asyncpg.Pool):
    """An asyncpg pool whose ``acquire()`` defaults to ``acquire_timeout`` and types its failures."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return _BoundedAcquire(self, timeout if timeout is not None else self.acquire_timeout)


async def ping(pool: asyncpg.Pool, timeout: float | None = None) -> None:
    """One round trip (``SELECT 1``): a connection from the pool and an answer within ``timeout`` seconds."""
    await pool.fetchval("SELECT 1", timeout=timeout)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float | None = 60,
    acquire_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> asyncpg.Pool:
    """The pool for ``dsn``. With ``acquire_timeout``, a ``BoundedPool`` (see the module docstring).

    ``command_timeout``: seconds any statement may run (asyncpg raises TimeoutError after);
    ``connect_timeout``: seconds a new connection may take (asyncpg's default is 60).
    """
    extra: dict[str, Any] = {}
    if connect_timeout is not None:
        extra["timeout"] = connect_timeout
    if acquire_timeout is None:
        return await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection,
            command_timeout=command_timeout, **extra,
        )
    pool = BoundedPool(
        dsn,
        acquire_timeout=acquire_timeout,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=command_timeout,
        **extra,
    )
    try:
        await pool
    except Exception as exc:
        raise _typed(exc, f"no PostgreSQL connection within {connect_timeout or acquire_timeout:g}s") from exc
    return pool
