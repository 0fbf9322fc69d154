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


def _same_invocation(a: dict[str, Any], b: dict[str, Any]) -> bool:
    mark = a["machine"].get("invocation_started_at")
    return mark is not None and mark == b["machine"].get("invocation_started_at")


def _peer_beside(lateness: dict[str, Any], peer: dict[str, Any] | None) -> list[Any] | None:
    """The peer's lateness (a) p99 at 0.1 s polling, as a row under ours; dated when from another run."""
    if peer is None or "a" not in peer["results"].get("lateness", {}):
        return None
    p99 = peer["results"]["lateness"]["a"]["0.1s"]["lateness"].get("p99")
    when = ("measured in the same invocation" if _same_invocation(lateness, peer)
            else f"not run in this invocation: latest peer result, {peer['_file']} of {peer['started_at'][:10]}")
    return ["peer", "lateness a p99, procrastinate at 0.1 s polling (beside ours)", "reference", "-", "-",
            _s(p99), f"(reference, {when})"]


def _targets(results: dict[tuple[str, str], dict[str, Any]], order: list[str],
             peer: dict[str, Any] | None) -> list[str]:
    rows = []
    for name in order:
        doc = results.get((name, "current"))
        if doc is None:
            continue
        for t in doc["targets"]:
            met = {True: "**met**", False: "not met", None: "n/a"}[t["met"]]
            if name == "peer":
                if t["name"].startswith("peer lateness a "):
                    continue  # shown under ours' lateness (a)
                met = "(reference, not judged)"
            rows.append([name, t["name"], t["goal"], t.get("ours") or "-", t.get("bare") or "-",
                         _f(t["value"], t["unit"]), met])
            if name == "lateness" and t["name"].startswith("lateness a p99"):
                beside = _peer_beside(doc, peer)
                if beside is not None:
                    rows.append(beside)
    return _table(["scenario", "measure", "goal", "ours", "bare (same run)", "judged", ""], rows)


