"""Episodes and the Minari store: what every domain's collector shares.

- `run_episode`: one episode of a policy on an env, as Minari episode arrays; `mean_return`.
- Behaviour-policy helpers: `noisy` (Gaussian action noise), `uniform_random` (the ``ref_min_score``
  policy of continuous domains).
- The Minari store: `dataset_path`, `writable_path` (never replaces a dataset without ``force``),
  `write_minari` (``minari.create_dataset_from_buffers``).

Datasets go to ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) and load with
`lamo_ray.data.loading.load_dataset`.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)

#: a behaviour policy: observation -> action
Policy = Callable[[np.ndarray], np.ndarray]


def noisy(policy: Policy, noise_std: float, rng: np.random.Generator) -> Policy:
    """``policy`` plus N(0, noise_std^2) action noise per dimension, clipped to [-1, 1]."""
    if noise_std == 0:
        return policy

    def act(obs: np.ndarray) -> np.ndarray:
        action = policy(obs)
        return np.clip(action + noise_std * rng.standard_normal(np.shape(action)), -1.0, 1.0).astype(np.float32)

    return act


def uniform_random(env: gym.Env, rng: np.random.Generator) -> Policy:
    """Uniform random actions over the env's Box action space (the ``ref_min_score`` policy)."""
    low, high = env.action_space.low, env.action_space.high
    return lambda obs: rng.uniform(low, high).astype(np.float32)


def run_episode(env: gym.Env, policy: Policy, seed: int, action_dtype: type = np.float32,
                reward_dtype: type | None = None,
                on_info: Callable[[dict], None] | None = None) -> dict[str, np.ndarray]:
    """One episode from ``env.reset(seed=seed)`` until terminated or truncated; ``on_info`` gets each
    step's ``info`` (e.g. a success flag the arrays do not hold).

    Returns Minari episode arrays: observations ``(T+1, *obs_shape)`` (the last one after the final
    step; a dict of such arrays for dict observations), actions ``(T, A)`` (or ``(T,)`` for discrete actions) of ``action_dtype``, rewards ``(T,)``
    (``reward_dtype``, default numpy's), terminations/truncations ``(T,)`` bool.
    """
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        if on_info is not None:
            on_info(info)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        done = terminated or truncated
    if isinstance(observations[0], dict):  # dict observation spaces (goal-conditioned envs): one array per key
        stacked = {k: np.asarray([o[k] for o in observations]) for k in observations[0]}
    else:
        stacked = np.array(observations)
    return {"observations": stacked, "actions": np.array(actions, dtype=action_dtype),
            "rewards": np.array(rewards, dtype=reward_dtype), "terminations": np.array(terminations),
            "truncations": np.array(truncations)}


def mean_return(env: gym.Env, policy: Policy, seeds: Sequence[int]) -> float:
    """Mean undiscounted return of ``policy`` over one episode per reset seed."""
    return float(np.mean([run_episode(env, policy, int(s))["rewards"].sum() for s in seeds]))


def dataset_path(dataset_id: str) -> Path:
    """Folder of ``dataset_id`` in the Minari store.

    Raises:
        ValueError: a malformed id (not ``(namespace/)name-vN``).
    """
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise ValueError(f"{dataset_id}: malformed Minari dataset id; use (namespace/)name-vN, "
                         "e.g. lamo/<domain>/<name>-v0") from None
    return Path(get_dataset_path(dataset_id))


def in_store(dataset_id: str) -> bool:
    """Whether the Minari store holds ``dataset_id``'s data. Raises ValueError on a malformed id."""
    return (dataset_path(dataset_id) / "data").exists()


def writable_path(dataset_id: str, force: bool) -> Path:
    """Folder of ``dataset_id``.

    Raises:
        FileExistsError: it exists and ``force`` is false (nothing a user made is replaced silently).
        ValueError: a malformed id.
    """
    path = dataset_path(dataset_id)
    if path.exists() and not force:
        raise FileExistsError(f"{dataset_id}: a Minari dataset already exists at {path}; "
                              "pass --force (force=True) to replace it")
    return path


def write_minari(dataset_id: str, path: Path, buffers: list, **kwargs):
    """`minari.create_dataset_from_buffers` (author lamo_ray, gymnasium version recorded) after
    removing an existing dataset at ``path`` (callers checked ``force`` with `writable_path`).
    ``kwargs`` go to Minari (env, eval_env, ref scores, description, ...). Returns the dataset."""
    import minari

    if path.exists():
        log.warning("%s: replacing the existing dataset at %s (force)", dataset_id, path)
        shutil.rmtree(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*author_email.*")  # none to give
        return minari.create_dataset_from_buffers(dataset_id, buffers, author="lamo_ray",
                                                  requirements=[f"gymnasium=={gym.__version__}"], **kwargs)


def sb3_policy(model, deterministic: bool = False) -> Policy:
    """``obs (obs_dim,) -> action (A,)`` from an SB3 model (``model.predict``: unscaled, clipped)."""
    return lambda obs: model.predict(obs, deterministic=deterministic)[0]


def sb3_replay_episodes(model, steps: int) -> list[dict[str, np.ndarray]]:
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
