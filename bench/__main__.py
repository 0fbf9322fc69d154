"""``python -m bench [--quick] [--scenario NAME ...]`` runs the benchmarks;
``python -m bench report`` regenerates docs/benchmarks.md from bench/results/*.json."""

from __future__ import annotations

import sys

import typer

from bench.cli import bench
from escalations.exiting import exit_now


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["report"]:
        argv = ["--report", *argv[1:]]
    try:
        app = typer.Typer(add_completion=False)
        app.command()(bench)
        typer.main.get_command(app)(argv, standalone_mode=True)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    exit_now(code)


main()
