"""Meta-World data made here: metaworld's scripted expert policies mixed with Gaussian action noise
and uniform random actions, one Minari dataset per task (``lamo/metaworld/<task>-v0``).

L2M trained on SAC replay buffers, whose episodes range from random to expert
(docs/references/l2m.md "Data"); neither they nor a SAC run per task fit here. The experts of
``metaworld.policies`` succeed at almost every CW10 task within 200 steps, and Gaussian noise up to
0.3 barely lowers that (docs/references/environment.md "Meta-World and DMControl"), so episodes cycle
through behaviour levels that do spread the returns: the noise-free expert, the expert with
N(0, 0.3^2), N(0, 0.6^2) and N(0, 1) noise (clipped to [-1, 1]), and uniform random actions
(`DEFAULT_LEVELS`). Episode i uses level i mod 5.

Stored with each dataset (Minari metadata): ``ref_min_score`` (uniform random) and ``ref_max_score``
(the noise-free expert), each a mean over ``ref_episodes`` episodes whose reset seeds differ from the
data's; ``expert_success`` and ``random_success`` (share of those episodes with ``info["success"]``
at any step); the data's own ``success_share`` and the behaviour levels.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lamo_ray.domains.metaworld import CW10, METAWORLD, check_tasks, env_id
from lamo_ray.episodes import run_episode, writable_path, write_minari

log = logging.getLogger(__name__)

DEFAULT_EPISODES = 100
RANDOM = "random"
#: behaviour levels: the expert's Gaussian action-noise std, or RANDOM for uniform random actions
DEFAULT_LEVELS: tuple[float | str, ...] = (0.0, 0.3, 0.6, 1.0, RANDOM)
REF_EPISODES = 20


def expert_policy(task: str):
    """metaworld's scripted policy of ``task``: ``obs (39,) -> action (4,)`` float32 clipped to [-1, 1]."""
    from metaworld.policies import ENV_POLICY_MAP

    # the policies warn on every new instance that their gains exceed [-1, 1]; actions are clipped here
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
    policy = ENV_POLICY_MAP[f"{task}-v3"]()
    return lambda obs: np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)


