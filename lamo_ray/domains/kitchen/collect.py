"""Scripted kitchen datasets: the demonstrator of `lamo_ray.domains.kitchen.demonstrator` recorded as Minari datasets.

D4RL's human kitchen demonstrations cannot be downloaded here, so `collect_kitchen` records the
scripted demonstrator on FrankaKitchen-v1, as Minari datasets laid out like ``D4RL/kitchen/*-v2``
(dict observations, env spec with the task list) with D4RL's meanings: ``complete`` (the 4 target
subtasks, in order, every episode), ``partial`` (a share of episodes do the target sequence, the rest
other subtask sequences), ``mixed`` (subtasks done, never all 4 targets). Ours: rewards follow D4RL's
evaluation env (each subtask counted once, returns 0..4), where Minari's D4RL re-recordings count
solved subtasks at every step.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lamo_ray.domains.kitchen import ENV_ID, KITCHEN, LOCAL_DATASET_IDS, REF_SCORES, TASKS
from lamo_ray.episodes import writable_path, write_minari

log = logging.getLogger(__name__)

# D4RL has 19 / 601 / 621 episodes; ours default to sizes that collect in minutes here.
DEFAULT_EPISODES: dict[str, int] = {"complete": 100, "partial": 300, "mixed": 300}
DEFAULT_NOISE_LEVELS: tuple[float, ...] = (0.0, 0.03, 0.06, 0.1)
JITTER = 0.02                        # m, waypoint offsets (demonstrator.KitchenDemonstrator)
PARTIAL_TARGET_SHARE = 0.3           # partial: share of episodes attempting the target sequence
MAX_ATTEMPTS_PER_EPISODE = 3         # complete: retries (new seed) of an episode that failed


def _keeps(dataset: str, solved_all_targets: bool) -> bool:
    """Whether an episode belongs in ``dataset`` (D4RL meanings): complete only solved ones,
    mixed never solved ones, partial all."""
    return {"complete": solved_all_targets, "partial": True, "mixed": not solved_all_targets}[dataset]


def kitchen_sequences(dataset: str, episodes: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """The subtask sequence each episode of ``dataset`` attempts (D4RL's dataset meanings).

    complete: the targets in D4RL's order; partial: the first ``PARTIAL_TARGET_SHARE`` of
    episodes (rounded up) the targets in order, the rest "other" sequences; mixed: only other
    sequences. An other sequence is 2-4 distinct subtasks of `demonstrator.SUBTASKS` in random
    order that never contains all four targets.
    """
    from lamo_ray.domains.kitchen.demonstrator import SUBTASKS

    targets = TASKS[dataset]
    n_target = {"complete": episodes, "partial": int(np.ceil(PARTIAL_TARGET_SHARE * episodes)), "mixed": 0}[dataset]
    sequences: list[tuple[str, ...]] = [targets] * n_target
    while len(sequences) < episodes:
        size = int(rng.integers(2, 5))
        picked = tuple(str(t) for t in rng.permutation(SUBTASKS)[:size])
        if not set(targets) <= set(picked):
            sequences.append(picked)
    return sequences


@dataclass
class KitchenCollectionReport:
    """What `collect_kitchen` wrote.

    Attributes:
        path: the dataset's folder in the Minari store.
        episodes, transitions: dataset size.
        attempted: episodes run (complete drops failed ones and retries).
        return_mean: mean episode return (subtasks completed, 0..4).
        full_sequence_share: share of kept episodes completing all four targets.
        seconds: wall time of the whole collection.
    """

    path: Path
    episodes: int
    transitions: int
    attempted: int
    return_mean: float
    full_sequence_share: float
    seconds: float

    @property
    def seconds_per_episode(self) -> float:
        return self.seconds / max(self.attempted, 1)


def collect_kitchen(dataset: str = "complete", dataset_id: str | None = None, episodes: int | None = None,
                    seed: int = 0, noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
                    force: bool = False, progress: bool | None = None) -> KitchenCollectionReport:
    """Record the scripted kitchen demonstrator as Minari dataset ``dataset_id``.

    The env is FrankaKitchen-v1 with ``TASKS[dataset]`` and D4RL's evaluation semantics
    (`KitchenDomain.make_env`; 280 steps, an episode ends once all targets are done). Episode i
    starts from a perturbed state (`demonstrator.perturb_start`), attempts
    ``kitchen_sequences(...)[i]`` with waypoint jitter `JITTER` and Gaussian action noise
    ``noise_levels[i % L]``. complete keeps only episodes that finish all four targets (up to
    `MAX_ATTEMPTS_PER_EPISODE` tries each); mixed drops any that did. References: D4RL's kitchen
    scores 0 / 4. Everything derives from ``seed``.

    Args:
        dataset: "complete", "partial" or "mixed".
        dataset_id: default ``LOCAL_DATASET_IDS[dataset]`` (``lamo/kitchen/<dataset>-v0``).
        episodes: default ``DEFAULT_EPISODES[dataset]``.
        progress: tqdm bar over episodes; None shows it only on a terminal.

    Raises:
        FileExistsError: ``dataset_id`` exists and ``force`` is false (checked before collecting).
        ValueError: unknown dataset, malformed id, ``episodes`` < 1, bad noise levels, or no
            episode kept.
    """
    from minari.data_collector import EpisodeBuffer

    from lamo_ray.domains.kitchen.demonstrator import run_demo_episode

    if dataset not in TASKS:
        raise ValueError(f"unknown kitchen dataset {dataset!r}; known: {', '.join(TASKS)}")
    dataset_id = dataset_id or LOCAL_DATASET_IDS[dataset]
    episodes = DEFAULT_EPISODES[dataset] if episodes is None else episodes
    path = writable_path(dataset_id, force)
    if episodes < 1:
        raise ValueError(f"{dataset_id}: episodes must be >= 1, got {episodes}")
    if not noise_levels or min(noise_levels) < 0:
        raise ValueError(f"{dataset_id}: noise levels must be a non-empty list of stds >= 0, got {noise_levels}")
    began = time.perf_counter()
    plan_rng, demo_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    targets = TASKS[dataset]
    env = KITCHEN.make_env(ENV_ID, tasks_to_complete=list(targets))
    levels = [float(x) for x in noise_levels]
    buffers, returns, full, attempted = [], [], 0, 0
    for i, sequence in enumerate(tqdm(kitchen_sequences(dataset, episodes, plan_rng), desc=f"collecting {dataset_id}",
                                      unit="ep", disable=None if progress is None else not progress)):
        for attempt in range(MAX_ATTEMPTS_PER_EPISODE if dataset == "complete" else 1):
            episode_seed = seed * 1_000_003 + i * MAX_ATTEMPTS_PER_EPISODE + attempt
            attempted += 1
            result = run_demo_episode(env, sequence, episode_seed, demo_rng, noise_std=levels[i % len(levels)],
                                      jitter=JITTER)
            solved = len(result.completions) == len(targets)
            if _keeps(dataset, solved):
                buffers.append(EpisodeBuffer(id=len(buffers), seed=episode_seed, **result.buffer_fields()))
                returns.append(float(result.rewards.sum()))
                full += solved
                break
            log.info("%s: episode %d (%s) completed %s; %s", dataset_id, i, " > ".join(sequence),
                     sorted(result.completions), "retrying" if dataset == "complete" else "dropped")
    if not buffers:
        raise ValueError(f"{dataset_id}: no episode kept out of {attempted}")

    ref_min, ref_max = REF_SCORES
    minari_dataset = write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name="scripted DLS-Jacobian end-effector controller (lamo_ray.domains.kitchen) with action noise",
        code_permalink="lamo_ray/domains/kitchen/ (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=len(buffers),
        description=(f"FrankaKitchen-v1 '{dataset}' (D4RL meaning), scripted demonstrations, {len(buffers)} "
                     f"episodes; targets {list(targets)}; action-noise std noise_levels[i % {len(levels)}] "
                     f"with noise_levels={levels}; seed {seed}."))
    minari_dataset.storage.update_metadata({
        "kitchen_dataset": dataset, "target_subtasks": list(targets), "noise_levels": levels,
        "collection_seed": seed, "episodes_attempted": attempted, "full_sequence_share": full / len(buffers)})
    env.close()
    seconds = time.perf_counter() - began
    transitions = int(sum(len(b.rewards) for b in buffers))
    log.info("%s: wrote %d episodes (%d attempted), %d transitions to %s in %.1f s", dataset_id, len(buffers),
             attempted, transitions, path, seconds)
    return KitchenCollectionReport(path, len(buffers), transitions, attempted, float(np.mean(returns)),
                                   full / len(buffers), seconds)


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m lamo_ray.collect kitchen``."""
    parser.add_argument("--dataset", choices=list(TASKS), default="complete",
                        help="D4RL meaning of the dataset (and its target subtasks)")
    parser.add_argument("--dataset-id", help="default lamo/kitchen/<dataset>-v0")
    parser.add_argument("--episodes", type=int, help="default: complete 100, partial 300, mixed 300 "
                        "(--evaluate-demonstrator: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-levels", type=float, nargs="+",
                        help=f"Gaussian action-noise stds used in turn (default {list(DEFAULT_NOISE_LEVELS)}; "
                        "--evaluate-demonstrator: the first one, default 0)")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset id")
    parser.add_argument("--evaluate-demonstrator", action="store_true",
                        help="measure the demonstrator's success per subtask and per full sequence; write nothing")
    parser.set_defaults(run=collect_command)


def collect_command(args: argparse.Namespace) -> int:
    """``python -m lamo_ray.collect kitchen``: collect, or with ``--evaluate-demonstrator`` measure the demonstrator."""
    if args.evaluate_demonstrator:
        from lamo_ray.domains.kitchen.demonstrator import evaluate_demonstrator

        targets = TASKS[args.dataset]
        noise = args.noise_levels[0] if args.noise_levels else 0.0
        report = evaluate_demonstrator(targets, args.episodes or 20, seed=args.seed, noise_std=noise)
        print(f"demonstrator on {' > '.join(targets)}: {report.episodes} episodes from random initial states, "
              f"action noise std {noise:g}")
        for task, rate in report.success.items():
            print(f"  {task}: {100 * rate:.0f}%")
        print(f"  full sequence: {100 * report.sequence_success:.0f}% (mean {report.mean_steps:.0f} steps of 280); "
              f"{report.seconds_per_episode:.2f} s per episode")
        return 0
    report = collect_kitchen(args.dataset, args.dataset_id, args.episodes, args.seed,
                             args.noise_levels or DEFAULT_NOISE_LEVELS, args.force)
    dataset_id = args.dataset_id or LOCAL_DATASET_IDS[args.dataset]
    print(f"{dataset_id}: {report.episodes} episodes ({report.attempted} attempted), {report.transitions} transitions, "
          f"{report.seconds:.1f} s ({report.seconds_per_episode:.2f} s per episode), at {report.path}")
    print(f"  mean return {report.return_mean:.2f} of 4; all four targets in {100 * report.full_sequence_share:.0f}% "
          "of episodes")
    return 0
