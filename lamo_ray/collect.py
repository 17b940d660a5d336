"""Generate offline datasets locally, written to the Minari store.

Reacher: LaMo made its own Reacher2d data (REFERENCE.md "Evaluation": Reacher2d targets); with no
network here we do the same on Gymnasium ``Reacher-v5`` (obs 10, action 2 in [-1, 1], 50-step
episodes, reward = -distance - |a|^2): a scripted controller (no learning) mixed with Gaussian
action noise at several levels, so that returns span near-random to the controller's own.

Kitchen: D4RL's human kitchen demonstrations cannot be downloaded here, so `collect_kitchen`
records the scripted demonstrator of `lamo_ray.kitchen` on FrankaKitchen-v1, as Minari datasets
laid out like ``D4RL/kitchen/*-v2`` (dict observations, env spec with the task list) with
D4RL's meanings: ``complete`` (the 4 target subtasks, in order, every episode), ``partial`` (a
share of episodes do the target sequence, the rest other subtask sequences), ``mixed`` (subtasks
done, never all 4 targets). Ours: rewards follow D4RL's evaluation env (each subtask counted once,
returns 0..4), where Minari's D4RL re-recordings count solved subtasks at every step.

Atari: no DQN-replay download here, so `collect_atari` plays each game with a behaviour policy
scripted from emulator RAM (`lamo_ray.atari`: Breakout and Pong paddles follow the ball; Qbert
sticky random moves) mixed with epsilon-random actions at several levels, on the DT-preprocessed
env, as ``lamo/atari/<game>-v0`` with uint8 frames gzip-compressed in the HDF5 file.

Command line::

    python -m lamo_ray.collect reacher [--episodes N] [--dataset-id ID] [--seed S]
                                       [--noise-levels 0 0.1 0.3 0.6 1.0] [--force]
    python -m lamo_ray.collect kitchen [--dataset complete|partial|mixed] [--episodes N]
                                       [--dataset-id ID] [--seed S] [--noise-levels 0 0.03 0.06 0.1]
                                       [--force]
    python -m lamo_ray.collect kitchen --evaluate-demonstrator [--episodes 20] [--dataset D]
    python -m lamo_ray.collect atari [--game Breakout|Pong|Qbert] [--episodes N] [--dataset-id ID]
                                     [--seed S] [--epsilons 0.02 0.1 0.25 0.5 1] [--max-episode-steps 4096]
                                     [--force]

MuJoCo locomotion: D4RL's files cannot be downloaded here, so `collect_mujoco` follows D4RL's recipe
on Gymnasium ``Hopper-v5`` / ``Walker2d-v5`` / ``HalfCheetah-v5``: a stable-baselines3 SAC behaviour
policy gives ``lamo/mujoco/<env>/medium-v0`` (a snapshot at about a third of the final return),
``medium-replay-v0`` (its replay buffer up to that snapshot) and ``expert-v0`` (the final policy).

    python -m lamo_ray.collect mujoco [--env Hopper|Walker2d|HalfCheetah] [--timesteps N] [--episodes N]
                                      [--snapshot-every N] [--eval-episodes 5] [--ref-episodes 20]
                                      [--learning-starts 1000] [--max-episode-steps 1000] [--seed S]
                                      [--namespace lamo/mujoco/<env>] [--threads 1] [--force]

The dataset goes to ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) and loads with
``lamo_ray.data.load_dataset(ID)``. An existing id is never replaced without ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from lamo_ray.envs import D4RL_REF_SCORES, KITCHEN_ENV_ID, KITCHEN_TASKS, MUJOCO_ENV_IDS, make_env

log = logging.getLogger(__name__)

Policy = Callable[[np.ndarray], np.ndarray]

REACHER_ENV_ID = "Reacher-v5"
DEFAULT_REACHER_ID = "lamo/reacher/mixed-v0"
DEFAULT_REACHER_EPISODES = 2000
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


def noisy(policy: Policy, noise_std: float, rng: np.random.Generator) -> Policy:
    """``policy`` plus N(0, noise_std^2) action noise, clipped to [-1, 1]."""
    if noise_std == 0:
        return policy
    return lambda obs: np.clip(policy(obs) + noise_std * rng.standard_normal(2), -1.0, 1.0).astype(np.float32)


def uniform_random(env: gym.Env, rng: np.random.Generator) -> Policy:
    """Uniform random actions over the env's Box action space (the ``ref_min_score`` policy)."""
    low, high = env.action_space.low, env.action_space.high
    return lambda obs: rng.uniform(low, high).astype(np.float32)


def run_episode(env: gym.Env, policy: Policy, seed: int, action_dtype: type = np.float32,
                reward_dtype: type | None = None) -> dict[str, np.ndarray]:
    """One episode from ``env.reset(seed=seed)`` until terminated or truncated.

    Returns Minari episode arrays: observations ``(T+1, *obs_shape)`` (the last one after the final
    step), actions ``(T, A)`` (or ``(T,)`` for discrete actions) of ``action_dtype``, rewards ``(T,)``
    (``reward_dtype``, default numpy's), terminations/truncations ``(T,)`` bool.
    """
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        done = terminated or truncated
    return {"observations": np.array(observations), "actions": np.array(actions, dtype=action_dtype),
            "rewards": np.array(rewards, dtype=reward_dtype), "terminations": np.array(terminations),
            "truncations": np.array(truncations)}


def mean_return(env: gym.Env, policy: Policy, seeds: Sequence[int]) -> float:
    """Mean undiscounted return of ``policy`` over one episode per reset seed."""
    return float(np.mean([run_episode(env, policy, int(s))["rewards"].sum() for s in seeds]))


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


