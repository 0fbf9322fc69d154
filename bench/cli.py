"""``python -m bench``: the benchmarks (never part of ``make test``; not installed with the package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (about 10 minutes instead of 30)")] = False,
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="Run only these (repeatable): start, lifecycle, lateness, crash, peer, memory, "
                           "history, lag, outage")] = None,
    results_dir: Annotated[Path | None, typer.Option(
        help="Write the JSON results here [default: bench/results]")] = None,
    label: Annotated[str, typer.Option(help="Label of this run in the results ('current' feeds the report)")] = "current",
    outage_size: Annotated[int | None, typer.Option(
        help="Escalations in lateness (b) and (c) of a full run [default 2000; the issue's size is 10000]")] = None,
    report: Annotated[bool, typer.Option(
        "--report", help="Only regenerate docs/benchmarks.md from the results, run nothing")] = False,
) -> None:
    """Start a private dev stack on free ports, run the scenarios, print a table, write JSON results."""
    from bench import report as report_module
    from bench import runner

    if report:
        path = report_module.write_report(results_dir or report_module.RESULTS_DIR)
        typer.echo(f"wrote {path}")
        return
    try:
        names = runner.chosen(scenario, quick)
    except runner.UnknownScenario as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    needed = ["psutil"] + (["procrastinate"] if "peer" in names else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        typer.echo(f"error: {', '.join(missing)} missing; install the bench extra: pip install -e '.[bench]'",
                   err=True)
        raise typer.Exit(1)
    runner.main(quick, names, results_dir, label, outage_size)
