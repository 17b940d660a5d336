"""Reacher: Gymnasium ``Reacher-v5`` with data made here by a scripted controller.

LaMo made its own Reacher2d data (Reacher2d targets 76 / 40, RTG scale 10, K 5:
docs/references/lamo.md "Evaluation", "Data", "Training"); with no network here we do the same on ``Reacher-v5`` (obs 10, action 2 in [-1, 1], 50-step
episodes, reward = -distance - |a|^2): `ReacherController` (no learning) mixed with Gaussian action
noise at several levels, so that returns span near-random to the controller's own. Reference scores
are the dataset's own (uniform random / noise-free controller), stored in its Minari metadata.

    python -m lamo_ray.collect reacher [--episodes N] [--dataset-id ID] [--seed S]
                                       [--noise-levels 0 0.1 0.3 0.6 1.0] [--ref-episodes N] [--force]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from lamo_ray.domains.base import Domain, EvaluationDefaults, register
from lamo_ray.episodes import in_store, mean_return, noisy, run_episode, uniform_random, writable_path, write_minari

log = logging.getLogger(__name__)

ENV_ID = "Reacher-v5"
DEFAULT_DATASET_ID = "lamo/reacher/mixed-v0"
DEFAULT_EPISODES = 2000
# Gaussian action-noise std per level; episode i uses level i % len(levels). 1.0 is near random.
DEFAULT_NOISE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.6, 1.0)
REF_EPISODES = 100


@dataclass(frozen=True)
class ReacherController:
    """Scripted Reacher-v5 policy: damped-least-squares Jacobian step toward the target + damping.

    From the observation ``(cos q1, cos q2, sin q1, sin q2, target xy, dq1, dq2, tip - target xy)``
    and the 2-link planar kinematics (tip = l1 (c1, s1) + l2 (c12, s12)):
    ``dq = J^T (J J^T + damping I)^-1 (target - tip)``, ``action = clip(kp dq - kd qdot, -1, 1)``.
    Gains were tuned on seeds apart from the datasets' (mean return about -5.4 against about -43
    for uniform random actions).

    Attributes:
        link1, link2: shoulder->elbow and elbow->fingertip lengths in metres (0.1, 0.11).
    """

    link1: float
    link2: float
    kp: float = 1.0
    kd: float = 0.05
    damping: float = 0.02

    @classmethod
    def from_env(cls, env: gym.Env) -> "ReacherController":
        """Read the link lengths from the env's MuJoCo model (bodies ``body1`` and ``fingertip``)."""
        model = env.unwrapped.model
        return cls(float(model.body("body1").pos[0]), float(model.body("fingertip").pos[0]))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` (10,) -> action (2,) float32 in [-1, 1]."""
        c1, c2, s1, s2 = obs[0:4]
        c12, s12 = c1 * c2 - s1 * s2, s1 * c2 + c1 * s2
        jacobian = np.array([[-self.link1 * s1 - self.link2 * s12, -self.link2 * s12],
                             [self.link1 * c1 + self.link2 * c12, self.link2 * c12]])
        error = -obs[8:10]  # target - fingertip
        dq = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + self.damping * np.eye(2), error)
        return np.clip(self.kp * dq - self.kd * obs[6:8], -1.0, 1.0).astype(np.float32)


@dataclass
class CollectionReport:
    """What `collect_reacher` wrote.

    Attributes:
        path: the dataset's folder in the Minari store.
        level_returns: mean dataset return per noise std.
        ref_min_score, ref_max_score: uniform-random / noise-free controller mean returns.
        episodes, transitions: dataset size.
        seconds: wall time of the whole collection.
    """

    path: Path
    level_returns: dict[float, float]
    ref_min_score: float
    ref_max_score: float
    episodes: int
    transitions: int
    seconds: float


def collect_reacher(dataset_id: str = DEFAULT_DATASET_ID, episodes: int = DEFAULT_EPISODES,
                    seed: int = 0, noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
                    ref_episodes: int = REF_EPISODES, force: bool = False,
                    progress: bool | None = None) -> CollectionReport:
    """Collect a mixed-quality Reacher-v5 dataset and store it as Minari ``dataset_id``.

    Episode i follows `ReacherController` with Gaussian noise of std ``noise_levels[i % L]``.
    ``ref_min_score`` is the mean return of uniform random actions and ``ref_max_score`` that
    of the noise-free controller, each over ``ref_episodes`` episodes whose reset seeds differ
    from every dataset episode's. Everything derives from ``seed``: the same arguments give
    identical data. Metadata also records the noise levels and their mean returns.

    Args:
        progress: tqdm bar over episodes; None shows it only on a terminal.

    Returns:
        a `CollectionReport`.

    Raises:
        FileExistsError: ``dataset_id`` exists and ``force`` is false (checked before collecting).
        ValueError: malformed id, ``episodes`` or ``ref_episodes`` < 1, empty or negative noise levels.
    """
    from minari.data_collector import EpisodeBuffer

    path = writable_path(dataset_id, force)
    if episodes < 1 or ref_episodes < 1:
        raise ValueError(f"{dataset_id}: episodes and ref_episodes must be >= 1, got {episodes}, {ref_episodes}")
    if not noise_levels or min(noise_levels) < 0:
        raise ValueError(f"{dataset_id}: noise levels must be a non-empty list of stds >= 0, got {noise_levels}")
    began = time.perf_counter()
    seed_rng, noise_rng, random_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    # distinct reset seeds: dataset episodes, then the two reference-score runs
    reset_seeds = seed_rng.choice(2**31 - 1, size=episodes + 2 * ref_episodes, replace=False)
    data_seeds, min_seeds, max_seeds = np.split(reset_seeds, [episodes, episodes + ref_episodes])

    env = REACHER.make_env(ENV_ID)
    controller = ReacherController.from_env(env)
    levels = [float(x) for x in noise_levels]
    policies = [noisy(controller, level, noise_rng) for level in levels]
    buffers, returns = [], []
    for i in tqdm(range(episodes), desc=f"collecting {dataset_id}", unit="ep",
                  disable=None if progress is None else not progress):
        episode = run_episode(env, policies[i % len(levels)], int(data_seeds[i]))
        buffers.append(EpisodeBuffer(id=i, seed=int(data_seeds[i]), **episode))
        returns.append(float(episode["rewards"].sum()))
    level_returns = {level: float(np.mean(returns[j::len(levels)])) for j, level in enumerate(levels)
                     if returns[j::len(levels)]}
    ref_min = mean_return(env, uniform_random(env, random_rng), min_seeds)
    ref_max = mean_return(env, controller, max_seeds)
    for level, value in level_returns.items():
        log.info("%s: noise std %.2f -> mean return %.2f", dataset_id, level, value)
    log.info("%s: ref_min_score (random) %.2f, ref_max_score (controller) %.2f", dataset_id, ref_min, ref_max)

    dataset = write_minari(
        dataset_id, path, buffers, env=ENV_ID, eval_env=ENV_ID,
        algorithm_name="scripted DLS-Jacobian controller with Gaussian action noise",
        code_permalink="lamo_ray/domains/reacher.py (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
        description=(f"Reacher-v5, {episodes} episodes; episode i uses action-noise std "
                     f"noise_levels[i % {len(levels)}] with noise_levels={levels}; seed {seed}."))
    dataset.storage.update_metadata({"noise_levels": levels, "noise_level_mean_returns": list(level_returns.values()),
                                     "collection_seed": seed})
    seconds = time.perf_counter() - began
    transitions = int(sum(len(b.rewards) for b in buffers))
    log.info("%s: wrote %d episodes, %d transitions to %s in %.1f s", dataset_id, episodes, transitions, path, seconds)
    return CollectionReport(path, level_returns, ref_min, ref_max, episodes, transitions, seconds)


class ReacherDomain(Domain):
    """Reacher-v5 with locally collected data (module docstring)."""

    name = "reacher"
    env_ids = (ENV_ID,)
    local_prefix = "lamo/reacher/"
    evaluation = EvaluationDefaults(target_returns={ENV_ID: (-3.5, -6.0)}, rtg_scale=10.0, max_ep_len=64,
                                    max_episode_steps=50)

    def serves_env(self, env_id: str) -> bool:
        return env_id.startswith("Reacher-")

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """`collect_reacher` at its default size unless ``dataset_id`` is in the Minari store (an existing
        dataset is used as it is, whatever made it).

        Raises:
            ValueError: malformed dataset id.
        """
        if in_store(dataset_id):
            return
        log.info("generating %s (%d Reacher-v5 episodes, seed %d); first use only", dataset_id, DEFAULT_EPISODES, seed)
        collect_reacher(dataset_id, seed=seed)

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        parser = commands.add_parser(self.name, help="scripted Reacher-v5 controller + noise -> Minari dataset")
        parser.add_argument("--dataset-id", default=DEFAULT_DATASET_ID)
        parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--noise-levels", type=float, nargs="+", default=list(DEFAULT_NOISE_LEVELS),
                            help="Gaussian action-noise stds, used in turn by episode index")
        parser.add_argument("--ref-episodes", type=int, default=REF_EPISODES,
                            help="episodes for each of ref_min_score and ref_max_score")
        parser.add_argument("--force", action="store_true", help="replace an existing dataset id")
        parser.set_defaults(run=_collect_command)


def _collect_command(args: argparse.Namespace) -> int:
    report = collect_reacher(args.dataset_id, args.episodes, args.seed, args.noise_levels, args.ref_episodes,
                             args.force)
    print(f"{args.dataset_id}: {report.episodes} episodes, {report.transitions} transitions, "
          f"{report.seconds:.1f} s, at {report.path}")
    for level, value in report.level_returns.items():
        print(f"  noise std {level:g}: mean return {value:.2f}")
    print(f"  ref_min_score (uniform random) {report.ref_min_score:.2f}, "
          f"ref_max_score (noise-free controller) {report.ref_max_score:.2f}")
    return 0


REACHER = register(ReacherDomain())
