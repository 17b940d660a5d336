"""DMControl data made here with L2M's recipe: the whole replay buffer of a SAC agent trained on the
task, one Minari dataset per task (``lamo/dmcontrol/<domain>-<task>-v0``).

L2M's DMC data were SAC replay buffers of 1M transitions per task, from the random warm-up to the
trained agent (docs/references/l2m.md "Data"; ml-jku/L2M ``src/data/dm_control/README.md``). The suite has
no scripted experts, so the only faithful local stand-in is the same recipe at a smaller budget:
stable-baselines3's SAC (its default hyper-parameters: 256x256 MLPs, lr 3e-4, batch 256) on
``DMControl/<task>-v0`` (L2M's 204-number state) for ``timesteps`` env steps, every transition
kept, split into the suite's 1000-step episodes.

Stored with the dataset (Minari metadata): ``ref_min_score`` (uniform random actions) and
``ref_max_score`` (the final SAC policy, stochastic), each a mean over ``ref_episodes`` episodes with
their own reset seeds; the SAC budget and warm-up. L2M's own data-normalized references
(`lamo_ray.domains.dmcontrol.DATA_NORMALIZED_REFS`) belong to its datasets and are not used for these.

    python -m lamo_ray.collect dmcontrol --task cartpole-balance [--timesteps N] [--learning-starts N]
                                         [--ref-episodes N] [--seed S] [--threads 1] [--force]
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lamo_ray.domains.dmcontrol import DMCONTROL, EPISODE_STEPS, check_tasks, env_id
from lamo_ray.episodes import mean_return, sb3_policy, sb3_replay_episodes, uniform_random, writable_path, write_minari

log = logging.getLogger(__name__)

DEFAULT_TIMESTEPS = 100_000     # CLI default (L2M: 1M per task)
LOCAL_TIMESTEPS = 20_000        # what a sweep generates on first use (20 episodes)
DEFAULT_LEARNING_STARTS = 1000  # SAC's uniform-random warm-up steps (part of the buffer, as in L2M's)
REF_EPISODES = 5


@dataclass
class DMControlCollectionReport:
    """What `collect_dmcontrol` wrote: id and folder, episodes and transitions, the mean return of the
    first and the last 10% of the episodes (the buffer's spread), the references, seconds."""

    dataset_id: str
    path: Path
    episodes: int
    transitions: int
    first_returns: float
    last_returns: float
    ref_min_score: float
    ref_max_score: float
    seconds: float


def collect_dmcontrol(task: str, dataset_id: str | None = None, timesteps: int = DEFAULT_TIMESTEPS,
                      learning_starts: int = DEFAULT_LEARNING_STARTS, ref_episodes: int = REF_EPISODES,
                      seed: int = 0, force: bool = False, threads: int = 1,
                      progress: bool | None = None) -> DMControlCollectionReport:
    """Train SAC on ``DMControl/<task>-v0`` and store its whole replay buffer (module docstring).

    Everything derives from ``seed`` (SAC's seed, the reference episodes' reset seeds): the same
    arguments give the same dataset on the same machine and library versions.

    Args:
        task: a suite task, ``<domain>-<task>`` (e.g. ``cartpole-balance``).
        dataset_id: default ``lamo/dmcontrol/<task>-v0``.
        timesteps: SAC's env steps = the dataset's transitions; a whole number of 1000-step episodes.
        learning_starts: uniform-random steps before SAC trains.
        progress: a tqdm bar over SAC's steps; None shows it only on a terminal.

    Returns:
        a `DMControlCollectionReport`.

    Raises:
        ValueError: an unknown task (did-you-mean), ``timesteps`` not a positive multiple of 1000,
            ``learning_starts`` outside [0, timesteps), ``ref_episodes`` or ``threads`` < 1.
        FileExistsError: the id exists and ``force`` is false (checked before training).
    """
    import torch
    from minari.data_collector import EpisodeBuffer
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    (task,) = check_tasks([task], key="task")
    dataset_id = dataset_id or f"{DMCONTROL.local_prefix}{task}-v0"
    if timesteps < EPISODE_STEPS or timesteps % EPISODE_STEPS:
        raise ValueError(f"timesteps {timesteps}: a positive multiple of the suite's {EPISODE_STEPS}-step episodes")
    if not 0 <= learning_starts < timesteps:
        raise ValueError(f"learning_starts {learning_starts}: must be in [0, timesteps={timesteps})")
    for key, value in (("ref_episodes", ref_episodes), ("threads", threads)):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    path = writable_path(dataset_id, force)

    began = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sac_seq, ref_seq = np.random.SeedSequence(seed).spawn(2)
        ref_rng = np.random.default_rng(ref_seq)
        min_seeds, max_seeds = ref_rng.choice(2**31 - 1, size=(2, ref_episodes), replace=False)
        hide = None if progress is None else not progress
        train_env = DMCONTROL.make_env(env_id(task))
        eval_env = DMCONTROL.make_env(env_id(task))
        model = SAC("MlpPolicy", train_env, seed=int(sac_seq.generate_state(1)[0] % 2**31), device="cpu",
                    buffer_size=timesteps, learning_starts=learning_starts, verbose=0)

        class Bar(BaseCallback):
            def __init__(self, bar):
                super().__init__()
                self.bar = bar

            def _on_step(self) -> bool:
                self.bar.update(1)
                return True

        with tqdm(total=timesteps, desc=f"SAC on {env_id(task)}", unit="step", disable=hide) as bar:
            model.learn(total_timesteps=timesteps, callback=Bar(bar))
        episodes = sb3_replay_episodes(model, timesteps)
        ref_max = mean_return(eval_env, sb3_policy(model), max_seeds)
        ref_min = mean_return(eval_env, uniform_random(eval_env, np.random.default_rng(int(min_seeds[0]))), min_seeds)
        buffers = [EpisodeBuffer(id=i, **episode) for i, episode in enumerate(episodes)]
        dataset = write_minari(
            dataset_id, path, buffers, env=eval_env, eval_env=eval_env,
            algorithm_name=f"stable-baselines3 SAC replay buffer ({timesteps} steps), L2M's recipe",
            code_permalink="lamo_ray/domains/dmcontrol/collect.py (lamo_ray repository)",
            ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
            description=(f"{env_id(task)} in L2M's 204-number state: the whole replay buffer of a SAC agent "
                         f"({timesteps} steps, {learning_starts} random warm-up steps, seed {seed}), random to "
                         "trained. ref_min_score: uniform-random actions; ref_max_score: the final SAC policy."))
        dataset.storage.update_metadata({"collection_seed": seed, "sac_timesteps": timesteps,
                                         "sac_learning_starts": learning_starts})
        train_env.close()
        eval_env.close()
    finally:
        torch.set_num_threads(old_threads)
    returns = np.array([e["rewards"].sum() for e in episodes])
    tenth = max(1, len(returns) // 10)
    report = DMControlCollectionReport(dataset_id, path, len(episodes), int(sum(len(e["rewards"]) for e in episodes)),
                                       float(returns[:tenth].mean()), float(returns[-tenth:].mean()), ref_min, ref_max,
                                       time.perf_counter() - began)
    log.info("%s: %d episodes, %d transitions; mean return first / last 10%%: %.1f / %.1f; ref min %.1f, max %.1f; "
             "%.0f s", dataset_id, report.episodes, report.transitions, report.first_returns, report.last_returns,
             ref_min, ref_max, report.seconds)
    return report


def collect_command(args: argparse.Namespace) -> int:
    """``python -m lamo_ray.collect dmcontrol``."""
    report = collect_dmcontrol(args.task, args.dataset_id, args.timesteps, args.learning_starts, args.ref_episodes,
                               args.seed, args.force, args.threads)
    print(f"{report.dataset_id}: {report.episodes} episodes, {report.transitions} transitions at {report.path}; "
          f"mean return first / last 10% of episodes {report.first_returns:.1f} / {report.last_returns:.1f}; "
          f"ref_min_score (random) {report.ref_min_score:.1f}, ref_max_score (final SAC) {report.ref_max_score:.1f}; "
          f"{report.seconds:.0f} s")
    return 0


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="a dm_control suite task, <domain>-<task> (e.g. cartpole-balance)")
    parser.add_argument("--dataset-id", help="default lamo/dmcontrol/<task>-v0")
    parser.add_argument("--timesteps", type=int, default=DEFAULT_TIMESTEPS,
                        help="SAC's env steps = transitions stored (a multiple of 1000; L2M: 1M)")
    parser.add_argument("--learning-starts", type=int, default=DEFAULT_LEARNING_STARTS,
                        help="uniform-random warm-up steps before SAC trains")
    parser.add_argument("--ref-episodes", type=int, default=REF_EPISODES,
                        help="episodes for each reference score (random, final policy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset id")
    parser.set_defaults(run=collect_command)
