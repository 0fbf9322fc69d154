"""Printing results with rich (the report in docs/benchmarks.md lives in bench/report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_result(console: Console, path: Path) -> None:
    document = json.loads(path.read_text())
    table = Table(title=f"{document['scenario']} ({document['mode']}, {document['seconds']} s) -> {path.name}")
    table.add_column("target")
    table.add_column("goal")
    table.add_column("value", justify="right")
    table.add_column("met")
    for t in document["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:g} {t['unit']}".strip()
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "n/a"}[t["met"]]
        table.add_row(t["name"], t["goal"], value, met)
    console.print(table)
    for note in document["notes"]:
        console.print(f"  note: {note}")
