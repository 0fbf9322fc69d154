"""What the command line loads before it does anything: ``--version`` and ``--help`` load no
Temporal client, no pydantic models; ``status``/``list`` load the Temporal client but never the
worker, the API server, matplotlib or OpenTelemetry.

How long that takes is measured, not asserted (docs/cli.md#start-up-time): timings on a
shared machine are noise; which modules load is not.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.helpers.paths import ROOT

NEVER = ("fastapi", "uvicorn", "temporalio.worker", "matplotlib", "opentelemetry", "escalations.api.app",
         "escalations.devstack.dev", "worker")


def loaded_by(*args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """Run ``escalations ARGS`` in a fresh interpreter; its exit code and the modules it loaded."""
    probe = (
        "import json, sys\n"
        "from starter import build_app\n"
        "try:\n"
        "    build_app()(sys.argv[1:], standalone_mode=True)\n"
        "except SystemExit as exit:\n"
        "    code = exit.code if isinstance(exit.code, int) else 0\n"
        "print('\\n' + json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), done.stdout + done.stderr


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(name + ".") for name in names))


def test_version_and_help_load_no_client_and_no_models():
    from importlib.metadata import version

    code, modules, output = loaded_by("--version")
    assert code == 0 and f"escalations {version('escalations')}" in output
    assert heavy(modules, ("temporalio", "pydantic", "asyncpg", "rich.table", *NEVER)) == []
    code, modules, output = loaded_by("--help")
    assert code == 0 and "--install-completion" in output and "--version" in output
    assert heavy(modules, ("temporalio", "pydantic", "asyncpg", *NEVER)) == []


def test_status_and_list_load_only_what_they_use(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on: the command fails fast, after its imports
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
           "PYTHONPATH": str(ROOT)}
    for args in (("status", "SF-1042"), ("list",)):
        code, modules, output = loaded_by(*args, "--data-dir", str(tmp_path), env=env)
        assert code == 1 and f"cannot connect to Temporal at 127.0.0.1:{port}" in output, output
        assert "temporalio.client" in modules
        assert heavy(modules, NEVER) == [], args