def _run(env, act, seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """One episode from ``reset(seed)``: Minari episode arrays, and whether ``info["success"]`` was set."""
    flags: list[bool] = []
    episode = run_episode(env, act, seed, reward_dtype=np.float64,
                          on_info=lambda info: flags.append(bool(info.get("success", 0.0))))
    return episode, any(flags)


def _behaviour(level: float | str, expert, rng: np.random.Generator, low: np.ndarray, high: np.ndarray):
    if level == RANDOM:
        return lambda obs: rng.uniform(low, high).astype(np.float32)
    if level == 0:
        return expert
    return lambda obs: np.clip(expert(obs) + level * rng.standard_normal(len(low)), -1.0, 1.0).astype(np.float32)


@dataclass
class CollectionReport:
    """What `collect_metaworld` wrote for one task."""

    task: str
    path: Path
    episodes: int
    transitions: int
    mean_return: float
    success_share: float
    ref_min_score: float
    ref_max_score: float
    expert_success: float
    random_success: float
    seconds: float


def collect_metaworld(task: str, dataset_id: str | None = None, episodes: int = DEFAULT_EPISODES,
                      levels: Sequence[float | str] = DEFAULT_LEVELS, seed: int = 0, ref_episodes: int = REF_EPISODES,
                      force: bool = False, progress: bool | None = None) -> CollectionReport:
    """Collect ``episodes`` 200-step episodes of ``task`` (module docstring) into Minari ``dataset_id``
    (default ``lamo/metaworld/<task>-v0``) with reference scores and measured successes. Everything
    derives from ``seed``.

    Raises:
        FileExistsError: the id exists and ``force`` is false (checked before collecting).
        ValueError: unknown task (did-you-mean), ``episodes`` or ``ref_episodes`` < 1, a negative noise
            level or an unknown level name.
    """
    import gymnasium as gym

    METAWORLD.register_envs()
    (task,) = check_tasks([task], key="task")
    dataset_id = dataset_id or f"lamo/metaworld/{task}-v0"
    path = writable_path(dataset_id, force)
    bad = [lv for lv in levels if lv != RANDOM and (isinstance(lv, str) or lv < 0)]
    if episodes < 1 or ref_episodes < 1 or not levels or bad:
        raise ValueError(f"{dataset_id}: need episodes >= 1, ref_episodes >= 1 and noise levels >= 0 or {RANDOM!r}; "
                         f"got {episodes}, {ref_episodes}, {list(levels)}")
    began = time.perf_counter()
    seed_rng, noise_rng, random_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    reset_seeds = seed_rng.choice(2**31 - 1, size=episodes + 2 * ref_episodes, replace=False)
    data_seeds, min_seeds, max_seeds = np.split(reset_seeds, [episodes, episodes + ref_episodes])
    env = gym.make(env_id(task))
    low, high = env.action_space.low, env.action_space.high
    expert = expert_policy(task)
    behaviours = [_behaviour(level, expert, noise_rng if level != RANDOM else random_rng, low, high) for level in levels]
    from minari.data_collector import EpisodeBuffer

    buffers, returns, successes = [], [], []
    for i in tqdm(range(episodes), desc=f"collecting {dataset_id}", unit="ep",
                  disable=None if progress is None else not progress):
        episode, success = _run(env, behaviours[i % len(levels)], int(data_seeds[i]))
        buffers.append(EpisodeBuffer(id=i, seed=int(data_seeds[i]), **episode))
        returns.append(float(episode["rewards"].sum()))
        successes.append(success)
    random_runs = [_run(env, _behaviour(RANDOM, expert, random_rng, low, high), int(s)) for s in min_seeds]
    expert_runs = [_run(env, expert, int(s)) for s in max_seeds]
    ref_min = float(np.mean([ep["rewards"].sum() for ep, _ in random_runs]))
    ref_max = float(np.mean([ep["rewards"].sum() for ep, _ in expert_runs]))
    expert_success = float(np.mean([ok for _, ok in expert_runs]))
    random_success = float(np.mean([ok for _, ok in random_runs]))
    dataset = write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name="metaworld scripted expert with Gaussian action noise, and uniform random actions",
        code_permalink="lamo_ray/domains/metaworld/collect.py (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
        description=(f"{env_id(task)} (Continual World settings: 200 steps, random positions at every reset), "
                     f"{episodes} episodes cycling through behaviour levels {list(levels)} (expert noise std, or "
                     f"uniform random); seed {seed}."))
    dataset.storage.update_metadata({"levels": [str(lv) for lv in levels], "collection_seed": seed,
                                     "success_share": float(np.mean(successes)), "expert_success": expert_success,
                                     "random_success": random_success})
    env.close()
    transitions = int(sum(len(b.rewards) for b in buffers))
    seconds = time.perf_counter() - began
    log.info("%s: %d episodes, %d transitions, %.1f s; mean return %.1f, success %.0f%%; expert %.1f (success "
             "%.0f%%), random %.1f (success %.0f%%)", dataset_id, episodes, transitions, seconds, np.mean(returns),
             100 * np.mean(successes), ref_max, 100 * expert_success, ref_min, 100 * random_success)
    return CollectionReport(task, path, episodes, transitions, float(np.mean(returns)), float(np.mean(successes)),
                            ref_min, ref_max, expert_success, random_success, seconds)


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(CW10),
                        help="task names (metaworld's, without -v3), or cw10 / mt40 / mt50; default CW10")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-episodes", type=int, default=REF_EPISODES,
                        help="episodes for each of ref_min_score (random) and ref_max_score (expert)")
    parser.add_argument("--force", action="store_true", help="replace existing dataset ids")
    parser.set_defaults(run=_collect_command)


def _collect_command(args: argparse.Namespace) -> int:
    tasks = check_tasks(args.tasks, key="--tasks")   # every name checked before any episode
    for task in tasks:
        writable_path(f"lamo/metaworld/{task}-v0", args.force)
    for task in tasks:
        r = collect_metaworld(task, episodes=args.episodes, seed=args.seed, ref_episodes=args.ref_episodes,
                              force=args.force)
        print(f"{r.path}: {r.episodes} episodes, {r.transitions} transitions, {r.seconds:.1f} s; mean return "
              f"{r.mean_return:.1f}, success {100 * r.success_share:.0f}%; expert {r.ref_max_score:.1f} (success "
              f"{100 * r.expert_success:.0f}%), random {r.ref_min_score:.1f} (success {100 * r.random_success:.0f}%)")
    return 0
