"""Which processes a dev stack started, provably, and one supervisor per child process.

Ownership. Every server ``escalations dev`` starts is recorded in ``DIR/run/<name>.json``
(pid, start time in clock ticks since boot, the exact argv). A later stack stops a recorded
process only when ``/proc/<pid>`` still shows that start time and that command line, so a
re-used pid or a server someone else runs is never touched. ``DIR/run/dev.lock`` is held
(``flock``) by the live stack; the kernel drops it when that process dies, even by SIGKILL,
so taking it proves the previous stack of the data dir is gone and what it recorded is
orphaned.

Supervision. :class:`Supervisor` starts one child, waits until it is ready, then waits on it
(a thread blocked in ``wait()``, no polling). When the child exits unexpectedly it is started
again, with the same arguments, after a short back-off, and each restart is logged at WARNING
with the exit code. After ``max_restarts`` restarts within ``window`` seconds it gives up and
raises :class:`SupervisionError`, which stops the whole stack.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("escalations.dev")


class StackBusy(RuntimeError):
    """Another ``escalations dev`` is running on the same data dir."""


class SupervisionError(RuntimeError):
    """A supervised server kept failing; the message says which and how."""


# -- /proc ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    return raw[raw.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (None: no such process)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def hidden(pid: int) -> bool:
    """The process exists, but ``/proc`` does not show us what it is (e.g. ``hidepid``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _stat_fields(pid) is None or cmdline(pid) is None


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


# -- records ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRecord:
    """A process this data dir's stack started: enough to recognise it, and nothing else."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    port: int | None = None

    def is_alive(self) -> bool:
        """True only for this very process: same pid, same start time, same command line."""
        return (is_running(self.pid) and start_ticks(self.pid) == self.start_ticks
                and cmdline(self.pid) == self.argv)


class RunDir:
    """``DIR/run``: the lock of the live stack and the records of what it started."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "run"
        self._lock: IO[str] | None = None

    def record_path(self, name: str) -> Path:
        return self.path / f"{name}.json"

    def lock(self) -> None:
        """Take the data dir, or raise StackBusy naming the stack that holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / "dev.lock", "a+")  # noqa: SIM115 - held for the stack's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise StackBusy(
                f"another escalations dev (pid {holder}) is running on {self.path.parent}; "
                "stop it first or use another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def write(self, record: ProcessRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.record_path(record.name)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(record)))
        partial.replace(path)

    def read(self, name: str) -> ProcessRecord | None:
        try:
            return ProcessRecord(**json.loads(self.record_path(name).read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            log.warning("ignoring unreadable %s", self.record_path(name))
            return None

    def forget(self, name: str) -> None:
        self.record_path(name).unlink(missing_ok=True)


def record_of(name: str, process: subprocess.Popen[bytes], *, port: int | None = None) -> ProcessRecord:
    argv = [str(arg) for arg in process.args]  # type: ignore[union-attr]
    return ProcessRecord(name=name, pid=process.pid, start_ticks=start_ticks(process.pid) or 0,
                         argv=argv, port=port)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait (bounded) for a process that is not our child to exit; True once it has."""
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_orphan(record: ProcessRecord, signals: Sequence[tuple[signal.Signals, float]]) -> None:
    """Stop a recorded process left by a dead stack: each signal in turn, then SIGKILL."""
    for sig, grace in [*signals, (signal.SIGKILL, 10.0)]:
        if not record.is_alive():
            return
        log.warning("stopping %s (pid %s) left running by a previous escalations dev: %s",
                    record.name, record.pid, sig.name)
        try:
            os.kill(record.pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(record.pid, grace):
            return
    raise SupervisionError(f"{record.name} (pid {record.pid}) left by a previous stack does not stop")


# -- supervision ------------------------------------------------------------


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"code {code}"
    return f"code {code}"


@dataclass
class Child:
    """How to run one server: start it, know when it is ready, stop it."""

    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    ready: Callable[[subprocess.Popen[bytes]], Awaitable[None]]
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    port: int | None = None


class Supervisor:
    """Runs one child process for the stack's lifetime, restarting it when it dies."""

    def __init__(self, child: Child, run_dir: RunDir | None = None, *, max_restarts: int = 5,
                 window: float = 60.0, backoff: float = 0.5, max_backoff: float = 5.0) -> None:
        self.child = child
        self.run_dir = run_dir
        self.max_restarts = max_restarts
        self.window = window
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._exited: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def task(self) -> asyncio.Task[None]:
        assert self._task is not None, "start() first"
        return self._task

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")
        return self._task

    async def wait_ready(self) -> None:
        """Until the child is ready the first time; raises when the supervisor gave up first."""
        ready = asyncio.create_task(self.ready.wait())
        try:
            await asyncio.wait({ready, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.ready.is_set():
            self.task.result()  # raises what made it give up
            raise SupervisionError(f"{self.name} stopped before it was ready")

    async def _run(self) -> None:
        failures: deque[float] = deque()
        delay = self.backoff
        while not self._stopping.is_set():
            started = time.monotonic()
            process = self._spawn()
            exited = self._exited
            assert exited is not None
            not_ready: Exception | None = None
            try:
                await self.child.ready(process)
            except Exception as exc:  # noqa: BLE001 - a failed start counts like an exit
                if self._stopping.is_set():
                    return
                not_ready = exc
                log.warning("%s (pid %s) did not become ready: %s", self.name, process.pid, exc)
                await self._terminate(process)
            else:
                if self.ready.is_set():
                    log.warning("%s is back (pid %s, restart %s)", self.name, process.pid, self.restarts)
                else:
                    log.info("%s is ready (pid %s)", self.name, process.pid)
                self.ready.set()
            code = await asyncio.shield(exited)
            if self._stopping.is_set():
                return
            self._forget(process)
            now = time.monotonic()
            if now - started > self.window:
                delay = self.backoff  # it ran fine for a while: start over from a short pause
            failures.append(now)
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if len(failures) > self.max_restarts:
                raise SupervisionError(
                    f"{self.name} exited with {describe_exit(code)} after {self.max_restarts} "
                    f"restarts within {self.window:.0f} s; giving up"
                    + (f" (last start: {' '.join(str(not_ready).split())})" if not_ready else "")
                )
            self.restarts += 1
            log.warning("%s (pid %s) exited with %s; restarting it in %.1f s",
                        self.name, process.pid, describe_exit(code), delay)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except (TimeoutError, asyncio.TimeoutError):
                pass
            delay = min(delay * 2, self.max_backoff)

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = self.child.spawn()
        self.process = process
        # The one place that waits on the child: a thread blocked in wait(), no polling.
        self._exited = asyncio.ensure_future(asyncio.to_thread(process.wait))
        if self.run_dir is not None:
            self.run_dir.write(record_of(self.name, process, port=self.child.port))
        return process

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        if self.run_dir is not None:
            record = self.run_dir.read(self.name)
            if record is not None and record.pid == process.pid:
                self.run_dir.forget(self.name)

    async def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        exited = self._exited
        assert exited is not None and process is self.process
        if exited.done():
            return
        try:
            process.send_signal(self.child.stop_signal)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(asyncio.shield(exited), self.child.stop_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("%s (pid %s) did not stop within %.0f s; killing it",
                        self.name, process.pid, self.child.stop_timeout)
            process.kill()
            await asyncio.shield(exited)

    async def stop(self) -> None:
        """Stop the child for good, and the supervision; returns once it has exited."""
        self._stopping.set()
        process = self.process
        if process is not None:
            await self._terminate(process)
            self._forget(process)
        if self._task is not None and not self._task.done():
            # Its outcome (a SupervisionError) is for whoever awaits the task, not for us.
            await asyncio.wait({self._task}, timeout=5)
            if not self._task.done():
                self._task.cancel()