def _dataset_path(dataset_id: str) -> Path:
    """Folder of ``dataset_id`` in the Minari store. Raises ValueError on a malformed id."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise ValueError(f"{dataset_id}: malformed Minari dataset id; use (namespace/)name-vN, "
                         f"e.g. {DEFAULT_REACHER_ID}") from None
    return Path(get_dataset_path(dataset_id))


def _writable_path(dataset_id: str, force: bool) -> Path:
    """Folder of ``dataset_id``; raises FileExistsError if it exists and not ``force``."""
    path = _dataset_path(dataset_id)
    if path.exists() and not force:
        raise FileExistsError(f"{dataset_id}: a Minari dataset already exists at {path}; "
                              "pass --force (force=True) to replace it")
    return path


def _write_minari(dataset_id: str, path: Path, buffers: list, **kwargs):
    """`minari.create_dataset_from_buffers` (author lamo_ray, gymnasium version recorded) after
    removing an existing dataset at ``path`` (callers checked ``force``). Returns the dataset."""
    import minari

    if path.exists():
        log.warning("%s: replacing the existing dataset at %s (force)", dataset_id, path)
        shutil.rmtree(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*author_email.*")  # none to give
        return minari.create_dataset_from_buffers(dataset_id, buffers, author="lamo_ray",
                                                  requirements=[f"gymnasium=={gym.__version__}"], **kwargs)


def collect_reacher(dataset_id: str = DEFAULT_REACHER_ID, episodes: int = DEFAULT_REACHER_EPISODES,
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

    path = _writable_path(dataset_id, force)
    if episodes < 1 or ref_episodes < 1:
        raise ValueError(f"{dataset_id}: episodes and ref_episodes must be >= 1, got {episodes}, {ref_episodes}")
    if not noise_levels or min(noise_levels) < 0:
        raise ValueError(f"{dataset_id}: noise levels must be a non-empty list of stds >= 0, got {noise_levels}")
    began = time.perf_counter()
    seed_rng, noise_rng, random_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    # distinct reset seeds: dataset episodes, then the two reference-score runs
    reset_seeds = seed_rng.choice(2**31 - 1, size=episodes + 2 * ref_episodes, replace=False)
    data_seeds, min_seeds, max_seeds = np.split(reset_seeds, [episodes, episodes + ref_episodes])

    env = make_env(REACHER_ENV_ID)
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

    dataset = _write_minari(
        dataset_id, path, buffers, env=REACHER_ENV_ID, eval_env=REACHER_ENV_ID,
        algorithm_name="scripted DLS-Jacobian controller with Gaussian action noise",
        code_permalink="lamo_ray/collect.py (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
        description=(f"Reacher-v5, {episodes} episodes; episode i uses action-noise std "
                     f"noise_levels[i % {len(levels)}] with noise_levels={levels}; seed {seed}."))
    dataset.storage.update_metadata({"noise_levels": levels, "noise_level_mean_returns": list(level_returns.values()),
                                     "collection_seed": seed})
    seconds = time.perf_counter() - began
    transitions = int(sum(len(b.rewards) for b in buffers))
    log.info("%s: wrote %d episodes, %d transitions to %s in %.1f s", dataset_id, episodes, transitions, path, seconds)
    return CollectionReport(path, level_returns, ref_min, ref_max, episodes, transitions, seconds)


def ensure_reacher_dataset(dataset_id: str = DEFAULT_REACHER_ID, episodes: int = DEFAULT_REACHER_EPISODES,
                           seed: int = 0) -> None:
    """Collect ``dataset_id`` with `collect_reacher` unless it is already in the Minari store.

    An existing dataset is used as it is, whatever ``episodes``/``seed`` made it. Not safe to call
    from several processes at once: call it once, from the driver, before trials start.

    Raises:
        ValueError: malformed dataset id.
    """
    if (_dataset_path(dataset_id) / "data").exists():
        return
    log.info("generating %s (%d Reacher-v5 episodes, seed %d); first use only", dataset_id, episodes, seed)
    collect_reacher(dataset_id, episodes=episodes, seed=seed)


# --------------------------------------------------------------------------- kitchen

KITCHEN_DATASET_IDS: dict[str, str] = {name: f"lamo/kitchen/{name}-v0" for name in KITCHEN_TASKS}
# D4RL has 19 / 601 / 621 episodes; ours default to sizes that collect in minutes here.
DEFAULT_KITCHEN_EPISODES: dict[str, int] = {"complete": 100, "partial": 300, "mixed": 300}
DEFAULT_KITCHEN_NOISE_LEVELS: tuple[float, ...] = (0.0, 0.03, 0.06, 0.1)
KITCHEN_JITTER = 0.02                # m, waypoint offsets (lamo_ray.kitchen.KitchenDemonstrator)
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
    sequences. An other sequence is 2-4 distinct subtasks of `lamo_ray.kitchen.SUBTASKS` in random
    order that never contains all four targets.
    """
    from lamo_ray.kitchen import SUBTASKS

    targets = KITCHEN_TASKS[dataset]
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
                    seed: int = 0, noise_levels: Sequence[float] = DEFAULT_KITCHEN_NOISE_LEVELS,
                    force: bool = False, progress: bool | None = None) -> KitchenCollectionReport:
    """Record the scripted kitchen demonstrator as Minari dataset ``dataset_id``.

    The env is FrankaKitchen-v1 with ``KITCHEN_TASKS[dataset]`` and D4RL's evaluation semantics
    (`lamo_ray.envs.make_env`; 280 steps, an episode ends once all targets are done). Episode i
    starts from a perturbed state (`lamo_ray.kitchen.perturb_start`), attempts
    ``kitchen_sequences(...)[i]`` with waypoint jitter `KITCHEN_JITTER` and Gaussian action noise
    ``noise_levels[i % L]``. complete keeps only episodes that finish all four targets (up to
    `MAX_ATTEMPTS_PER_EPISODE` tries each); mixed drops any that did. References: D4RL's kitchen
    scores 0 / 4. Everything derives from ``seed``.

    Args:
        dataset: "complete", "partial" or "mixed".
        dataset_id: default ``KITCHEN_DATASET_IDS[dataset]`` (``lamo/kitchen/<dataset>-v0``).
        episodes: default ``DEFAULT_KITCHEN_EPISODES[dataset]``.
        progress: tqdm bar over episodes; None shows it only on a terminal.

    Raises:
        FileExistsError: ``dataset_id`` exists and ``force`` is false (checked before collecting).
        ValueError: unknown dataset, malformed id, ``episodes`` < 1, bad noise levels, or no
            episode kept.
    """
    from minari.data_collector import EpisodeBuffer

    from lamo_ray.kitchen import run_demo_episode

    if dataset not in KITCHEN_TASKS:
        raise ValueError(f"unknown kitchen dataset {dataset!r}; known: {', '.join(KITCHEN_TASKS)}")
    dataset_id = dataset_id or KITCHEN_DATASET_IDS[dataset]
    episodes = DEFAULT_KITCHEN_EPISODES[dataset] if episodes is None else episodes
    path = _writable_path(dataset_id, force)
    if episodes < 1:
        raise ValueError(f"{dataset_id}: episodes must be >= 1, got {episodes}")
    if not noise_levels or min(noise_levels) < 0:
        raise ValueError(f"{dataset_id}: noise levels must be a non-empty list of stds >= 0, got {noise_levels}")
    began = time.perf_counter()
    plan_rng, demo_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    targets = KITCHEN_TASKS[dataset]
    env = make_env(KITCHEN_ENV_ID, tasks_to_complete=list(targets))
    levels = [float(x) for x in noise_levels]
    buffers, returns, full, attempted = [], [], 0, 0
    for i, sequence in enumerate(tqdm(kitchen_sequences(dataset, episodes, plan_rng), desc=f"collecting {dataset_id}",
                                      unit="ep", disable=None if progress is None else not progress)):
        for attempt in range(MAX_ATTEMPTS_PER_EPISODE if dataset == "complete" else 1):
            episode_seed = seed * 1_000_003 + i * MAX_ATTEMPTS_PER_EPISODE + attempt
            attempted += 1
            result = run_demo_episode(env, sequence, episode_seed, demo_rng, noise_std=levels[i % len(levels)],
                                      jitter=KITCHEN_JITTER)
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

    ref_min, ref_max = D4RL_REF_SCORES["kitchen"]
    minari_dataset = _write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name="scripted DLS-Jacobian end-effector controller (lamo_ray.kitchen) with action noise",
        code_permalink="lamo_ray/kitchen.py, lamo_ray/collect.py (lamo_ray repository)",
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


