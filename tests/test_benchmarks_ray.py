"""Smoke test of the sweep-level benchmarks B5 (benchmarks/asha.py) and B6 (benchmarks/ddp.py) at
their smallest size: the rows are well-formed and the counts are consistent. No timing is asserted
(each starts real sweeps with their own local Ray: a few minutes on 2 cores)."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
@pytest.mark.benchmark
def test_b5_asha_vs_fifo_quick(tmp_path):
    import asha

    rows = asha.run_b5(quick=True, workdir=tmp_path)
    assert [r["id"] for r in rows] == ["B5 ASHA/FIFO trial-steps", "B5 ASHA/FIFO wall s (Tune fit)"]
    steps_row, wall_row = rows
    n, steps = len(asha.QUICK["lrs"]), asha.QUICK["steps"]
    fifo, ash = steps_row["fifo"], steps_row["asha"]
    assert fifo["n_trials"] == ash["n_trials"] == n
    assert fifo["n_failed"] == ash["n_failed"] == 0
    assert steps_row["b"] == n * steps  # FIFO runs every trial to the end, exactly
    assert all(t["trained_step"] == steps and t["outcome"] == "completed" for t in fifo["per_trial"])
    assert 0 < steps_row["a"] <= steps_row["b"]
    assert ash["n_completed"] >= 1 and ash["n_completed"] + ash["n_stopped"] == n
    for t in ash["per_trial"]:  # a stopped trial reached at least the grace period, never more than steps
        assert asha.QUICK["grace"] <= t["trained_step"] <= steps
    assert steps_row["ratio"] == pytest.approx(steps_row["a"] / steps_row["b"])
    assert fifo["best"] is not None and ash["best"] is not None
    assert steps_row["same_best"] == (ash["best"] == fifo["best"])
    assert all(_finite_positive(r[k]) for r in rows for k in ("a", "b", "ratio"))
    assert wall_row["ratio"] == pytest.approx(wall_row["a"] / wall_row["b"])


@pytest.mark.slow
@pytest.mark.benchmark
def test_b6_ddp_quick(tmp_path):
    import ddp

    rows = ddp.run_b6(quick=True, workdir=tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["id"].startswith("B6 ")
    assert row["order"] == [2, 1] and row["rounds"] == 1  # A (2 workers) then B
    assert len(row["a_all"]) == len(row["b_all"]) == 1
    assert row["steps_counted"] == [20]  # 30 steps in intervals of 10, the first dropped
    assert all(_finite_positive(row[k]) for k in ("a_per_s", "b_per_s", "ratio"))
    assert row["ratio"] == pytest.approx(row["a_per_s"] / row["b_per_s"])
