"""Command line:

    python -m lamo_ray.data info SOURCE [--sample-ratio R] [--seed S] [--subsample W] [--json]
    python -m lamo_ray.data shard SOURCE --out DIR [--task NAME] [--shard-rows N] [--force]

``info`` prints a summary of a dataset source after down-sampling (`dataset_info`): one flat JSON
object with ``--json``, else one ``key: value`` line per field. ``shard`` writes a source as one
task's memory-mapped Arrow shards (`lamo_ray.data.shards.write_task`). Errors print one line on
stderr naming the source and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lamo_ray.data.loading import dataset_info
from lamo_ray.data.trajectories import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamo_ray.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="summarise a D4RL HDF5 file or a local Minari dataset id")
    info.add_argument("source", help="path to a .hdf5/.h5 file, or a Minari dataset id")
    info.add_argument("--sample-ratio", type=float, default=1.0, help="fraction of whole trajectories kept")
    info.add_argument("--seed", type=int, default=0, help="seed of the down-sampling")
    info.add_argument("--subsample", choices=["uniform", "length_weighted"], default="uniform",
                      help="how the kept trajectories are drawn (data.subsample)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    shard = commands.add_parser("shard", help="write a dataset as one task's memory-mapped Arrow shards")
    shard.add_argument("source", help="path to a .hdf5/.h5 file, or a Minari dataset id")
    shard.add_argument("--out", required=True, help="the task's directory")
    shard.add_argument("--task", default=None, help="task name stored with it (default: the source)")
    shard.add_argument("--shard-rows", type=int, default=1_000_000, help="steps per shard file")
    shard.add_argument("--force", action="store_true", help="replace a task already in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "shard":
        return _shard(args)
    try:
        summary = dataset_info(args.source, sample_ratio=args.sample_ratio, seed=args.seed,
                               weighting=args.subsample)
    except DatasetError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0


def _shard(args: argparse.Namespace) -> int:
    from lamo_ray.data.loading import load_dataset
    from lamo_ray.data.shards import write_task

    try:
        ds = load_dataset(args.source)
        path = write_task(ds, args.out, args.task or args.source, shard_rows=args.shard_rows, force=args.force)
    except (DatasetError, FileExistsError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"{path}: {len(ds.trajectories)} trajectories, {ds.num_transitions} transitions, "
          f"{sum(f.stat().st_size for f in path.iterdir()) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
