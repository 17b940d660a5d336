"""B6: Ray Train DDP with 2 workers x 1 torch thread vs 1 worker x 1 thread, same global batch:
training samples/s. Target (issue 7): >= 1.7x.

    nice -n 19 python benchmarks/ddp.py [--quick] [--rounds 3] [--workdir DIR] [--json OUT]

What runs: the real sweep CLI (``python -m lamo_ray.sweep benchmarks/ddp_grid.yaml --set ...``) in
one subprocess with its own local Ray and MLflow store (`sweeprun.run_sweep_cli`), so every trial
goes through `lamo_ray.tune_runtime.run_trial` -> Ray Train ``TorchTrainer`` -> our
`lamo_ray.train.train_loop_per_worker` (``prepare_model`` DDP, gradient all-reduce over gloo).
``train.num_workers`` is a grid [2, 1], ``train.cpus_per_worker`` 0.99 (so each worker runs 1 torch
thread, `lamo_ray.config.torch_threads`), ``train.batch_size`` 64 global (2 x 32 vs 1 x 64), one
trial at a time (``max_concurrent_trials: 1``); each round is a variant (``r0``, ``r1``, ...,
identical, seed 0), and Tune runs the trials in the order (r0, 2 workers), (r0, 1 worker),
(r1, 2 workers), ... so A and B alternate (the order actually run, from the MLflow start times, is
in the row; with seeds as rounds Tune ran all 2-worker trials first).
Full size: Kitchen dims, B1's tiny shape (state 60, act 9, K = 20, 128 hidden, 3 layers), 160 steps
in intervals of 40. Quick: Reacher data, a 1-layer 32-wide model, 30 steps in intervals of 10.

What is measured: each trial's rank-0 worker sums the wall time of its training steps (batch
sampling, forward, backward with DDP's all-reduce, clip, optimiser step) between evaluations and
logs it as ``train/time_s`` at every evaluation step. Samples/s of a trial = global batch x steps
/ sum of ``train/time_s`` over all intervals but the first (the first holds the warm-up and
overlaps the rollout actor's start-up). Ray/Train start-up and evaluation are not counted. The row
gives the median over rounds for each side and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweeprun import read_trials, run_sweep_cli  # noqa: E402

GRID_FILE = Path(__file__).with_name("ddp_grid.yaml")
EXPERIMENT = "bench_ddp"  # name: in ddp_grid.yaml
QUICK_OVERRIDES = ["data.source=lamo/reacher/mixed-v0", "data.rtg_scale=10", "data.context_length=5",
                   "data.max_ep_len=64", "model.n_layer=1", "model.n_embd=32", "eval.env_id=null",
                   "eval.target_returns=[-3.5]", "train.steps=30", "train.eval_every=10", "train.log_every=10"]


def trial_samples_per_s(trial: dict[str, Any], batch_size: int) -> tuple[float, int]:
    """(samples/s, steps counted) of one trial from its ``train/time_s`` history, first interval dropped."""
    hist = sorted(trial["metrics"]["train/time_s"])
    if len(hist) < 2:
        raise ValueError(f"trial {trial['trial']}: need >= 2 train/time_s intervals, got {hist}")
    steps = hist[-1][0] - hist[0][0]
    seconds = sum(v for _, v in hist[1:])
    return batch_size * steps / seconds, steps


def run_b6(quick: bool, workdir, rounds: int | None = None) -> list[dict]:
    """Run the [2, 1]-worker grid for ``rounds`` seeds (default 1 quick, 3 full); one row.

    Row keys: ``id``, ``a_per_s`` (2 workers, median samples/s), ``b_per_s`` (1 worker), ``ratio``
    (a / b), ``target`` (>= 1.7), ``rounds``, ``a_all`` / ``b_all`` (per round), ``order`` (the
    workers of each trial in the order they ran), ``steps_counted``, ``note``, ``command``.
    """
    rounds = rounds or (1 if quick else 3)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="lamo-b6-")).resolve()
    over = (QUICK_OVERRIDES if quick else []) + [
        "variants={" + ", ".join(f"r{i}: {{}}" for i in range(rounds)) + "}", "report_baseline=r0"]
    run = run_sweep_cli(GRID_FILE, over, workdir)
    result = read_trials(run["uri"], EXPERIMENT)
    by_workers: dict[int, list[float]] = {1: [], 2: []}
    order, counted = [], set()
    for t in result["trials"]:  # sorted by start time
        if t["outcome"] != "completed":
            raise RuntimeError(f"trial {t['trial']} ended {t['outcome']}; see {run['log']}")
        workers = int(t["params"]["train.num_workers"])
        batch = int(t["params"]["train.batch_size"])
        sps, steps = trial_samples_per_s(t, batch)
        by_workers[workers].append(sps)
        order.append(workers)
        counted.add(steps)
    a, b = statistics.median(by_workers[2]), statistics.median(by_workers[1])
    shape = "Reacher, 1 layer x 32" if quick else "Kitchen dims, 3 layers x 128, K=20"
    return [{"id": "B6 DDP 2x1thr / 1x1thr samples/s", "a_per_s": a, "b_per_s": b, "ratio": a / b,
             "target": ">= 1.7", "rounds": rounds, "a_all": by_workers[2], "b_all": by_workers[1],
             "order": order, "steps_counted": sorted(counted), "command": " ".join(run["cmd"]),
             "note": f"{shape}, global batch 64, Ray Train TorchTrainer, median of {rounds}; "
                     f"from train/time_s (steps {sorted(counted)} per trial), run order {order}"}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="B6: DDP 2 workers x 1 thread vs 1 worker x 1 thread (one sweep)")
    p.add_argument("--quick", action="store_true", help="Reacher, tiny model, 30 steps, 1 round (smoke test)")
    p.add_argument("--rounds", type=int, default=None, help="A/B rounds (default 1 quick, 3 full)")
    p.add_argument("--workdir", default=None, help="where the sweep goes (default: a temp dir)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = run_b6(args.quick, args.workdir, args.rounds)
    for r in rows:
        print(f"{r['id']:34s} 2 workers {r['a_per_s']:8.1f}  1 worker {r['b_per_s']:8.1f}  ratio {r['ratio']:.3f}  "
              f"per round: {[round(x, 1) for x in r['a_all']]} vs {[round(x, 1) for x in r['b_all']]}  {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
