"""Command line: ``python -m lamo_ray.data info SOURCE [--sample-ratio R] [--seed S] [--subsample W] [--json]``.

Prints a summary of a dataset source after down-sampling (`dataset_info`): one flat JSON object
with ``--json``, else one ``key: value`` line per field. Errors print one line on stderr naming
the source and exit with code 2.
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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


if __name__ == "__main__":
    sys.exit(main())