def ensure_kitchen_dataset(dataset_id: str, seed: int = 0) -> None:
    """Collect the ``lamo/kitchen/<name>-vN`` dataset ``dataset_id`` with `collect_kitchen`
    (default size) unless it is already in the Minari store. As `ensure_reacher_dataset`: call it
    once, from the driver.

    Raises:
        ValueError: ``dataset_id`` names no kitchen dataset (complete, partial, mixed).
    """
    if (_dataset_path(dataset_id) / "data").exists():
        return
    name = dataset_id.split("/")[-1].split("-v")[0]
    if name not in KITCHEN_TASKS:
        raise ValueError(f"{dataset_id}: not a kitchen dataset id; use lamo/kitchen/<complete|partial|mixed>-vN")
    log.info("generating %s (scripted kitchen demonstrations, seed %d); first use only", dataset_id, seed)
    collect_kitchen(name, dataset_id, seed=seed)


# --------------------------------------------------------------------------- atari

DEFAULT_ATARI_EPISODES = 60
# epsilon (probability of a uniformly random action) per episode, used in turn; 1.0 is random play
DEFAULT_ATARI_EPSILONS: tuple[float, ...] = (0.02, 0.1, 0.25, 0.5, 1.0)
# LaMo's Atari evaluation stops at max_timestep (4096 for Breakout); episodes are truncated there too
DEFAULT_ATARI_MAX_EPISODE_STEPS = 4096
HDF5_GZIP_LEVEL = 4


@dataclass
class AtariCollectionReport:
    """What `collect_atari` wrote.

    Attributes:
        path: the dataset's folder in the Minari store.
        epsilon_returns: mean episode return per epsilon level.
        episodes, transitions: dataset size.
        raw_bytes: the observations as stacked uint8 arrays; stored_bytes: the dataset folder on disk.
        seconds: wall time of the whole collection.
    """

    path: Path
    epsilon_returns: dict[float, float]
    episodes: int
    transitions: int
    raw_bytes: int
    stored_bytes: int
    seconds: float


def _gzip_observations(hdf5_path: Path, level: int = HDF5_GZIP_LEVEL) -> None:
    """Rewrite a Minari HDF5 file with each episode's ``observations`` gzip-compressed.

    Minari's HDF5 writer has no compression option, but its reader (h5py) decompresses
    transparently. Stacked Atari frames repeat 3 of every 4 frames within gzip's 32 KB window, so
    they shrink ~50x (measured). Groups, attributes and the other datasets are copied unchanged.
    """
    import h5py

    tmp = hdf5_path.with_name(hdf5_path.name + ".tmp")
    with h5py.File(hdf5_path, "r") as src, h5py.File(tmp, "w", track_order=True) as dst:
        dst.attrs.update(src.attrs)
        for name, group in src.items():
            out = dst.create_group(name, track_order=True)
            out.attrs.update(group.attrs)
            for key, item in group.items():
                if key == "observations" and isinstance(item, h5py.Dataset) and item.dtype == np.uint8:
                    data = item[()]
                    out.create_dataset(key, data=data, compression="gzip", compression_opts=level,
                                       chunks=(min(len(data), 32),) + data.shape[1:])
                else:
                    src.copy(item, out, name=key)
    tmp.replace(hdf5_path)


