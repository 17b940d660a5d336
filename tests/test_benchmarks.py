"""Smoke test: the benchmark script still runs and reports finite positive ratios (no timing asserted)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # ~45 s: builds models and starts Ray for B4

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.benchmark
def test_benchmarks_quick_run(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--threads", "1",
                           "--only", "B1", "B2", "B3", "B4", "B8", "B9", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["id"].split()[0] for r in rows] == ["B1-tiny", "B2-tiny", "B2-tiny", "B3-tiny", "B3-tiny", "B8", "B9-tiny",
                                                  "B9-tiny", "B4-tiny", "B4-tiny"]
    assert "separate Q/K/V / fused c_attn" in rows[2]["id"]
    assert "bf16/fp32" in rows[6]["id"] and "loss on one batch, step 1 -> 20" in rows[6]["note"]
    assert "SDPA/eager" in rows[7]["id"]
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows)


@pytest.mark.benchmark
def test_online_benchmarks_quick_run(tmp_path):
    """benchmarks/online.py (B10 collection, B11 overlap) runs at tiny budgets and reports both rows."""
    out = tmp_path / "online.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "online.py"), "--quick", "--rounds", "1",
                           "--iterations", "2", "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**__import__("os").environ, "MINARI_DATASETS_PATH": str(tmp_path / "m")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["id"].split()[0] for r in rows] == ["B10", "B11"]
    assert "2 actors x 2 envs" in rows[0]["id"] and "overlapped / synchronous" in rows[1]["id"]
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows)


@pytest.mark.benchmark
def test_preflight_memory_benchmark_quick_run(tmp_path):
    """benchmarks/preflight_memory.py (B15) at a tiny size: both modes keep every task, and the preflight's
    peak stays below holding them all."""
    out = tmp_path / "b15.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "preflight_memory.py"), "--tasks", "3",
                           "--transitions", "50000", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["preflight"]["kept"] == result["all_loaded"]["kept"] == 3
    assert 0 < result["ratio"] < 1


@pytest.mark.benchmark
def test_all_benchmarks_quick_run_write_one_dated_table(tmp_path):
    """``run.py --all --write`` (issue 30): every benchmark the README lists, B1-B15, at its smallest size in
    one run, its rows put into a markdown file as one dated section with the command and the commit, ahead
    of the sections already there."""
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance measurements\n\nIntro.\n\n## 2026-01-01: an older table\n")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--all", "--quick", "--threads", "1",
                           "--skip-gpt2", "--workdir", str(tmp_path / "work"), "--write", str(doc)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    new = text[text.index("\n## ") + 1:text.index("## 2026-01-01")]
    assert "every benchmark, one run (commit " in new and "--all --quick" in new
    ids = {line.split("|")[1].strip().split()[0].split("-")[0] for line in new.splitlines()
           if line.startswith("| B")}
    assert ids == {f"B{i}" for i in range(1, 16)}
    assert text.startswith("# Performance measurements\n\nIntro.\n") and text.endswith("an older table\n")
