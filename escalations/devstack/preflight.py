"""What ``escalations dev`` checks before it starts anything: the data dir and every port.

A busy port found after PostgreSQL, the migrations and Temporal have started means a long
shutdown and a long error; found first, it is one line naming the option to change, and
nothing has been started that must be stopped. (Ports can still be taken between the check
and the start: that race ends the same way, later.)
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path


class PreflightError(RuntimeError):
    """One line: what is wrong and which option or variable changes it."""


def usable_data_dir(data_dir: Path) -> None:
    """``data_dir`` exists (created, private, if it did not) and is a folder this user can write."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise PreflightError(f"the data dir {data_dir} is a file, not a folder; pick another with --data-dir "
                             "or ESCALATION_DATA_DIR") from None
    except OSError as err:
        raise PreflightError(f"cannot create the data dir {data_dir}: {err.strerror}; pick another with "
                             "--data-dir or ESCALATION_DATA_DIR") from None
    if not data_dir.is_dir():
        raise PreflightError(f"the data dir {data_dir} is not a folder; pick another with --data-dir or "
                             "ESCALATION_DATA_DIR")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise PreflightError(f"the data dir {data_dir} is not writable by this user; pick another with "
                             "--data-dir or ESCALATION_DATA_DIR")


def port_in_use(port: int, host: str) -> bool:
    """Something listens on ``host:port``, or the port cannot be bound there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind: SO_REUSEADDR, so a closed connection's TIME_WAIT is no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def wanted_ports(*, temporal_port: int, ui_port: int | None, api_port: int,
                 environ: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """``(port, what, how to change it)`` for every fixed port the stack will listen on
    (0 means any free port and needs no check)."""
    wanted = [(temporal_port, "Temporal", "--temporal-port"), (api_port, "the HTTP API", "--api-port")]
    if ui_port is not None:
        wanted.append((ui_port, "Temporal UI", "--ui-port"))
    metrics = environ.get("ESCALATION_METRICS_PORT", "").strip()
    if metrics.isdigit() and int(metrics) != 0:
        wanted.append((int(metrics), "the worker's metrics", "ESCALATION_METRICS_PORT (0: any free port)"))
    return [(port, what, how) for port, what, how in wanted if port != 0]


def check_ports(ports: list[tuple[int, str, str]], host: str) -> None:
    """Every port distinct and free on ``host``; else PreflightError naming the option."""
    seen: dict[int, str] = {}
    for port, what, how in ports:
        if port in seen:
            raise PreflightError(f"port {port} is asked for both {seen[port]} and {what}; change {how}")
        seen[port] = what
    for port, what, how in ports:
        if port_in_use(port, host):
            raise PreflightError(f"port {port} on {host} ({what}) is already in use; pick another with {how} "
                                 "or stop what is running there")