def collect_atari(game: str = "Breakout", dataset_id: str | None = None, episodes: int = DEFAULT_ATARI_EPISODES,
                  seed: int = 0, epsilons: Sequence[float] = DEFAULT_ATARI_EPSILONS,
                  max_episode_steps: int | None = DEFAULT_ATARI_MAX_EPISODE_STEPS, force: bool = False,
                  progress: bool | None = None) -> AtariCollectionReport:
    """Record the game's scripted behaviour policy (`lamo_ray.atari.ram_policy`) mixed with
    epsilon-random actions as Minari dataset ``dataset_id`` (default ``lamo/atari/<game>-v0``).

    Env: `lamo_ray.envs.make_env` of ``ALE/<Game>-v5`` (DT preprocessing: (4, 84, 84) uint8,
    frame skip 4, up to 30 no-op starts, no sticky actions), truncated at ``max_episode_steps``
    agent steps. Episode i takes a uniformly random action with probability
    ``epsilons[i % L]`` at each step, else the policy's. Reference scores are REFERENCE.md's Atari
    random / human returns, so scores are human-normalised. Observations are stored as uint8 and
    gzip-compressed in the HDF5 file (`_gzip_observations`); while collecting, each frame is held
    once in memory (`lamo_ray.data.frames`). Everything derives from ``seed``.

    Raises:
        FileExistsError: ``dataset_id`` exists and ``force`` is false (checked before collecting).
        ValueError: unknown game, malformed id, ``episodes`` < 1, epsilons outside [0, 1] or empty.
    """
    from minari.data_collector import EpisodeBuffer

    from lamo_ray.atari import FRAME_STACK, OBSERVATION_SHAPE, EpsilonMix, ram_policy, run_ram_episode
    from lamo_ray.atari import game as atari_game
    from lamo_ray.data.frames import frames_from_stacks, stacked_view

    spec = atari_game(game)
    dataset_id = dataset_id or spec.dataset_id
    path = _writable_path(dataset_id, force)
    if episodes < 1:
        raise ValueError(f"{dataset_id}: episodes must be >= 1, got {episodes}")
    if not epsilons or min(epsilons) < 0 or max(epsilons) > 1:
        raise ValueError(f"{dataset_id}: epsilons must be a non-empty list in [0, 1], got {epsilons}")
    began = time.perf_counter()
    seed_rng, policy_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    reset_seeds = seed_rng.choice(2**31 - 1, size=episodes, replace=False)
    # zero-padded frame history at episode start: the DQN-replay layout the model trains on (lamo_ray.atari)
    env = make_env(spec.env_id, max_episode_steps=max_episode_steps, frame_stack_padding="zero")
    levels = [float(x) for x in epsilons]
    episodes_data, returns = [], []
    for i in tqdm(range(episodes), desc=f"collecting {dataset_id}", unit="ep",
                  disable=None if progress is None else not progress):
        policy = EpsilonMix(ram_policy(spec.name, policy_rng), levels[i % len(levels)], spec.n_actions, policy_rng)
        episode = run_ram_episode(env, policy, int(reset_seeds[i]))
        frames = frames_from_stacks(episode.pop("observations"))
        if frames is None:  # FrameStackObservation always overlaps consecutive stacks
            raise RuntimeError(f"{dataset_id}: episode {i}: stacked observations do not share frames")
        episodes_data.append((frames, episode))
        returns.append(float(episode["rewards"].sum()))
    level_returns = {level: float(np.mean(returns[j::len(levels)])) for j, level in enumerate(levels)
                     if returns[j::len(levels)]}
    for level, value in level_returns.items():
        log.info("%s: epsilon %.2f -> mean return %.1f", dataset_id, level, value)

    buffers = [EpisodeBuffer(id=i, seed=int(reset_seeds[i]), observations=stacked_view(frames, FRAME_STACK), **ep)
               for i, (frames, ep) in enumerate(episodes_data)]
    ref_min, ref_max = spec.refs
    dataset = _write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name=f"scripted {spec.name} policy ({spec.policy}) mixed with epsilon-random actions",
        code_permalink="lamo_ray/atari.py, lamo_ray/collect.py (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=episodes,
        description=(f"{spec.env_id} with DT preprocessing ((4, 84, 84) uint8 stacked frames, frame skip 4, up to 30 "
                     f"no-op starts, no sticky actions), {episodes} episodes truncated at {max_episode_steps} steps; "
                     f"episode i acts randomly with probability epsilons[i % {len(levels)}], epsilons={levels}; "
                     f"seed {seed}. Reference scores: REFERENCE.md random / human."))
    dataset.storage.update_metadata({"epsilons": levels, "epsilon_mean_returns": list(level_returns.values()),
                                     "behaviour_policy": spec.policy, "collection_seed": seed,
                                     "max_episode_steps_collected": max_episode_steps})
    env.close()
    del buffers, episodes_data
    _gzip_observations(path / "data" / "main_data.hdf5")
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    dataset.storage.update_metadata({"dataset_size": round(stored / 1e6, 1)})
    seconds = time.perf_counter() - began
    transitions = int(dataset.total_steps)
    raw = transitions * int(np.prod(OBSERVATION_SHAPE))
    log.info("%s: wrote %d episodes, %d transitions to %s in %.1f s (%.1f MB on disk, %.0f MB as raw stacks)",
             dataset_id, episodes, transitions, path, seconds, stored / 1e6, raw / 1e6)
    return AtariCollectionReport(path, level_returns, episodes, transitions, raw, stored, seconds)


def ensure_atari_dataset(dataset_id: str, seed: int = 0) -> None:
    """Collect the ``lamo/atari/<game>-vN`` dataset ``dataset_id`` with `collect_atari` (default
    size) unless it is already in the Minari store. As `ensure_reacher_dataset`: call it once, from
    the driver.

    Raises:
        ValueError: ``dataset_id`` names no known game.
    """
    if (_dataset_path(dataset_id) / "data").exists():
        return
    from lamo_ray.atari import GAMES

    name = dataset_id.split("/")[-1].split("-v")[0]
    if name not in GAMES:
        raise ValueError(f"{dataset_id}: not an Atari dataset id; use lamo/atari/<{'|'.join(GAMES)}>-vN")
    log.info("generating %s (scripted %s policy + epsilon-random actions, seed %d); first use only",
             dataset_id, GAMES[name].name, seed)
    collect_atari(GAMES[name].name, dataset_id, seed=seed)


# --------------------------------------------------------------------------- MuJoCo locomotion

MUJOCO_KINDS: tuple[str, ...] = ("medium", "medium-replay", "expert")
DEFAULT_MUJOCO_TIMESTEPS = 100_000       # CLI default SAC budget (D4RL trained for up to 1M+ steps)
LOCAL_MUJOCO_TIMESTEPS = 30_000          # ensure_mujoco_dataset: what a local sweep generates on first use
DEFAULT_MUJOCO_EPISODES = 100            # medium / expert rollouts each (D4RL: 1M transitions each)
LOCAL_MUJOCO_EPISODES = 50
DEFAULT_MUJOCO_SNAPSHOTS = 20            # intermediate SAC snapshots kept (every timesteps // 20 steps)
DEFAULT_MUJOCO_EVAL_EPISODES = 5         # episodes per snapshot evaluation
DEFAULT_MUJOCO_REF_EPISODES = 20
DEFAULT_MUJOCO_LEARNING_STARTS = 1000    # ours; SB3's default is 100, RL Zoo's Hopper SAC 10,000
MEDIUM_FRACTION = 1 / 3                  # D4RL "medium": a policy at about a third of the expert's return


def mujoco_env_name(env: str) -> str:
    """The family name of a MuJoCo locomotion env: ``"Hopper"``, ``"hopper"``, ``"Hopper-v5"`` ->
    ``"hopper"``. Raises ValueError naming ``env`` and the known names."""
    name = env.lower().split("-v")[0]
    if name not in MUJOCO_ENV_IDS:
        raise ValueError(f"unknown MuJoCo env {env!r}; known: {', '.join(MUJOCO_ENV_IDS.values())} "
                         "(or their names: Hopper, Walker2d, HalfCheetah)")
    return name


