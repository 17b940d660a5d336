"""B12, data at paper scale (issue 19): a learner's memory and sampling speed with memory-mapped
Arrow shards (`lamo_ray.data.shards.ShardedSampler`) vs the same tasks held in the process's memory.

Writes ``--tasks`` synthetic tasks of ``--transitions`` steps each in Meta-World's shape (39 state
numbers, 4 action dims, 200-step trajectories) to a temporary directory, then, each in a fresh
process: (a) sharded: open the sampler and draw batches of 256 x K 5 padded to 204 / 6 for
``--seconds``; (b) in memory: read the same columns into the process (copies), then sample from them
with the same index arithmetic. Reports samples/s and the process's memory: anonymous RSS (its own
memory) and file-backed RSS (mapped pages of the shards it touched, held once by the OS page cache
for every process on the node). The paper-scale footprint follows from the measured bytes per
transition (README).

    python benchmarks/shards.py [--tasks 4] [--transitions 500000] [--seconds 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OBS, ACT, LENGTH, K, BATCH = 39, 4, 200, 5, 256


def make_tasks(root: Path, tasks: int, transitions: int) -> list[Path]:
    from lamo_ray.data.shards import write_task
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset

    paths = []
    for i in range(tasks):
        rng = np.random.default_rng(i)
        trajs = [Trajectory(rng.normal(size=(LENGTH, OBS)).astype(np.float32),
                            rng.uniform(-1, 1, (LENGTH, ACT)).astype(np.float32),
                            rng.uniform(0, 10, LENGTH).astype(np.float32), False)
                 for _ in range(transitions // LENGTH)]
        ds = TrajectoryDataset(trajs, (OBS,), ACT, False, 0.0, 2000.0, None, f"synthetic/{i}-v0")
        paths.append(write_task(ds, root / f"task{i}", f"task{i}", shard_rows=250_000))
        del ds, trajs
    return paths


def memory() -> dict[str, float]:
    """This process's RssAnon / RssFile / VmHWM in MB (/proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure(mode: str, paths: list[str], seconds: float) -> dict:
    from lamo_ray.data.shards import ShardedSampler

    before = memory()
    sampler = ShardedSampler(paths, K, 200.0, 1000, 204, 6, seed=0)
    if mode == "memory":  # the same columns copied into this process: what loading a task set costs
        for task in sampler.tasks:
            for name in ("observations", "actions", "rewards", "rtg", "timesteps"):
                setattr(task, name, [np.array(a) for a in getattr(task, name)])
    opened = memory()
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        sampler.sample(BATCH)
        n += BATCH
    elapsed = time.perf_counter() - began
    return {"mode": mode, "samples_per_s": n / elapsed, "before_mb": before, "after_open_mb": opened,
            "after_sampling_mb": memory()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--transitions", type=int, default=500_000, help="per task")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--measure", nargs="+", default=None, help=argparse.SUPPRESS)  # child: mode paths...
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1:], args.seconds)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        paths = make_tasks(Path(tmp), args.tasks, args.transitions)
        written = time.perf_counter() - began
        size = sum(f.stat().st_size for p in paths for f in p.iterdir())
        total = args.tasks * (args.transitions // LENGTH) * LENGTH
        rows = []
        for mode in ("sharded", "memory"):
            out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--measure", mode,
                                  *map(str, paths)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"tasks": args.tasks, "transitions": total, "store_mb": size / 1e6,
              "bytes_per_transition": size / total, "write_s": written, "rows": rows}
    print(f"store: {args.tasks} tasks x {args.transitions} transitions = {total:,}; {size / 1e6:.0f} MB on disk "
          f"({size / total:.0f} B per transition); written in {written:.1f} s")
    for r in rows:
        grown = {k: r["after_sampling_mb"][k] - r["before_mb"][k] for k in ("RssAnon", "RssFile")}
        print(f"{r['mode']:8s} {r['samples_per_s']:>9,.0f} samples/s (batch {BATCH} x K {K}); RSS growth: "
              f"anonymous {grown['RssAnon']:7.0f} MB, file-backed (page cache) {grown['RssFile']:7.0f} MB; "
              f"peak RSS {r['after_sampling_mb']['VmHWM']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
