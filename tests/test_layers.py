"""The import graph of the installed code: layers point one way, no circles, lean client.

Each installed module belongs to one part; a part may import only the parts listed for it
(and itself). Front doors (CLI, API, dev stack) are imported by nobody but ``starter.py``,
and the dev stack may start the API and the worker. A change that adds an arrow not listed
here fails; if the arrow is right, add it here and say why in the commit.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# part -> the parts it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "escalations": set(),  # the package's __init__: a docstring
    "schemas": set(),
    "escalations.settings": {"schemas", "escalations.links"},
    # The payload codec, and the one data converter every client, worker and replayer uses.
    "escalations.codec": {"escalations.settings"},
    "escalations.temporal": {"escalations.codec", "escalations.settings"},
    "escalations.links": set(),
    "escalations.exiting": set(),
    "escalations.policies": {"schemas"},
    "escalations.db": {"schemas"},
    "workflows": {"schemas"},
    # Logs, metrics, health endpoints and traces: used by every process and by the activities.
    "escalations.observability": {"schemas", "escalations.settings"},
    "activities": {"schemas", "escalations.db", "escalations.settings", "escalations.policies", "escalations.links",
                   "escalations.client", "escalations.observability"},
    "escalations.client": {"schemas", "escalations.policies", "escalations.links", "escalations.settings"},
    "escalations.connect": {"schemas", "escalations.settings", "escalations.temporal"},
    "escalations.schedules": {"schemas"},
    "escalations.repair": {"schemas", "escalations.db"},
    "worker": {"schemas", "workflows", "activities", "escalations.db", "escalations.settings", "escalations.policies",
               "escalations.observability", "escalations.temporal"},
    "escalations.api": {"schemas", "escalations.client", "escalations.settings", "escalations.db",
                        "escalations.policies", "escalations.links", "escalations.observability", "escalations.temporal",
                        "escalations.codec"},
    # The CLI explains a policy (who is paged when) with the workflow's own pure decisions.
    "escalations.cli": {"schemas", "escalations.client", "escalations.settings", "escalations.db",
                        "escalations.policies", "escalations.links", "escalations.connect", "escalations.schedules",
                        "escalations.repair", "worker", "workflows", "escalations.codec"},
    "escalations.devstack": {"schemas", "escalations.client", "escalations.settings", "escalations.db",
                             "escalations.policies", "escalations.connect", "escalations.schedules",
                             "escalations.api", "worker", "escalations.observability", "escalations.temporal",
                             "escalations.codec"},
    "starter": {"escalations.exiting", "escalations.client", "escalations.cli", "escalations.api", "escalations.devstack",
                "escalations.settings", "escalations.connect", "worker", "escalations.observability"},
}
# Single modules another part may use beyond its allowed parts, and why.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("escalations.cli.demo", "activities.templates"): "the demo prints each message as its channel renders it",
}
PARTS = sorted(ALLOWED, key=len, reverse=True)


def part_of(module: str) -> str | None:
    for part in PARTS:
        if module == part or module.startswith(part + "."):
            return part
    return None


def installed_modules() -> dict[str, Path]:
    found = {"worker": ROOT / "worker.py", "starter": ROOT / "starter.py"}
    for package in ("schemas", "workflows", "activities", "escalations"):
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[module] = path
    return found


def imports_of(path: Path, module: str) -> set[str]:
    """Every module named by an import statement (inside functions too: an import is an arrow)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def arrows() -> set[tuple[str, str, str]]:
    modules = installed_modules()
    found = set()
    for module, path in modules.items():
        source = part_of(module)
        assert source is not None, f"{module} belongs to no part: add it to ALLOWED"
        for name in imports_of(path, module):
            target = part_of(name)
            if target is None or target == source or target == "escalations":  # the package's bare __init__
                continue
            if any(module == user and (name == used or name.startswith(used + ".")) for user, used in EXCEPTIONS):
                continue
            found.add((source, target, module))
    return found


def test_every_import_points_the_allowed_way():
    wrong = sorted(f"{module}: {source} -> {target}" for source, target, module in arrows()
                   if target not in ALLOWED[source])
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_circle_between_modules():
    modules = installed_modules()
    graph = {module: {name for name in imports_of(path, module) if name in modules} for module, path in modules.items()}
    # Tarjan's strongly connected components: any of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_the_python_client_loads_no_command_line():
    """A service that imports the client (or ``starter``'s re-export of it) loads no CLI, typer or rich."""
    probe = ("import sys; import escalations.client, starter; "
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click') "
             "or m.split('.')[:2] in (['escalations', 'cli'], ['escalations', 'api'], ['escalations', 'devstack']) "
             "or m.split('.')[0] in ('uvicorn', 'fastapi')); "
             "print(','.join(bad))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"importing the client loaded: {loaded.stdout.strip()}"


@pytest.mark.timeout(240)
def test_the_wheel_installs_the_cards_names_and_escalations_only(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".data", "build", "*.egg-info", "__pycache__", "node_modules", "tests", "bench", "docs"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("escalations-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"workflows", "activities", "schemas", "escalations", "worker.py", "starter.py"}, tops