def mujoco_dataset_ids(env: str, version: int = 0, namespace: str | None = None) -> dict[str, str]:
    """``{kind: dataset id}`` for `MUJOCO_KINDS`: ``<namespace>/<kind>-v<version>``, namespace
    default ``lamo/mujoco/<env name>`` (e.g. ``lamo/mujoco/hopper/medium-replay-v0``)."""
    namespace = namespace or f"lamo/mujoco/{mujoco_env_name(env)}"
    return {kind: f"{namespace}/{kind}-v{version}" for kind in MUJOCO_KINDS}


@dataclass
class MujocoCollectionReport:
    """What `collect_mujoco` wrote.

    Attributes:
        ids, paths: dataset id and Minari folder per kind (`MUJOCO_KINDS`).
        episodes, transitions, dataset_returns: per kind, size and mean episode return.
        snapshot_timesteps, snapshot_returns: each intermediate SAC snapshot's training step and
            mean evaluation return (stochastic policy, the same reset seeds for every snapshot).
        final_return: the final policy on those same seeds.
        medium_timestep, medium_return: the snapshot chosen for ``medium`` (return closest to
            ``MEDIUM_FRACTION * final_return``); ``medium-replay`` is the replay buffer up to it.
        ref_min_score, ref_max_score: uniform-random / final-policy mean returns.
        train_seconds: SAC training (with snapshot evaluations); seconds: the whole collection.
    """

    ids: dict[str, str]
    paths: dict[str, Path]
    episodes: dict[str, int]
    transitions: dict[str, int]
    dataset_returns: dict[str, float]
    snapshot_timesteps: list[int]
    snapshot_returns: list[float]
    final_return: float
    medium_timestep: int
    medium_return: float
    ref_min_score: float
    ref_max_score: float
    train_seconds: float
    seconds: float


def _sb3_policy(model, deterministic: bool = False) -> Policy:
    """``obs (obs_dim,) -> action (A,)`` from an SB3 model (``model.predict``: unscaled, clipped)."""
    return lambda obs: model.predict(obs, deterministic=deterministic)[0]


def _snapshot_callback(every: int, total: int, evaluate: Callable[[], float], bar: tqdm):
    """An SB3 callback that advances ``bar`` each step and, every ``every`` steps before
    ``total``, keeps a copy of the actor's weights with ``evaluate()``'s mean return."""
    import copy

    from stable_baselines3.common.callbacks import BaseCallback

    class SnapshotCallback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.snapshots: list[tuple[int, dict, float]] = []

        def _on_step(self) -> bool:
            bar.update(1)
            if self.num_timesteps % every == 0 and self.num_timesteps < total:
                value = evaluate()
                self.snapshots.append((self.num_timesteps, copy.deepcopy(self.model.actor.state_dict()), value))
                bar.set_postfix(step=self.num_timesteps, eval_return=f"{value:.0f}")
                log.info("SAC snapshot at step %d of %d: mean return %.1f", self.num_timesteps, total, value)
            return True

    return SnapshotCallback()


def _replay_episodes(model, steps: int) -> list[dict[str, np.ndarray]]:
    """The first ``steps`` transitions of ``model.replay_buffer`` (one env, never wrapped) as Minari
    episode arrays, split after each ``done``. SB3 stores ``done = terminated or truncated`` and
    ``timeouts`` = truncated (time limit), so terminations are ``done and not timeout``; a last
    unfinished piece ends with a truncation (ours). Actions are unscaled to the env's bounds."""
    rb = model.replay_buffer
    obs, next_obs = rb.observations[:steps, 0], rb.next_observations[:steps, 0]
    actions = model.policy.unscale_action(rb.actions[:steps, 0]).astype(np.float32)
    rewards, dones, timeouts = rb.rewards[:steps, 0], rb.dones[:steps, 0] > 0, rb.timeouts[:steps, 0] > 0
    ends = np.flatnonzero(dones) + 1
    if len(ends) == 0 or ends[-1] != steps:
        ends = np.append(ends, steps)
    episodes, start = [], 0
    for end in ends:
        terminations = dones[start:end] & ~timeouts[start:end]
        truncations = timeouts[start:end].copy()
        truncations[-1] = not terminations[-1]
        episodes.append({"observations": np.concatenate([obs[start:end], next_obs[end - 1:end]]),
                         "actions": actions[start:end], "rewards": rewards[start:end].astype(np.float64),
                         "terminations": terminations, "truncations": truncations})
        start = end
    return episodes