def _start(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    return [f"{r['n']} starts on each path, each path at concurrency {r['concurrency']} (the raw client's "
            "starts and the API's requests alike: at most that many in flight, and the API client's "
            "connection pool has that many connections).", ""] + _table(
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
    lines = ["Lateness = time the auto-escalation's page went out (the ledger's `sent_at` of the first "
             "page the `escalated` event caused: the next level's on-call) minus the ack deadline stated in "
             "the `opened` event. Since the fault-proof commit path (issue #14) the page and the projection "
             "are separate activities after the decision; the page is the deadline's action, the projection "
             "(`recorded_at`, judged before that change) is bookkeeping, shown below as *recorded*. "
             "Bare: the second activity's `clock_timestamp()` minus its timer's deadline. Peer: the job's "
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
                rows.append(["", title, *_pct(p["lateness"]), f"{p['moved']}/{p.get('n', v['n'])}"])
    lines += _table(["variant", "system", "p50", "p95", "p99", "max", "moved"], rows)
    lines += _peer_source(doc, peer)
    cpu_rows = []
    for name, v in doc["results"].items():
        o, b = v["ours"], v["bare"]
        cpu_rows.append([f"({name})", _f(o.get("worker_cpu_seconds_during_deadlines"), "s"),
                         _f(b.get("worker_cpu_seconds_during_deadlines"), "s"),
                         _f(o.get("worker_cpu_ms_per_move"), "ms"), _f(b.get("worker_cpu_ms_per_move"), "ms"),
                         _ratio(o.get("worker_cpu_ms_per_move"), b.get("worker_cpu_ms_per_move")),
                         _f(o.get("moves_per_second"), "/s"), _f(b.get("moves_per_second"), "/s"),
                         _ratio(o.get("moves_per_second"), b.get("moves_per_second"))])
    lines += ["Worker CPU per deadline and deadlines acted on per second, ours (auto-escalations) against "
              "bare (timers), same run. **CPU per move** = the worker process's user + system CPU from the "
              "moment every run had opened until every deadline had been acted on, divided by the deadlines "
              "acted on; issue #20's CPU goal is judged on variant (a), where the openings are done before "
              "the first deadline and the worker keeps up, so the CPU is the deadlines' own (plus the idle "
              "worker's polling over the same window). **Rate** = deadlines acted on / seconds from the first "
              "deadline to the last one acted on; it measures capacity only when deadlines come due faster "
              "than the worker acts, so the capacity goal (auto-escalations/s >= 0.9x bare timers/s) is "
              "judged on variant (c), all due within about a second. (The lifecycle scenario's rate "
              "includes four commands and a child workflow per escalation, so it is not the measure.)", ""]
    lines += _table(["variant", "CPU ours", "CPU bare", "CPU per move, ours", "CPU per move, bare", "ratio",
                     "rate ours", "rate bare", "ratio"], cpu_rows)
    extra = []
    for name, v in doc["results"].items():
        o = v["ours"]
        extra.append(f"- ({name}): opening took {o.get('opening_seconds')} s "
                     f"({'finished before' if o.get('opened_before_first_deadline') else 'NOT finished before'} "
                     f"the first deadline); deadlines spread over {o.get('deadline_spread_seconds')} s; "
                     f"worker CPU while deadlines came due: ours {o.get('worker_cpu_seconds_during_deadlines')} s, "
                     f"bare {v['bare'].get('worker_cpu_seconds_during_deadlines')} s; "
                     + (f"decided (`payload.decided_at`) p99 {_s(o['decided'].get('p99'))}" if o["decided"].get("max")
                        else "decided: not in this run's results (it read `occurred_at`, the deadline itself)")
                     + (f"; recorded (projected, `recorded_at`) p99 {_s(o['recorded'].get('p99'))}"
                        if o.get("recorded") else "") + ".")
    return lines + extra + [""]


def _peer_source(doc: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
    if peer is None or _same_invocation(doc, peer):
        return []
    return [f"The procrastinate rows are from {peer['_file']} (run of {peer['started_at'][:16].replace('T', ' ')} "
            f"UTC, {peer['mode']} mode), not from the invocation that measured ours and bare here.", ""]


def _ratio(ours: Any, bare: Any) -> str:
    if ours is None or not bare:
        return "n/a"
    return f"{ours / bare:.2f}x"


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
    lines += _table(["system", "moved before kill", "once", "twice+", "never", "late p50", "late max",
                     "downtime", "failed runs / jobs stuck"], rows)
    ours = doc["results"]["ours"]
    if ours.get("decided"):
        lines += [f"Ours: late = the move's first page sent (as in scenario 3); decided max "
                  f"{_s(ours['decided'].get('max'))}, recorded (projected) max {_s(ours['recorded'].get('max'))}.", ""]
    return lines + _peer_source(doc, peer)


def _memory(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    rows = []
    for side in ("ours", "bare"):
        for mark, row in r[side]["open"].items():
            rows.append([side, mark, row["cached"], _f(row["rss_mb"], "MB"), _f(row["kb_per_cached"], "KB")])
    lines = [f"`max_cached_workflows` = {r['max_cached_workflows']}; idle worker RSS: ours "
             f"{r['ours']['idle_rss_mb']} MB, bare {r['bare']['idle_rss_mb']} MB.", ""]
    lines += _table(["worker", "open", "cached", "RSS", "per cached run"], rows)
    top = str(max((int(k) for k in r["ours"]["open"]), default=0))
    per = r["ours"]["open"].get(top, {}).get("kb_per_cached")
    bare_per = r["bare"]["open"].get(top, {}).get("kb_per_cached")
    lines += [f"Per cached run at {top} open: ours {_f(per, 'KB')}, bare {_f(bare_per, 'KB')}, "
              f"ratio {_ratio(per, bare_per)} (goal <= 1.3x).", ""]
    if r["ours"].get("rss_mb_at_10k") is not None:
        how = "measured" if r["ours"].get("rss_at_10k_measured") else "extrapolated from the slope"
        bare_10k = r["bare"].get("rss_mb_at_10k")
        default = r.get("default_settings")
        lines.append(f"Worker RSS at 10,000 open: ours {r['ours']['rss_mb_at_10k']} MB, bare "
                     f"{_f(bare_10k, 'MB')} ({how}; "
                     + ("default settings" if default else "default settings: not recorded" if default is None
                        else "NOT the default settings") + "; goal <= 1 GB).")
        lines.append("")
    return lines


def _history(doc: dict[str, Any]) -> list[str]:
    r = doc["results"]
    day, month = r.get("day_p1", {}), r.get("month_p1", {})
    rows = [["one full lifecycle (scenario 2)", f"{r['lifecycle']['escalation']} (+ {r['lifecycle']['postmortem']} child)"],
            [f"{day.get('hours', 24)} h P1, customer update every 2 h (1 s = 1 h; {day.get('customer_updates')} updates, "
             f"breached: {_f(day.get('sla_breached'))})", _f(day.get("events"))]]
    if "events_per_run" in month:
        rows.append([f"{month['days']}-day P1 on the time-skipping server ({month['customer_updates']} updates, "
                     f"{month['runs']} runs)", ", ".join(str(x) for x in month["events_per_run"]) + " per run"])
    elif month:
        rows.append(["30-day P1", month.get("skipped", "n/a")])
    lines = _table(["escalation", "history events"], rows)
    per = day.get("per_auto_customer_update")
    if per:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(per["breakdown"].items(), key=lambda kv: -kv[1]))
        ids = per.get("breakdown_event_ids") or ["?", "?"]
        lines += [f"Events per automatic customer update: {_f(per.get('median'))} (goal <= 7): the median number "
                  f"of history events from one cadence timer's `timer_fired` (its summary: `customer update #n`) "
                  f"to the next, in the {day.get('hours')} h P1's run. Cycles: "
                  f"{', '.join(str(g) for g in per['gaps'])} events (longer ones also hold the SLA at-risk or "
                  "breach, or an update whose deadline fell together with theirs and rode on their timer). "
                  f"Where one median cycle's events go (history events {ids[0]} to {ids[1]}): {kinds}.", ""]
    return lines


def _lag(doc: dict[str, Any]) -> list[str]:
    rows = [[name, *_pct(stats)] for name, stats in doc["results"].items()]
    return ["Lag = `recorded_at` (transaction start of the `project_events` step that stored the event) - "
            "`occurred_at` (the deadline a timer-driven decision was made as of, or the command's time). Since "
            "the fault-proof commit path (issue #14) the projection runs after the decision and beside its pages, "
            "one step at a time per run, so under load it queues behind them; the first round's 250 ms goal is "
            "kept as a reference.", ""] + _table(["source", "p50", "p95", "p99", "max"], rows)


_OUTAGE_TITLES = {"kill": "SIGKILL, restart", "freeze": "SIGSTOP, SIGCONT", "none": "no fault (control)"}


def _met(value: Any, limit: float) -> str:
    if value is None:
        return "not met (n/a)"
    return "**met**" if value <= limit else "not met"


def _outage_rows(doc: dict[str, Any], label: str = "") -> list[list[Any]]:
    rows = []
    for variant, r in doc["results"].items():
        d, pg = r["decided"], r["paged"]
        rows.append([f"{label}{_OUTAGE_TITLES.get(variant, variant)}", f"{r['n']}", _s(r.get("outage_seconds")),
                     r["deadlines_outage"], f"{_s(d.get('p50'))} / {_s(d.get('p99'))} / {_s(d.get('max'))}",
                     f"{_s(pg.get('p50'))} / {_s(pg.get('p99'))} / {_s(pg.get('max'))}",
                     _s(r.get("catch_up_seconds")), r["lost"], r["doubled"], r["resent_on_the_wire"],
                     r["failed_or_stuck"]])
    return rows


def _backlog_cell(r: dict[str, Any], phase: str) -> str:
    b = (r.get("activity_backlog") or {}).get(phase)
    if not b or b["max_count"] is None:
        return "-"
    return f"{b['max_count']}, {_s(b['max_age_seconds'])}"


def _p99(stats: dict[str, Any] | None) -> float | None:
    return (stats or {}).get("p99")


def _outage_findings(doc: dict[str, Any]) -> list[str]:
    """For each goal a variant missed: the measures that say where its time went (from the data)."""
    found = []
    for variant, r in doc["results"].items():
        if variant == "none":
            continue
        title = _OUTAGE_TITLES.get(variant, variant)
        w = r["where_time_went"]
        decided, paged = _p99(r["decided"]), _p99(r["paged"])
        if decided is not None and decided > 1.0:
            found.append(
                f"- {title}: decided p99 {_s(decided)}. Timer fire delay p99 "
                f"{_s(_p99(w['timer_fire_delay']['outage']))}; timer fired -> workflow task started p99 "
                f"{_s(_p99(w['timer_fired_to_task_started']['outage']))}; workflow task schedule-to-start p99 "
                f"{_s(_p99(w['workflow_task_schedule_to_start']['outage']))}.")
        if paged is not None and paged > 2.0:
            queued = _p99(w["send_schedule_to_start"]["outage"])
            backlog = r.get("activity_backlog", {}).get("during_outage", {})
            found.append(
                f"- {title}: paged p99 {_s(paged)} while decided p99 was {_s(decided)}. The pages waited for a "
                f"worker activity slot: `send_notifications` schedule-to-start p99 {_s(queued)} (the HTTP round "
                f"itself p99 {_s(_p99(w['send_start_to_close']['outage']))}); the activity task queue held up to "
                f"{backlog.get('max_count')} tasks, the oldest {_s(backlog.get('max_age_seconds'))}. The worker's "
                "activity slots (`max_concurrent_activities`, 50) are shared by `send_notifications` and "
                "`project_events`; each run's projection step retries throughout the outage, and against a "
                "frozen PostgreSQL every attempt holds its slot until the pool's acquire timeout (5 s) or the "
                "statement timeout (10 s) instead of failing at once as against a dead one.")
        catch_up = r.get("catch_up_seconds")
        if catch_up is None or catch_up > 10.0:
            done = w.get("project_done_after_recovery", {}).get("after", {})
            found.append(
                f"- {title}: read model caught up {_s(catch_up)} after recovery. The projection steps that waited "
                f"out the outage got through {_s(done.get('p50'))} (p50), {_s(done.get('p99'))} (p99) after "
                "recovery (their retry back-off reaches 5 s); workflow task schedule-to-start p99 after recovery "
                f"{_s(_p99(w['workflow_task_schedule_to_start']['after']))}, activity backlog up to "
                f"{r.get('activity_backlog', {}).get('after_recovery', {}).get('max_count')} tasks.")
    return found


def _outage_observations(doc: dict[str, Any]) -> list[str]:
    """What the figures show beyond the goals (deadlines due during catch-up, late timers, load)."""
    c, results = doc["config"], doc["results"]
    seen = []
    for variant, r in results.items():
        if variant == "none":
            continue
        w = r["where_time_went"]
        during, after = _p99(r["decided"]), _p99(r["decided_after_recovery"])
        if during is not None and after is not None and after > max(0.5, 2 * during):
            seen.append(
                f"- {_OUTAGE_TITLES.get(variant, variant)}: deadlines due in the {c['after_recovery']:g} s after "
                f"recovery were decided later (p99 {_s(after)}) than those due in the outage (p99 {_s(during)}): "
                "workflow task schedule-to-start p99 "
                f"{_s(_p99(w['workflow_task_schedule_to_start']['after']))} after recovery against "
                f"{_s(_p99(w['workflow_task_schedule_to_start']['outage']))} during the outage. Every run's "
                "waiting projection step completes within seconds of recovery and each completion is a workflow "
                "task; the worker runs `max_concurrent_workflow_tasks` (5) at a time.")
    late = {v: r["where_time_went"] for v, r in results.items()
            if r["where_time_went"].get("timers_fired_over_half_a_second_late")}
    for variant, w in late.items():
        examples = w.get("late_timer_examples") or []
        ahead = max((t["armed_seconds_ahead"] for t in examples), default=None)
        count = w["timers_fired_over_half_a_second_late"]
        which = "each" if count <= len(examples) else f"the first {len(examples)} listed in the results each"
        seen.append(
            f"- {_OUTAGE_TITLES.get(variant, variant)}: {count} timers fired "
            f"more than 0.5 s after their deadline, {which} armed at most {_s(ahead)} ahead of it (a deadline "
            "already past, or about to be, when the late workflow task of the decision before it armed its "
            "timer): Temporal fires a timer no sooner than about a second after it is created "
            "(`history.timerProcessorMaxTimeShift`), so every such deadline costs about a second more.")
    control = results.get("none")
    faults = [r for v, r in results.items() if v != "none"]
    if control and faults:
        best = min(faults, key=lambda r: _p99(r["decided"]) or 0.0)
        if (_p99(control["decided"]) or 0.0) > (_p99(best["decided"]) or 0.0):
            seen.append(
                f"- The control decided later (p99 {_s(_p99(control['decided']))}) than "
                f"{_OUTAGE_TITLES.get(best['variant'], best['variant'])} (p99 {_s(_p99(best['decided']))}): the "
                "machine was shared, load average (1 min) "
                f"{control['during_outage']['load_average_1m_before']} during the control against "
                f"{best['during_outage']['load_average_1m_before']}; lateness at this scale follows the CPU the "
                "worker gets.")
    return seen


def _outage(doc: dict[str, Any], quick: dict[str, Any] | None) -> list[str]:
    c = doc["config"]
    ms = c["policy_ms"]
    sec = {k: f"{v / 1000:g} s" for k, v in ms.items()}
    opened = min(r.get("opened_in_pg_before_outage", 0) for r in doc["results"].values())
    setup = (
        f"{c['n']} hierarchical P1 escalations opened at an even pace over {c['open_window']:g} s (in every "
        f"variant at least {opened} of them were opened and in PostgreSQL before the outage); "
        f"{c['gap']:g} s after the last start the stack's PostgreSQL is SIGKILLed and restarted (same port "
        f"and data; durable: fsync and synchronous commit on; the restart's crash recovery counts as outage), "
        f"or SIGSTOPped and SIGCONTed, for {c['outage']:g} s. One worker (`python -m worker`, production "
        f"settings). Policy (seconds scale): tier2 ack within {sec['tier2_ms']}, engineering "
        f"{sec['engineering_ms']}, management {sec['management_ms']} (then ack reminders), customer update "
        f"every {sec['cadence_ms']}, resolve within {sec['resolve_ms']} (at risk at "
        f"{c['at_risk_at']:.0%}); every contact, the customer's too, is a signed webhook to a receiver in the "
        "benchmark process. Each escalation's first deadlines fall in the outage (its ack and cadence "
        "deadlines, the SLA at-risk and most breaches); those due in the "
        f"{c['after_recovery']:g} s after PostgreSQL is back are measured too (they come due while the read "
        "model catches up). The control run is the same load with PostgreSQL left alone."
    )
    spacing = (
        f"Two deadlines of one escalation are equal or at least {c['min_deadline_spacing_seconds']:g} s apart, "
        "as with hour-scale policies (whose clocks restart from the deadlines they acted on): Temporal floors a "
        "new timer's fire time at now + `history.timerProcessorMaxTimeShift` (1 s by default), and the "
        "workflow arms the timer of its next deadline when the previous one fires, so a deadline less than "
        "about a second after the one before it is decided up to a second late, outage or not (seen in trial "
        "runs whose scaled-down clocks put two deadlines 20 ms apart: the later one ~1.0 s late, also without "
        "a fault)."
    )
    definitions = [
        ("- **decided** = the event's `payload.decided_at` (the workflow task that acted) minus its "
         "`occurred_at` (= the deadline), for escalated (auto), ack_reminder, customer_updated (auto), "
         "sla_at_risk and sla_breached events whose deadline fell in the outage;"),
        ("- **paged** = first arrival at the receiver of each page those events caused (by `Idempotency-Key`) "
         "minus the deadline;"),
        ("- **caught up** = from PostgreSQL accepting connections again until every run's "
         "`escalations.last_seq` equals its live `state` query's `last_seq`;"),
        ("- **lost** = a deadline due by the policy (computed from each run's start and the policy) that no "
         "event acted on, an event missing in PostgreSQL, a ledger row not sent or never received, a page "
         "received without a ledger row; **doubled** = the same deadline acted on twice, or a ledger key with "
         "several rows; **resent** = pages received again under a key already received (allowed: at least "
         "once on the wire); **failed/stuck** = runs not running, not caught up, or whose history does not "
         "replay with the installed code."),
    ]
    lines = [setup, "", spacing, "", *definitions, ""]
    header = ["PostgreSQL", "escalations", "outage", "deadlines due in it", "decided p50 / p99 / max",
              "paged p50 / p99 / max", "caught up", "lost", "doubled", "resent", "failed / stuck"]
    rows = _outage_rows(doc)
    if quick is not None:
        rows += _outage_rows(quick, "quick: ")
    lines += _table(header, rows)
    variants = [v for v in doc["results"] if v != "none"]
    goals = [
        ("decided p99 <= 1 s late", lambda r: (r["decided"].get("p99"), 1.0, "s")),
        ("paged p99 <= 2 s late", lambda r: (r["paged"].get("p99"), 2.0, "s")),
        ("read model caught up <= 10 s after recovery", lambda r: (r.get("catch_up_seconds"), 10.0, "s")),
        ("0 lost", lambda r: (r["lost"], 0, "")),
        ("0 doubled", lambda r: (r["doubled"], 0, "")),
        ("0 runs failed or stuck", lambda r: (r["failed_or_stuck"], 0, "")),
    ]
    goal_rows = []
    for title, pick in goals:
        row: list[Any] = [title]
        for variant in variants:
            value, limit, unit = pick(doc["results"][variant])
            row.append(f"{_f(value, unit)}: {_met(value, limit)}")
        goal_rows.append(row)
    lines += _table(["goal (issue #14)", *(_OUTAGE_TITLES.get(v, v) for v in variants)], goal_rows)

    def pair(stats: dict[str, Any] | None, unit: str = "s") -> str:
        stats = stats or {}
        if not stats.get("n"):
            return "-"
        return f"{_f(stats.get('p99'), unit)} / {_f(stats.get('max'), unit)}"

    def timing(measure: str, phase: str) -> Any:
        return lambda r: pair(r["where_time_went"].get(measure, {}).get(phase))

    every = list(doc["results"])
    after = f"{c['after_recovery']:g} s after recovery"
    phased = [
        ("decided (deadline -> deciding workflow task)", lambda r: pair(r["decided"]),
         lambda r: pair(r["decided_after_recovery"])),
        ("paged (deadline -> first arrival)", lambda r: pair(r["paged"]), lambda r: pair(r["paged_after_recovery"])),
        ("timer fire delay (Temporal server)", timing("timer_fire_delay", "outage"), timing("timer_fire_delay", "after")),
        ("timer fired -> workflow task started", timing("timer_fired_to_task_started", "outage"),
         timing("timer_fired_to_task_started", "after")),
        ("workflow task schedule-to-start", timing("workflow_task_schedule_to_start", "outage"),
         timing("workflow_task_schedule_to_start", "after")),
        ("workflow task start-to-complete", timing("workflow_task_start_to_complete", "outage"),
         timing("workflow_task_start_to_complete", "after")),
        ("`send_notifications` schedule-to-start (waiting for a worker slot)",
         timing("send_schedule_to_start", "outage"), timing("send_schedule_to_start", "after")),
        ("`send_notifications` start-to-close (the HTTP round)", timing("send_start_to_close", "outage"),
         timing("send_start_to_close", "after")),
        ("activity task queue backlog, max (tasks, oldest)", lambda r: _backlog_cell(r, "during_outage"),
         lambda r: _backlog_cell(r, "after_recovery")),
        ("`project_events` step waiting since the outage: done after recovery", lambda r: "-",
         timing("project_done_after_recovery", "after")),
    ]
    rows = []
    for title, during, later in phased:
        rows.append([title, "outage", *(during(doc["results"][v]) for v in every)])
        rows.append(["", after, *(later(doc["results"][v]) for v in every)])
    lines += [("Where the time goes, p99 / max (from the runs' histories and the receiver; deadlines due, "
               "tasks scheduled, during the outage or in the window after it):"), ""]
    lines += _table(["", "when", *(_OUTAGE_TITLES.get(v, v) for v in every)], rows)
    other = [
        ("CPU during the outage: worker / Temporal server",
         lambda r: f"{_s(r['during_outage']['worker_cpu_seconds'])} / {_s(r['during_outage']['temporal_cpu_seconds'])}"),
        ("load average (1 min) before / after the outage",
         lambda r: f"{r['during_outage']['load_average_1m_before']} / {r['during_outage']['load_average_1m_after']}"),
        ("PostgreSQL back (restart incl. crash recovery) after", lambda r: _s(r.get("restart_seconds"))),
        ("pages received (distinct keys)", lambda r: f"{r['pages_received']} ({r['distinct_keys_received']})"),
        ("read model equals a rebuild from the events", lambda r: _f(r.get("read_model_equals_rebuild"))),
    ]
    lines += _table(["", *(_OUTAGE_TITLES.get(v, v) for v in every)],
                    [[title, *(pick(doc["results"][v]) for v in every)] for title, pick in other])
    findings = _outage_findings(doc)
    if findings:
        lines += ["Goals missed, and where the time went:", "", *findings, ""]
    observations = _outage_observations(doc)
    if observations:
        lines += ["Also seen in these runs:", "", *observations, ""]
    codes = {r.get("code", {}).get("source_sha256") for r in doc["results"].values()}
    start = c.get("code_at_start") or {}
    if start:
        same = ("every variant's worker ran that source" if codes == {start.get("source_sha256")}
                else f"the source changed between variants ({', '.join(sorted(str(x) for x in codes))})")
        lines += [(f"Product source measured: sha256 {start.get('source_sha256')} of workflows/, activities/, "
                   f"schemas/, escalations/ and worker.py (commit {str(start.get('head'))[:10]} with "
                   f"{len(start.get('uncommitted_product_files') or [])} files changed in a shared checkout); "
                   f"{same}."), ""]
    if quick is not None:
        lines += [(f"The quick rows are {quick['_file']} (`--quick --label quick`: {quick['config']['n']} "
                   f"escalations, {quick['config']['outage']:g} s outage, the clocks scaled down)."), ""]
    return lines


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
    ("outage", "9. PostgreSQL outage while deadlines come due", None),
]


def render(results_dir: Path = RESULTS_DIR) -> str:
    results = load_results(results_dir)
    current = {name: doc for (name, label), doc in results.items() if label == "current"}
    if not current:
        raise SystemExit(f"no results in {results_dir}; run `python -m bench` first")
    first = min(current.values(), key=lambda d: d["started_at"])
    # The peer (procrastinate) is slow to run; when this results folder has none, its latest
    # committed result is shown instead, dated.
    peer = current.get("peer") or load_results(RESULTS_DIR).get(("peer", "current"))
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
        "Run: `python -m bench` (or `make bench`; `--quick` for a smoke-sized run, `--scenario NAME` "
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
        "Issue #20's goals, each beside the bare baseline measured in the same run (ours / bare: the "
        "figures; judged: the value the goal is judged on, often their ratio). Projection lag and the "
        "PostgreSQL outage keep their earlier goals; the peer's rows are for reference.",
        "",
        *_targets(results, [s[0] for s in SECTIONS] + ["peer"], peer),
    ]
    for name, title, renderer in SECTIONS:
        doc = current.get(name)
        if doc is None:
            continue
        lines += [f"## {title}", ""]
        if name == "lateness":
            lines += _lateness(doc, peer)
        elif name == "crash":
            lines += _crash(doc, peer)
        elif name == "outage":
            lines += _outage(doc, results.get(("outage", "quick")))
        else:
            assert renderer is not None
            lines += renderer(doc)
    notes = [n for d in current.values() for n in d["notes"]]
    if notes:
        lines += ["## Notes from the run", "", *[f"- {n}" for n in notes], ""]
    changes = results_dir / "changes.json"
    lines += ["## Changes made to meet the targets", "",
              *_changes(changes if changes.exists() else RESULTS_DIR / "changes.json")]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: Path = RESULTS_DIR, doc: Path = DOC) -> Path:
    doc.write_text(render(results_dir))
    return doc
