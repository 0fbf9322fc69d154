"""Servers a fault test owns and may freeze (SIGSTOP) or kill (SIGKILL): ``OwnPostgres``, ``OwnTemporal``.

Each keeps its state on disk, so a killed server restarts with its data; ``recover`` thaws
or restarts it, whatever the test did. The fixtures that start them for a test module are in
``tests/faults/conftest.py``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from escalations.devstack.postgres import EmbeddedPostgres, free_port
from escalations.devstack.temporal import TemporalDevServer


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # a zombie no one has reaped yet is as dead as it gets


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class OwnPostgres:
    """An embedded PostgreSQL of a test module's own (the fixture migrates its database)."""

    def __init__(self, folder: Path) -> None:
        # Durable: a killed server must keep every transaction it acknowledged (the projection
        # forgets what PostgreSQL confirmed), as production's synchronous_commit=on does.
        self.server = EmbeddedPostgres(folder, durable=True, database="escalations")
        self.frozen: list[int] = []
        self.killed = False

    @property
    def dsn(self) -> str:
        return self.server.dsn

    def _postmaster(self) -> int:
        return int((self.server.cluster / "postmaster.pid").read_text().splitlines()[0])

    def freeze(self) -> None:
        main = self._postmaster()
        _signal([main], signal.SIGSTOP)  # first, so it forks no new backend
        self.frozen = [main, *_children(main)]
        _signal(self.frozen, signal.SIGSTOP)

    def thaw(self) -> None:
        _signal(self.frozen, signal.SIGCONT)
        self.frozen = []

    def kill(self) -> None:
        main = self._postmaster()
        everyone = [main, *_children(main)]
        _signal(everyone, signal.SIGKILL)
        self.thaw()
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in everyone):
            assert time.monotonic() < deadline, "PostgreSQL did not die"
            time.sleep(0.05)
        # Its lock file names a dead (or unreaped) process: stale, as after a crash.
        (self.server.cluster / "postmaster.pid").unlink(missing_ok=True)
        self.killed = True

    def restart(self) -> None:
        self.server.start()  # same port, same data
        self.killed = False

    def recover(self) -> None:
        self.thaw()
        if self.killed:
            self.restart()


class OwnTemporal:
    """A Temporal dev server of a test module's own, its state in a SQLite file (survives a kill)."""

    def __init__(self, folder: Path) -> None:
        self.server = TemporalDevServer(port=free_port(), ui_port=None, db_file=folder / "temporal.db")
        self.frozen = False
        self.killed = False

    @property
    def address(self) -> str:
        return self.server.address

    async def start(self) -> None:
        self.server.start()
        await self.server.wait_ready(60)
        self.killed = False

    def freeze(self) -> None:
        assert self.server.process is not None
        os.killpg(self.server.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.server.process is not None:
            os.killpg(self.server.process.pid, signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        assert self.server.process is not None
        os.killpg(self.server.process.pid, signal.SIGKILL)
        self.frozen = False
        self.server.process.wait(10)
        self.killed = True

    async def recover(self) -> None:
        self.thaw()
        if self.killed:
            await self.start()
