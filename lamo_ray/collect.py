"""Generate offline datasets here, with each domain's collector, into the Minari store.

    python -m lamo_ray.collect <domain> [options]      # domains: python -m lamo_ray.collect --help

Each registered domain with a collector adds its command (`lamo_ray.domains.Domain.add_collect_command`):
``reacher`` (scripted controller + action noise), ``kitchen`` (scripted demonstrator, D4RL's dataset
meanings), ``atari`` (RAM-scripted policies + epsilon-random actions), ``mujoco`` (SAC, D4RL's recipe).
The datasets go to ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) and load with
`lamo_ray.data.loading.load_dataset`. An existing id is never replaced without ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lamo_ray import domains


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 on a refused or invalid request, naming why)."""
    parser = argparse.ArgumentParser(prog="python -m lamo_ray.collect", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="DOMAIN")
    for domain in domains.registered():
        domain.add_collect_command(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
