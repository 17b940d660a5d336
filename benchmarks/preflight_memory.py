"""B15, the sweep driver's memory when a continual sweep's preflight checks many large task files
(issue 19: "no process may hold it all"). `lamo_ray.sweep.check_datasets` loads each source once; for
sources only continual trials use it keeps a `DatasetSummary` (no trajectories), so the driver's peak
is about one task's data, not all of them.

Writes ``--tasks`` synthetic files in L2M's Meta-World format (``<task>-v2.npz``, float32, 200-step
episodes, ``--transitions`` each) to a temporary directory, then, each in a fresh process: (a) the
preflight of a continual trial over them (`check_datasets`); (b) the same loads kept in a dict (what
the preflight held before summaries). Reports each process's peak RSS growth (VmHWM minus the
RSS after imports) and the data's size.

    python benchmarks/preflight_memory.py [--tasks 8] [--transitions 400000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LENGTH = 200


def make_files(root: Path, tasks: list[str], transitions: int) -> int:
    """L2M-format files, one per task; returns their total bytes."""
    total = 0
    for i, task in enumerate(tasks):
        rng = np.random.default_rng(i)
        dones = np.zeros(transitions, np.float32)
        dones[LENGTH - 1::LENGTH] = 1.0
        path = root / f"{task}-v2.npz"
        np.savez(path, observations=rng.normal(size=(transitions, 39)).astype(np.float32),
                 actions=rng.uniform(-1, 1, (transitions, 4)).astype(np.float32),
                 rewards=rng.uniform(0, 10, transitions).astype(np.float32), dones=dones)
        total += path.stat().st_size
    return total


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) / 1024
    raise KeyError(key)


def child(mode: str, root: str, tasks: list[str]) -> None:
    from lamo_ray.config import validate_trial
    from lamo_ray.data.loading import load_dataset
    from lamo_ray.sweep import check_datasets

    cfg = validate_trial({
        "data": {"source": f"{root}/{{task}}-v2.npz", "context_length": 5, "rtg_scale": 200, "max_ep_len": 200},
        "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1, "finetune": "full"},
        "train": {"steps": 10},
        "continual": {"pretrain_tasks": tasks[:-1], "tasks": tasks[-1:], "steps_per_task": 5, "eval_every": 5,
                      "method": "ft", "target_return": "data_max"}})
    base = _status("VmRSS")
    if mode == "preflight":
        checks, kept = check_datasets([cfg], generate=False)
        assert all(c.ok for c in checks), [c.detail for c in checks if not c.ok]
    else:
        kept = {source: load_dataset(source) for source in cfg.data_sources.values()}
    print(json.dumps({"mode": mode, "kept": len(kept), "peak_growth_mb": _status("VmHWM") - base}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--transitions", type=int, default=400_000)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs=2, metavar=("MODE", "ROOT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    from lamo_ray.domains.metaworld import all_tasks

    tasks = list(all_tasks()[: args.tasks])
    if args.child:
        child(args.child[0], args.child[1], tasks)
        return
    with tempfile.TemporaryDirectory() as tmp:
        size = make_files(Path(tmp), tasks, args.transitions)
        out = {"tasks": args.tasks, "transitions_per_task": args.transitions, "files_mb": size / 2**20}
        for mode in ("preflight", "all_loaded"):
            proc = subprocess.run([sys.executable, __file__, "--tasks", str(args.tasks), "--child", mode, tmp],
                                  capture_output=True, text=True, check=True)
            out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ratio"] = out["preflight"]["peak_growth_mb"] / out["all_loaded"]["peak_growth_mb"]
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
