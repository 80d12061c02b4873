"""The benchmark runs end to end on a tiny cluster (the real figures come from `python bench/run.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SCENARIOS = ("bootstrap", "baseline", "cold", "noop", "one_node", "shared_change", "comment_only",
             "fresh_clone", "cold_n2")


def test_bench_quick_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "bench/run.py", "--quick", "--sizes", "6", "--json", str(out)],
                            cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    figures = report["results"]["6"]
    assert figures["failures"] == []
    for scenario in SCENARIOS:
        assert scenario in figures, scenario
        assert figures[scenario]["wall_s"]["median"] > 0
    # The incremental promises hold even at N=6: a no-op starts no sops process and writes nothing,
    # one changed node rewrites exactly one artefact (in process: no sops run), a comment-only edit none.
    assert figures["noop"]["sops_encrypt"]["max"] == figures["noop"]["sops_decrypt"]["max"] == 0
    assert figures["noop"]["files_written"]["max"] == 0
    assert figures["one_node"]["artefacts_changed"] == {"min": 1, "max": 1}
    assert figures["comment_only"]["sops_encrypt"]["max"] == 0
    assert figures["fresh_clone"]["artefacts_changed"]["max"] == 0
    if os.environ.get("PROMOTE_SOPS_ENGINE", "").strip().lower() == "binary":
        # The switch reaches the benchmark's runs too: the binary does the work the engine does otherwise.
        assert figures["one_node"]["sops_processes"]["max"] > 0
        assert figures["cold"]["sops_processes"]["max"] >= 6
    else:
        assert figures["one_node"]["sops_processes"]["max"] == 0
        assert figures["cold"]["sops_processes"]["max"] == 0  # a pure age repository: the engine writes them all
    assert "2 no-op" in result.stdout
