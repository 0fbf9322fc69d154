"""What another local user can reach of the dev stack: nothing.

Secrets files are born private (never chmod'ed afterwards), the embedded PostgreSQL asks for
a password (scram-sha-256; an older ``trust`` cluster is switched over), the data dir is
private, and binaries run as root come only from a folder root owns and nobody else can write.
(``tests/test_dev_stack.py`` checks the same on a running ``escalations dev``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest

from escalations.connect import write_private
from escalations.devstack import secrets
from escalations.devstack.postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    _wheel_install,
    copy_install,
    fallback_cluster_dir,
    owned_root,
)
from escalations.devstack.temporal import TemporalDevServer

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: it hands a folder to another user (chown)")


@pytest.fixture
def wide_umask():
    # The way a careless shell leaves it: every file readable and writable by everyone.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def cluster(tmp_path: Path):
    made: list[EmbeddedPostgres] = []
    yield made
    for server in made:
        server.destroy()
        shutil.rmtree(fallback_cluster_dir(server.data_dir), ignore_errors=True)


# -- files born private -----------------------------------------------------------


def test_private_files_are_created_600_and_replace_wider_ones(tmp_path, wide_umask, monkeypatch):
    target = tmp_path / "stack.json"
    target.write_text("{}")
    target.chmod(0o644)
    seen: list[int] = []
    real_replace = os.replace

    def replace_and_look(source, destination):
        seen.append(mode(Path(source)))  # the new file before it takes the name
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_and_look)
    write_private(target, '{"api_token": "t"}')
    monkeypatch.undo()
    assert seen == [0o600]
    assert mode(target) == 0o600 and json.loads(target.read_text()) == {"api_token": "t"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"]


def test_kept_secrets_are_600_stable_and_tighten_an_old_file(tmp_path, wide_umask):
    data_dir = tmp_path / "data"
    first = secrets.keep(data_dir, "api_token", "webhook_secret")
    assert mode(data_dir / "secrets.json") == 0o600
    assert secrets.keep(data_dir, "api_token", "webhook_secret") == first
    (data_dir / "secrets.json").chmod(0o644)  # as an older version left it
    password = secrets.keep(data_dir, "postgres_password")["postgres_password"]
    assert mode(data_dir / "secrets.json") == 0o600
    assert json.loads((data_dir / "secrets.json").read_text()) == {**first, "postgres_password": password}
    with pytest.raises(ValueError, match="no generator"):
        secrets.keep(data_dir, "nope")


def test_temporal_files_an_older_version_left_readable_become_private(tmp_path, wide_umask):
    server = TemporalDevServer(db_file=tmp_path / "temporal.db", log_file=tmp_path / "temporal.log")
    for name in ("temporal.db", "temporal.db-wal", "temporal.db-shm", "temporal.log"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o644)
    server.private_files()
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        name: 0o600 for name in ("temporal.db", "temporal.db-wal", "temporal.db-shm", "temporal.log")}


# -- PostgreSQL asks for the password ------------------------------------------------


async def refused(url: str) -> None:
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        connection = await asyncpg.connect(url, timeout=10)
        await connection.close()


async def test_embedded_postgres_needs_its_password(tmp_path, cluster):
    server = EmbeddedPostgres(tmp_path / "data", durable=False, database="postgres")
    cluster.append(server)
    dsn = await asyncio.to_thread(server.start)
    kept = json.loads((tmp_path / "data" / "secrets.json").read_text())["postgres_password"]
    assert f":{kept}@" in dsn
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await connection.fetchval("SHOW password_encryption") == "scram-sha-256"
    finally:
        await connection.close()
    await refused(f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
    await refused(f"postgresql://postgres:wrong@127.0.0.1:{server.port}/postgres")
    hba = [line.split() for line in (server.cluster / "pg_hba.conf").read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    assert hba and {rule[-1] for rule in hba} == {"scram-sha-256"}
    assert mode(server.cluster) == 0o700
    assert mode(tmp_path / "data") in (0o700, 0o710)


async def test_a_trust_cluster_of_an_older_version_is_switched_to_scram(tmp_path, cluster):
    server = EmbeddedPostgres(tmp_path / "data", durable=False, database="postgres")
    cluster.append(server)
    # What the previous version made: initdb --auth=trust.
    server.cluster.mkdir(parents=True, mode=0o700)
    if server._user:
        os.chown(server.cluster, server._user.pw_uid, server._user.pw_gid)
    await asyncio.to_thread(server._run, "initdb", "-D", str(server.cluster), "-U", "postgres",
                            "--auth=trust", "--encoding=UTF8", "--locale=C", timeout=180)
    dsn = await asyncio.to_thread(server.start)
    await refused(f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
    connection = await asyncpg.connect(dsn, timeout=10)
    await connection.close()
    assert not server._trust_lines()


# -- binaries run as root come from a folder only root controls -------------------------


def test_a_folder_owned_by_another_user_is_refused(tmp_path):
    as_root()
    theirs = tmp_path / "safe"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(EmbeddedPostgresError, match="owned by uid 65534"):
        copy_install(_wheel_install(), theirs)
    assert list(theirs.iterdir()) == []  # nothing copied, nothing run


def test_a_folder_others_can_write_or_a_symlink_is_refused(tmp_path):
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    with pytest.raises(EmbeddedPostgresError, match="writable by others"):
        owned_root(open_folder)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(EmbeddedPostgresError, match="not a folder"):
        owned_root(link)


def test_a_copy_tampered_with_after_the_fact_is_refused(tmp_path):
    as_root()
    copied = copy_install(_wheel_install(), tmp_path / "safe")
    os.chown(copied / "bin", NOBODY, NOBODY)
    with pytest.raises(EmbeddedPostgresError, match="owned by uid 65534"):
        copy_install(_wheel_install(), tmp_path / "safe")


def test_a_fresh_folder_is_made_root_owned_755(tmp_path, wide_umask):
    made = owned_root(tmp_path / "fresh")
    assert mode(made) == 0o755 and os.lstat(made).st_uid == os.geteuid()