def collect_mujoco(env: str = "Hopper", timesteps: int = DEFAULT_MUJOCO_TIMESTEPS,
                   episodes: int = DEFAULT_MUJOCO_EPISODES, seed: int = 0, snapshot_every: int | None = None,
                   eval_episodes: int = DEFAULT_MUJOCO_EVAL_EPISODES, ref_episodes: int = DEFAULT_MUJOCO_REF_EPISODES,
                   learning_starts: int = DEFAULT_MUJOCO_LEARNING_STARTS, max_episode_steps: int | None = None,
                   namespace: str | None = None, version: int = 0, force: bool = False, threads: int = 1,
                   progress: bool | None = None) -> MujocoCollectionReport:
    """D4RL's recipe for MuJoCo locomotion data on Gymnasium ``<Env>-v5``: train a behaviour
    policy with stable-baselines3 SAC and record three Minari datasets (`mujoco_dataset_ids`,
    default ``lamo/mujoco/<env>/{medium,medium-replay,expert}-v0``).

    Source followed: D4RL (Fu et al. 2020, sec. 5): "medium" = rollouts of a SAC policy stopped
    early at about a third of the expert's return, "medium-replay" = the replay buffer up to that
    policy, "expert" = rollouts of the fully trained SAC policy. Ours: SB3's SAC with its default
    hyper-parameters (256x256 MLPs, lr 3e-4, batch 256) except ``learning_starts`` and a replay
    buffer that holds every step; ``episodes`` episodes each for medium and expert instead of
    D4RL's 1M transitions.

    Procedure: SAC trains for ``timesteps`` env steps; every ``snapshot_every`` steps (default
    ``timesteps // 20``) a copy of the actor is kept and evaluated on ``eval_episodes`` episodes
    (the same reset seeds each time). The final policy is evaluated on those seeds too; the
    snapshot whose mean return is closest to ``MEDIUM_FRACTION`` x the final return is the
    medium policy. All rollouts sample the stochastic SAC policy. Each dataset's Minari metadata
    holds ``ref_min_score`` = mean return of uniform-random actions and ``ref_max_score`` = mean
    return of the final policy, each over ``ref_episodes`` episodes with their own seeds, so the
    normalized score is relative to this run's own SAC expert. (The D4RL HDF5 files instead get
    D4RL's references, `lamo_ray.envs.D4RL_REF_SCORES`, and Minari's ``mujoco/*`` datasets their
    stored ones.) Metadata also records the snapshot table and the chosen snapshot.

    Everything derives from ``seed`` (SAC seed, reset seeds, sampling): the same arguments give
    identical datasets on the same machine and library versions. ``threads`` sets torch's
    intra-op threads while collecting (restored afterwards).

    Args:
        env: ``Hopper``, ``Walker2d``, ``HalfCheetah`` (any case, or the ``-v5`` id).
        timesteps: SAC budget in env steps.
        max_episode_steps: time limit for training and rollouts (default the env's 1000).
        progress: tqdm bars (training steps, then rollouts); None shows them only on a terminal.

    Returns:
        a `MujocoCollectionReport`.

    Raises:
        FileExistsError: one of the three ids exists and ``force`` is false (checked before training).
        ValueError: unknown env, malformed ids, ``timesteps`` < 2, ``snapshot_every`` not in
            [1, timesteps), ``episodes``/``eval_episodes``/``ref_episodes``/``threads`` < 1,
            ``learning_starts`` < 0.
    """
    import torch
    from minari.data_collector import EpisodeBuffer
    from stable_baselines3 import SAC

    name = mujoco_env_name(env)
    env_id = MUJOCO_ENV_IDS[name]
    ids = mujoco_dataset_ids(name, version, namespace)
    paths = {kind: _writable_path(dataset_id, force) for kind, dataset_id in ids.items()}
    snapshot_every = timesteps // DEFAULT_MUJOCO_SNAPSHOTS if snapshot_every is None else snapshot_every
    if timesteps < 2:
        raise ValueError(f"{env_id}: timesteps must be >= 2, got {timesteps}")
    if not 1 <= snapshot_every < timesteps:
        raise ValueError(f"{env_id}: snapshot_every must be in [1, timesteps={timesteps}), got {snapshot_every}")
    for key, value in (("episodes", episodes), ("eval_episodes", eval_episodes), ("ref_episodes", ref_episodes),
                       ("threads", threads)):
        if value < 1:
            raise ValueError(f"{env_id}: {key} must be >= 1, got {value}")
    if learning_starts < 0:
        raise ValueError(f"{env_id}: learning_starts must be >= 0, got {learning_starts}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"{env_id}: max_episode_steps must be >= 1, got {max_episode_steps}")

    began = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sac_seq, reset_seq, torch_seq = np.random.SeedSequence(seed).spawn(3)
        reset_seeds = np.random.default_rng(reset_seq).choice(
            2**31 - 1, size=eval_episodes + 2 * episodes + 2 * ref_episodes, replace=False)
        eval_seeds, medium_seeds, expert_seeds, min_seeds, max_seeds = np.split(
            reset_seeds, np.cumsum([eval_episodes, episodes, episodes, ref_episodes]))
        torch_seeds = [int(s) for s in torch_seq.generate_state(3)]
        hide = None if progress is None else not progress

        train_env = make_env(env_id, max_episode_steps=max_episode_steps)
        eval_env = make_env(env_id, max_episode_steps=max_episode_steps)
        model = SAC("MlpPolicy", train_env, seed=int(sac_seq.generate_state(1)[0] % 2**31), device="cpu",
                    buffer_size=timesteps, learning_starts=learning_starts, verbose=0)
        with tqdm(total=timesteps, desc=f"SAC on {env_id}", unit="step", disable=hide) as bar:
            callback = _snapshot_callback(snapshot_every, timesteps,
                                          lambda: mean_return(eval_env, _sb3_policy(model), eval_seeds), bar)
            model.learn(total_timesteps=timesteps, callback=callback)
        train_seconds = time.perf_counter() - began
        final_actor = {k: v.clone() for k, v in model.actor.state_dict().items()}
        final_return = mean_return(eval_env, _sb3_policy(model), eval_seeds)
        snapshots = callback.snapshots
        target = MEDIUM_FRACTION * final_return
        medium_step, medium_actor, medium_return = min(snapshots, key=lambda s: abs(s[2] - target))
        log.info("%s: final policy (step %d) %.1f; medium = snapshot at step %d (%.1f, target %.1f)",
                 env_id, timesteps, final_return, medium_step, medium_return, target)

        def rollouts(kind: str, seeds: np.ndarray, torch_seed: int) -> list[dict[str, np.ndarray]]:
            torch.manual_seed(torch_seed)
            policy = _sb3_policy(model)
            return [run_episode(eval_env, policy, int(s))
                    for s in tqdm(seeds, desc=f"rollouts {ids.get(kind, kind)}", unit="ep", disable=hide)]

        torch.manual_seed(torch_seeds[0])
        ref_max = mean_return(eval_env, _sb3_policy(model), max_seeds)
        ref_min = mean_return(eval_env, uniform_random(eval_env, np.random.default_rng(torch_seeds[0])), min_seeds)
        data = {"expert": rollouts("expert", expert_seeds, torch_seeds[1])}
        model.actor.load_state_dict(medium_actor)
        data["medium"] = rollouts("medium", medium_seeds, torch_seeds[2])
        data["medium-replay"] = _replay_episodes(model, medium_step)
        model.actor.load_state_dict(final_actor)
        log.info("%s: ref_min_score (uniform random) %.1f, ref_max_score (final SAC policy) %.1f", env_id, ref_min, ref_max)

        policies = {"medium": f"SAC snapshot at step {medium_step} of {timesteps}",
                    "medium-replay": f"SAC replay buffer, steps 0-{medium_step} of {timesteps}",
                    "expert": f"final SAC policy after {timesteps} steps"}
        seed_lists = {"medium": medium_seeds, "expert": expert_seeds}
        for kind in MUJOCO_KINDS:
            buffers = [EpisodeBuffer(id=i, seed=int(seed_lists[kind][i]) if kind in seed_lists else None, **episode)
                       for i, episode in enumerate(data[kind])]
            dataset = _write_minari(
                ids[kind], paths[kind], buffers, env=eval_env, eval_env=eval_env,
                algorithm_name=f"stable-baselines3 SAC ({policies[kind]}), D4RL recipe",
                code_permalink="lamo_ray/collect.py (lamo_ray repository)",
                ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
                description=(f"{env_id}, D4RL-style {kind} data: {policies[kind]}; medium = the snapshot whose "
                             f"mean return is closest to {MEDIUM_FRACTION:.3g} x the final policy's; seed {seed}. "
                             "ref_min_score: uniform-random actions; ref_max_score: the final SAC policy."))
            dataset.storage.update_metadata({
                "collection_seed": seed, "sac_timesteps": timesteps, "sac_learning_starts": learning_starts,
                "snapshot_timesteps": [s[0] for s in snapshots],
                "snapshot_returns": [s[2] for s in snapshots], "final_return": final_return,
                "medium_snapshot_timestep": medium_step, "medium_snapshot_return": medium_return})
        train_env.close()
        eval_env.close()
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - began
    episodes_n = {kind: len(data[kind]) for kind in MUJOCO_KINDS}
    transitions = {kind: int(sum(len(e["rewards"]) for e in data[kind])) for kind in MUJOCO_KINDS}
    returns = {kind: float(np.mean([e["rewards"].sum() for e in data[kind]])) for kind in MUJOCO_KINDS}
    for kind in MUJOCO_KINDS:
        log.info("%s: %d episodes, %d transitions, mean return %.1f", ids[kind], episodes_n[kind],
                 transitions[kind], returns[kind])
    return MujocoCollectionReport(ids, paths, episodes_n, transitions, returns, [s[0] for s in snapshots],
                                  [s[2] for s in snapshots], final_return, medium_step, medium_return,
                                  ref_min, ref_max, train_seconds, seconds)


def ensure_mujoco_dataset(dataset_id: str, seed: int = 0) -> None:
    """Collect ``dataset_id`` (``lamo/mujoco/<env>/<medium|medium-replay|expert>-vN``) and its two
    siblings with `collect_mujoco` at a local budget (`LOCAL_MUJOCO_TIMESTEPS` SAC steps,
    `LOCAL_MUJOCO_EPISODES` episodes per rollout dataset) unless it is already in the Minari
    store. As `ensure_reacher_dataset`: call it once, from the driver.

    Raises:
        ValueError: ``dataset_id`` is not such an id.
        FileExistsError: ``dataset_id`` is missing but a sibling from the same SAC run exists
            (regenerate all three with ``--force`` rather than mixing runs).
    """
    if (_dataset_path(dataset_id) / "data").exists():
        return
    parts = dataset_id.split("/")
    usage = "use lamo/mujoco/<hopper|walker2d|halfcheetah>/<medium|medium-replay|expert>-vN"
    if len(parts) != 4 or parts[:2] != ["lamo", "mujoco"] or "-v" not in parts[3]:
        raise ValueError(f"{dataset_id}: not a local MuJoCo dataset id; {usage}")
    kind, _, version = parts[3].rpartition("-v")
    if kind not in MUJOCO_KINDS or not version.isdigit() or parts[2] not in MUJOCO_ENV_IDS:
        raise ValueError(f"{dataset_id}: not a local MuJoCo dataset id; {usage}")
    ids = mujoco_dataset_ids(parts[2], int(version), "/".join(parts[:3]))
    present = [i for i in ids.values() if _dataset_path(i).exists()]
    if present:
        raise FileExistsError(f"{dataset_id}: missing, but {', '.join(present)} from the same SAC run exist(s); "
                              f"regenerate all three with `python -m lamo_ray.collect mujoco --env {parts[2]} --force`")
    log.info("generating %s (SAC %d steps on %s, seed %d); first use only", ", ".join(ids.values()),
             LOCAL_MUJOCO_TIMESTEPS, MUJOCO_ENV_IDS[parts[2]], seed)
    collect_mujoco(parts[2], timesteps=LOCAL_MUJOCO_TIMESTEPS, episodes=LOCAL_MUJOCO_EPISODES, seed=seed,
                   namespace="/".join(parts[:3]), version=int(version))


def _mujoco_main(args: argparse.Namespace) -> int:
    report = collect_mujoco(args.env, args.timesteps, args.episodes, args.seed, args.snapshot_every,
                            args.eval_episodes, args.ref_episodes, args.learning_starts,
                            args.max_episode_steps, args.namespace, force=args.force, threads=args.threads)
    print(f"SAC on {MUJOCO_ENV_IDS[mujoco_env_name(args.env)]}: {args.timesteps} steps in {report.train_seconds:.1f} s, "
          f"final policy mean return {report.final_return:.1f}; collection total {report.seconds:.1f} s")
    for step, value in zip(report.snapshot_timesteps, report.snapshot_returns):
        print(f"  snapshot step {step}: mean return {value:.1f}" + ("  <- medium" if step == report.medium_timestep else ""))
    for kind in MUJOCO_KINDS:
        print(f"{report.ids[kind]}: {report.episodes[kind]} episodes, {report.transitions[kind]} transitions, "
              f"mean return {report.dataset_returns[kind]:.1f}, at {report.paths[kind]}")
    print(f"  ref_min_score (uniform random) {report.ref_min_score:.1f}, "
          f"ref_max_score (final SAC policy) {report.ref_max_score:.1f}")
    return 0


def _atari_main(args: argparse.Namespace) -> int:
    from lamo_ray.atari import game

    report = collect_atari(args.game, args.dataset_id, args.episodes, args.seed, args.epsilons,
                           args.max_episode_steps or None, args.force)
    print(f"{args.dataset_id or game(args.game).dataset_id}: {report.episodes} episodes, {report.transitions} transitions, {report.seconds:.1f} s, "
          f"{report.stored_bytes / 1e6:.1f} MB on disk ({report.raw_bytes / 1e6:.0f} MB as raw uint8 stacks), "
          f"at {report.path}")
    for level, value in report.epsilon_returns.items():
        print(f"  epsilon {level:g}: mean return {value:.1f}")
    return 0


def _kitchen_main(args: argparse.Namespace) -> int:
    if args.evaluate_demonstrator:
        from lamo_ray.kitchen import evaluate_demonstrator

        targets = KITCHEN_TASKS[args.dataset]
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
                             args.noise_levels or DEFAULT_KITCHEN_NOISE_LEVELS, args.force)
    dataset_id = args.dataset_id or KITCHEN_DATASET_IDS[args.dataset]
    print(f"{dataset_id}: {report.episodes} episodes ({report.attempted} attempted), {report.transitions} transitions, "
          f"{report.seconds:.1f} s ({report.seconds_per_episode:.2f} s per episode), at {report.path}")
    print(f"  mean return {report.return_mean:.2f} of 4; all four targets in {100 * report.full_sequence_share:.0f}% "
          "of episodes")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 on a refused or invalid request)."""
    parser = argparse.ArgumentParser(prog="python -m lamo_ray.collect", description="Generate offline datasets.")
    commands = parser.add_subparsers(dest="command", required=True)
    reacher = commands.add_parser("reacher", help="scripted Reacher-v5 controller + noise -> Minari dataset")
    reacher.add_argument("--dataset-id", default=DEFAULT_REACHER_ID)
    reacher.add_argument("--episodes", type=int, default=DEFAULT_REACHER_EPISODES)
    reacher.add_argument("--seed", type=int, default=0)
    reacher.add_argument("--noise-levels", type=float, nargs="+", default=list(DEFAULT_NOISE_LEVELS),
                         help="Gaussian action-noise stds, used in turn by episode index")
    reacher.add_argument("--ref-episodes", type=int, default=REF_EPISODES,
                         help="episodes for each of ref_min_score and ref_max_score")
    reacher.add_argument("--force", action="store_true", help="replace an existing dataset id")
    kitchen = commands.add_parser("kitchen", help="scripted FrankaKitchen-v1 demonstrator -> Minari dataset")
    kitchen.add_argument("--dataset", choices=list(KITCHEN_TASKS), default="complete",
                         help="D4RL meaning of the dataset (and its target subtasks)")
    kitchen.add_argument("--dataset-id", help="default lamo/kitchen/<dataset>-v0")
    kitchen.add_argument("--episodes", type=int, help="default: complete 100, partial 300, mixed 300 "
                         "(--evaluate-demonstrator: 20)")
    kitchen.add_argument("--seed", type=int, default=0)
    kitchen.add_argument("--noise-levels", type=float, nargs="+",
                         help=f"Gaussian action-noise stds used in turn (default {list(DEFAULT_KITCHEN_NOISE_LEVELS)}; "
                         "--evaluate-demonstrator: the first one, default 0)")
    kitchen.add_argument("--force", action="store_true", help="replace an existing dataset id")
    kitchen.add_argument("--evaluate-demonstrator", action="store_true",
                         help="measure the demonstrator's success per subtask and per full sequence; write nothing")
    from lamo_ray.atari import GAMES

    atari = commands.add_parser("atari", help="RAM-scripted Atari policy + epsilon-random actions -> Minari dataset")
    atari.add_argument("--game", type=str.lower, choices=list(GAMES), default="breakout",
                       help="Breakout, Pong or Qbert (case-insensitive)")
    atari.add_argument("--dataset-id", help="default lamo/atari/<game>-v0")
    atari.add_argument("--episodes", type=int, default=DEFAULT_ATARI_EPISODES)
    atari.add_argument("--seed", type=int, default=0)
    atari.add_argument("--epsilons", type=float, nargs="+", default=list(DEFAULT_ATARI_EPSILONS),
                       help="probability of a random action, used in turn by episode index (1 = random play)")
    atari.add_argument("--max-episode-steps", type=int, default=DEFAULT_ATARI_MAX_EPISODE_STEPS,
                       help="truncate episodes after this many agent steps (0: the ALE's own 27,000)")
    atari.add_argument("--force", action="store_true", help="replace an existing dataset id")
    mujoco = commands.add_parser("mujoco", help="SAC behaviour policy (D4RL recipe) -> medium, medium-replay, "
                                 "expert Minari datasets")
    mujoco.add_argument("--env", default="Hopper", help="Hopper, Walker2d or HalfCheetah (Gymnasium -v5; any case)")
    mujoco.add_argument("--timesteps", type=int, default=DEFAULT_MUJOCO_TIMESTEPS, help="SAC training budget in env steps")
    mujoco.add_argument("--episodes", type=int, default=DEFAULT_MUJOCO_EPISODES,
                        help="rollout episodes for each of medium and expert")
    mujoco.add_argument("--snapshot-every", type=int,
                        help=f"steps between kept SAC snapshots (default timesteps // {DEFAULT_MUJOCO_SNAPSHOTS})")
    mujoco.add_argument("--eval-episodes", type=int, default=DEFAULT_MUJOCO_EVAL_EPISODES,
                        help="episodes per snapshot evaluation")
    mujoco.add_argument("--ref-episodes", type=int, default=DEFAULT_MUJOCO_REF_EPISODES,
                        help="episodes for each of ref_min_score (random) and ref_max_score (final policy)")
    mujoco.add_argument("--learning-starts", type=int, default=DEFAULT_MUJOCO_LEARNING_STARTS,
                        help="SAC's uniformly random warm-up steps before training")
    mujoco.add_argument("--max-episode-steps", type=int, help="time limit (default the env's 1000)")
    mujoco.add_argument("--namespace", help="dataset ids are <namespace>/<kind>-v0; default lamo/mujoco/<env>")
    mujoco.add_argument("--seed", type=int, default=0)
    mujoco.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    mujoco.add_argument("--force", action="store_true", help="replace existing dataset ids")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "atari":
        try:
            return _atari_main(args)
        except (FileExistsError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "mujoco":
        try:
            return _mujoco_main(args)
        except (FileExistsError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "kitchen":
        try:
            return _kitchen_main(args)
        except (FileExistsError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        report = collect_reacher(args.dataset_id, args.episodes, args.seed, args.noise_levels,
                                 args.ref_episodes, args.force)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset_id}: {report.episodes} episodes, {report.transitions} transitions, "
          f"{report.seconds:.1f} s, at {report.path}")
    for level, value in report.level_returns.items():
        print(f"  noise std {level:g}: mean return {value:.2f}")
    print(f"  ref_min_score (uniform random) {report.ref_min_score:.2f}, "
          f"ref_max_score (noise-free controller) {report.ref_max_score:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
