"""B5: ASHA vs the same grid run to completion (FIFO): compute and wall time until the best variant
is known, and whether both pick the same best variant. Target (issue 7): ASHA <= 0.4x compute,
same best variant.

    nice -n 19 python benchmarks/asha.py [--quick] [--workdir DIR] [--json OUT]

What runs: the real sweep CLI (``python -m lamo_ray.sweep benchmarks/asha_grid.yaml --set ...``),
twice, each in its own subprocess with its own local Ray, MLflow SQLite store and Tune storage
under ``workdir`` (`sweeprun.run_sweep_cli`): once with ``scheduler.type=asha``, once with
``scheduler.type=fifo``, same grid (a tiny DT on the Reacher data, one learning rate per trial over
three decades, listed in a fixed shuffled order so the grid order neither helps nor hurts
asynchronous ASHA), same seeds, two trials at a time on 2 cores.

What is measured, from MLflow (`sweeprun.read_trials`):
  - trial-steps: the sum over trials of the last training step each trial reached, i.e. the largest
    step of any metric it logged. ``train.log_every`` is small, so steps trained after ASHA's stop
    decision and before the workers were torn down are counted too (to within log_every).
    FIFO's is exactly trials x train.steps.
  - wall time: the Tune fit wall time each sweep logs on its parent run (``sweep/wall_time_s``:
    ``tuner.fit()``, trials' Ray Train start-up, training, evaluations and checkpoints included;
    Ray start, preflight and the report excluded). The CLI's whole wall time is in the note too.
    The best variant is known when the sweep ends, so this is "wall time until the best is known".
  - best variant: the trial with the highest final ``normalized_score`` (the evaluation at
    ``train.steps``) among trials that ran to the end (ASHA: outcome ``completed``; FIFO: all).
    Single-threaded training and seeded evaluation make a trial's scores the same in both runs;
    the note says whether the completed trials' final scores matched FIFO's.
The two sweeps run one after the other (ASHA first): on a shared machine the wall-time ratio
carries the load difference between the two runs; the trial-step ratio does not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweeprun import load_run, read_trials, run_sweep_cli  # noqa: E402

GRID_FILE = Path(__file__).with_name("asha_grid.yaml")
EXPERIMENT = "bench_asha"  # name: in asha_grid.yaml

# Full size: 8 learning rates (fixed shuffled order), 1800 steps each, an evaluation every 200 steps;
# ASHA rungs at 200 and 600 steps (grace 200, reduction factor 3, max_t 1800).
FULL = {"lrs": [2.0e-4, 1.0e-5, 1.0e-3, 5.0e-5, 2.0e-3, 2.0e-5, 5.0e-4, 1.0e-4],
        "steps": 1800, "eval_every": 200, "log_every": 50, "grace": 200, "rf": 3, "episodes": 10}
# Smoke size: 2 trials (one wave) x 40 steps, evaluation every 10 (rungs 10, 20), 2 episodes.
QUICK = {"lrs": [1.0e-3, 1.0e-5], "steps": 40, "eval_every": 10, "log_every": 10, "grace": 10, "rf": 2,
         "episodes": 2}


def overrides(size: dict[str, Any], scheduler: str) -> list[str]:
    """``--set`` overrides for one of the two sweeps."""
    lrs = ", ".join(repr(float(x)) for x in size["lrs"])
    return [f"train.lr={{grid: [{lrs}]}}", f"train.steps={size['steps']}", f"train.eval_every={size['eval_every']}",
            f"train.log_every={size['log_every']}", f"eval.episodes={size['episodes']}",
            f"eval.envs_per_actor={min(10, size['episodes'])}", f"scheduler.type={scheduler}",
            f"scheduler.grace_period={size['grace']}", f"scheduler.reduction_factor={size['rf']}"]


def _label(trial: dict[str, Any]) -> str:
    return f"lr={float(trial['params']['train.lr']):g}"


def summarise(result: dict[str, Any], steps: int, asha: bool) -> dict[str, Any]:
    """Trial-steps, best variant (among trials that ran to ``steps``) and per-trial outcomes."""
    trials = result["trials"]
    done = [t for t in trials if t["outcome"] == "completed" and t["eval_step"] == steps]
    if not asha:
        done = [t for t in trials if t["eval_step"] == steps]
    best = max(done, key=lambda t: t["score"]) if done else None
    return {"trial_steps": sum(t["trained_step"] for t in trials),
            "reported_steps": sum(t["eval_step"] or 0 for t in trials),
            "wall_s": result["wall_time_s"], "n_trials": len(trials), "n_completed": len(done),
            "n_stopped": sum(t["outcome"] == "stopped_by_scheduler" for t in trials),
            "n_failed": sum(t["outcome"] == "failed" for t in trials),
            "best": _label(best) if best else None, "best_score": best["score"] if best else None,
            "final": {_label(t): t["score"] for t in done},
            "per_trial": [{"label": _label(t), "outcome": t["outcome"], "trained_step": t["trained_step"],
                           "eval_step": t["eval_step"], "score": t["score"]} for t in trials]}


def run_b5(quick: bool, workdir) -> list[dict]:
    """Run the grid with ASHA, then with FIFO; return two rows (trial-steps, wall time), ratio ASHA/FIFO.

    Row keys: ``id``, ``a`` (ASHA), ``b`` (FIFO), ``ratio`` (a / b), ``target`` (<= 0.4), ``same_best``
    (bool), ``note``; the trial-steps row also carries ``asha_best_fifo_rank`` (rank of ASHA's pick
    among FIFO's final scores, 1 = same best) and ``best_gap`` (FIFO best score minus FIFO's score of
    ASHA's pick), the ``asha`` and ``fifo`` summaries (`summarise`: per-trial outcomes, steps and
    scores) and the two commands.
    """
    size = QUICK if quick else FULL
    workdir = Path(workdir or tempfile.mkdtemp(prefix="lamo-b5-")).resolve()
    for sched in ("asha", "fifo"):
        run_sweep_cli(GRID_FILE, overrides(size, sched), workdir / sched)
    return rows_from_workdir(workdir, quick)


def rows_from_workdir(workdir, quick: bool) -> list[dict]:
    """B5's rows from the two finished sweeps in ``workdir`` (``asha/`` and ``fifo/``), read from MLflow."""
    size = QUICK if quick else FULL
    workdir = Path(workdir)
    runs = {s: load_run(workdir / s) for s in ("asha", "fifo")}
    summaries = {s: summarise(read_trials(runs[s]["uri"], EXPERIMENT), size["steps"], s == "asha") for s in runs}
    a, f = summaries["asha"], summaries["fifo"]
    same = a["best"] is not None and a["best"] == f["best"]
    common = set(a["final"]) & set(f["final"])
    max_diff = max((abs(a["final"][k] - f["final"][k]) for k in common), default=float("nan"))
    ranked = sorted(f["final"], key=lambda k: -f["final"][k])
    rank = ranked.index(a["best"]) + 1 if a["best"] in f["final"] else None
    gap = f["best_score"] - f["final"][a["best"]] if rank else float("nan")
    note = (f"best {a['best']} ({a['best_score']:.2f}) ASHA vs {f['best']} ({f['best_score']:.2f}) FIFO "
            f"(ASHA's pick is FIFO's #{rank} of {len(ranked)}, {gap:.2f} below); {a['n_trials']} trials x "
            f"{size['steps']} steps; ASHA stopped {a['n_stopped']}, completed {a['n_completed']}; "
            f"completed trials' final scores vs FIFO: max |diff| {max_diff:.3g}")
    cmds = {k: " ".join(v["cmd"]) for k, v in runs.items()}
    cli = {k: v["cli_wall_s"] for k, v in runs.items()}
    return [
        {"id": "B5 ASHA/FIFO trial-steps", "a": a["trial_steps"], "b": f["trial_steps"],
         "ratio": a["trial_steps"] / f["trial_steps"], "target": "<= 0.4", "same_best": same,
         "asha_best_fifo_rank": rank, "best_gap": gap, "note": note, "asha": a, "fifo": f, "commands": cmds},
        {"id": "B5 ASHA/FIFO wall s (Tune fit)", "a": a["wall_s"], "b": f["wall_s"], "ratio": a["wall_s"] / f["wall_s"],
         "target": "<= 0.4", "same_best": same,
         "note": f"whole CLI incl. Ray start + report: {cli['asha']:.0f} s vs {cli['fifo']:.0f} s "
                 f"({cli['asha'] / cli['fifo']:.2f}x); ASHA ran first, then FIFO"},
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="B5: ASHA vs FIFO on the same grid (runs two sweeps)")
    p.add_argument("--quick", action="store_true", help="2 trials x 40 steps (smoke test)")
    p.add_argument("--workdir", default=None, help="where the two sweeps go (default: a temp dir)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--from-workdir", action="store_true",
                   help="do not run: rebuild the rows from the finished sweeps in --workdir")
    args = p.parse_args(argv)
    if args.from_workdir and not args.workdir:
        p.error("--from-workdir needs --workdir")
    rows = rows_from_workdir(args.workdir, args.quick) if args.from_workdir else run_b5(args.quick, args.workdir)
    for r in rows:
        print(f"{r['id']:34s} ASHA {r['a']:10.4g}  FIFO {r['b']:10.4g}  ratio {r['ratio']:.3f}  "
              f"same best: {r['same_best']}  {r['note']}")
    for sched in ("asha", "fifo"):
        print(f"{sched}:")
        for t in rows[0][sched]["per_trial"]:
            print(f"  {t['label']:10s} {t['outcome']:22s} trained {t['trained_step']:5d}  "
                  f"last eval {t['eval_step']}  score {t['score']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
