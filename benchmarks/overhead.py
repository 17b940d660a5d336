"""B7: per-trial overhead of a sweep = trial wall time - training time - evaluation time.

    python benchmarks/overhead.py [--quick] [--seeds N] [--workdir DIR] [--json OUT]

Runs a real sweep (``python -m lamo_ray.sweep sweeps/reacher.yaml`` shrunk with ``--set``: 4 trials
per seed (the LaMo-style variant with 1 worker, which trains in its Tune trial process, and DT with
2 DDP workers through Ray Train, at 2 sample ratios), FIFO, its own local Ray, MLflow in a sqlite
file under the workdir) and reads every trial's run:

- wall: ``time/trial_wall_s`` (the Tune trial function, from its start to the end of its training
  loop or ``TorchTrainer.fit()``; logged by `lamo_ray.tune_runtime.run_trial`);
- train: the sum of ``train/time_s`` (the optimisation steps themselves, rank 0);
- eval: the sum of ``eval/time_s`` minus ``eval/actor_startup_s`` (rollouts only).

Overhead = wall - train - eval: Ray starting the trial's Train controller and worker processes,
imports, data loading, model construction, MLflow, checkpoints, reports and shutdown. The
workers' own phases (``time/setup/*``: process start (or trial start, in_trial) -> training
function, data, model, services) are printed as medians to show where it goes, and the overhead
median per launcher (``lamo_ray.launcher`` tag). A trial process Tune reuses for the next trial
(same resources) has torch and the model code imported already; with ``--seeds 2`` such reuse occurs. Two trials run at a time on 2 CPUs (as the quick
start does), so each trial's setup competes with the other's training: that is the overhead a
user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sweep_args(quick: bool, workdir: Path, seeds: int = 1) -> list[str]:
    steps = 40 if quick else 300
    sets = [f"seeds={list(range(seeds))}"] + (["data.sample_ratio=1.0"] if quick else []) + [
            f"train.steps={steps}", f"train.eval_every={steps // 2}", f"train.log_every={steps // 2}",
            "train.warmup_steps=10", "eval.episodes=5", "scheduler.type=fifo", f"storage_path={workdir / 'ray'}",
            "name=b7_overhead"]
    args = [sys.executable, "-m", "lamo_ray.sweep", str(REPO / "sweeps" / "reacher.yaml")]
    for s in sets:
        args += ["--set", s]
    return args


def trial_timings(uri: str) -> list[dict]:
    """Per trial run: wall, train, eval, overhead (s) and the worker setup phases, from MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    rows = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            m = run.data.metrics
            if "time/trial_wall_s" not in m:
                continue  # the sweep's parent run

            def total(key: str) -> float:
                return sum(x.value for x in client.get_metric_history(run.info.run_id, key))

            train, evals, startup = total("train/time_s"), total("eval/time_s"), total("eval/actor_startup_s")
            wall = m["time/trial_wall_s"]
            rows.append({"trial": run.data.tags.get("mlflow.runName"),
                         "launcher": run.data.tags.get("lamo_ray.launcher", "ray_train"), "wall_s": wall, "train_s": train,
                         "eval_s": evals - startup, "actor_startup_s": startup,
                         "overhead_s": wall - train - (evals - startup),
                         **{k.split("/")[-1]: v for k, v in m.items() if k.startswith("time/setup/")},
                         "trial_process_age_s": m.get("time/trial_process_age_s", float("nan"))})
    return rows


def run_b7(quick: bool, workdir: str | Path, seeds: int = 1) -> list[dict]:
    """Run the sweep and return the B7 table row (median overhead vs the 5 s target)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    proc = subprocess.run(_sweep_args(quick, workdir, seeds), cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"B7 sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    sweep_s = time.time() - t0
    rows = trial_timings(uri)
    if not rows:
        raise RuntimeError("B7: no trial run with time/trial_wall_s in MLflow")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k not in ("trial", "launcher")}
    by_launcher = {name: statistics.median(r["overhead_s"] for r in rows if r["launcher"] == name)
                   for name in sorted({r["launcher"] for r in rows})}
    phases = ", ".join(f"{k.removesuffix('_s')} {med[k]:.1f}" for k in
                       ("process_start_s", "data_s", "model_s", "services_s", "actor_startup_s") if k in med)
    launchers = ", ".join(f"{name} {v:.1f}" for name, v in by_launcher.items())
    note = (f"{len(rows)} trials, 2 at a time; medians (s): wall {med['wall_s']:.1f} = train {med['train_s']:.1f} "
            f"+ eval {med['eval_s']:.1f} + overhead; overhead by launcher: {launchers}; worker setup: {phases}; "
            f"whole sweep {sweep_s:.0f} s")
    return [{"id": "B7 per-trial overhead s / 5 s target", "a": med["overhead_s"], "b": 5.0,
             "ratio": med["overhead_s"] / 5.0, "note": note, "by_launcher": by_launcher, "trials": rows}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=1, help="seeds of the sweep (4 trials each)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = run_b7(args.quick, args.workdir or tempfile.mkdtemp(prefix="lamo-b7-"), args.seeds)
    for t in rows[0]["trials"]:
        print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in t.items()})
    print(f"{rows[0]['id']}: {rows[0]['a']:.1f} s  ({rows[0]['note']})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
