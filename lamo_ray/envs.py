"""Environments: construction, D4RL reference scores and observation flattening.

Three things every other module needs about an environment:

- `make_env`: a Gymnasium env from its id, registering optional env packages on demand
  (gymnasium-robotics for FrankaKitchen, ale-py for Atari) and failing with a message that
  names the id.
- `D4RL_REF_SCORES` / `d4rl_ref_scores`: the random / expert returns behind the D4RL normalized
  score (REFERENCE.md "Evaluation"), and for Atari games the random / human returns behind the
  human-normalised score (`ATARI_REF_SCORES`, REFERENCE.md "Model", Atari), looked up by
  environment *family* (see `env_family`).
- `flatten_observation`: how an observation becomes the flat state vector the model sees.
  Vectors pass through as float32, images stay uint8, dict observations go through a
  per-family rule from `OBSERVATION_RULES` (default: `concat_sorted_keys`; FrankaKitchen:
  `kitchen_d4rl_observation`, D4RL's 60-dim layout).

Atari (`lamo_ray.atari`): ``make_env("ALE/Breakout-v5")`` (or ``"BreakoutNoFrameskip-v4"``) gives the
DT-preprocessed env: (4, 84, 84) uint8 observations, frame skip 4, up to 30 no-op starts, no sticky
actions, discrete actions.

Kitchen (REFERENCE.md "Kitchen"): `make_env("FrankaKitchen-v1")` gives D4RL's evaluation
semantics (`KITCHEN_EVAL_KWARGS`: each subtask rewarded once, episode ends when all are done,
280 steps) on the task list of `KITCHEN_TASKS` (default: D4RL's complete/partial targets).
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from lamo_ray.atari import REF_SCORES as ATARI_REF_SCORES
from lamo_ray.atari import is_atari_id, make_atari_env

log = logging.getLogger(__name__)

# REFERENCE.md "Evaluation": D4RL random (min) and expert (max) returns; kitchen scores one point
# per completed subtask (4 subtasks).
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
    "kitchen": (0.0, 4.0),
}

# MuJoCo locomotion (REFERENCE.md; issue 8): the Gymnasium env each family evaluates on. D4RL's -v2
# files were recorded on mujoco-py Hopper-v3 / Walker2d-v3 / HalfCheetah-v3, whose observation and
# action sizes the v5 envs keep (Hopper 11/3, Walker2d 17/6, HalfCheetah 17/6).
MUJOCO_ENV_IDS: dict[str, str] = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}

# Families known by name. Matched as a case-insensitive substring, longest first, so that
# "HalfCheetah-v5", "halfcheetah-medium-v2.hdf5", "mujoco/halfcheetah/expert-v0" -> "halfcheetah"
# and "FrankaKitchen-v1", "D4RL/kitchen/partial-v2" -> "kitchen".
ENV_FAMILIES: tuple[str, ...] = ("halfcheetah", "walker2d", "hopper", "kitchen", "reacher", *ATARI_REF_SCORES)

# Kitchen target subtasks per D4RL dataset (D4RL kitchen_envs.py; Minari D4RL/kitchen/*-v2 use the
# same lists): complete and partial share theirs, mixed swaps the slide cabinet for the bottom burner.
KITCHEN_ENV_ID = "FrankaKitchen-v1"
KITCHEN_TASKS: dict[str, tuple[str, ...]] = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}
KITCHEN_MAX_EPISODE_STEPS = 280
# D4RL's REMOVE_TASKS_WHEN_COMPLETE / TERMINATE_ON_TASK_COMPLETE: reward = subtasks completed, each
# counted once, so returns are 0..4 (refs 0 / 4). Minari's D4RL/kitchen/*-v2 were *recorded* with
# both False (reward = subtasks currently solved, every step); evaluation uses these values.
KITCHEN_EVAL_KWARGS: dict[str, Any] = {"remove_task_when_completed": True, "terminate_on_tasks_completed": True}
# qpos indices of each subtask's objects (D4RL and gymnasium_robotics kitchen_env share this table;
# tests/test_kitchen.py checks it against gymnasium_robotics). The 30-dim D4RL goal puts each desired
# goal at these indices, zeros elsewhere.
KITCHEN_OBS_ELEMENT_INDICES: dict[str, tuple[int, ...]] = {
    "bottom burner": (11, 12),
    "top burner": (15, 16),
    "light switch": (17, 18),
    "slide cabinet": (19,),
    "hinge cabinet": (20, 21),
    "microwave": (22,),
    "kettle": (23, 24, 25, 26, 27, 28, 29),
}

# Packages that register env ids when imported (gym.register_envs), by a substring of the id.
_ENV_PACKAGES: dict[str, str] = {
    "FrankaKitchen": "gymnasium_robotics",
    "ALE/": "ale_py",
    "NoFrameskip": "ale_py",
}


def env_family(name: str) -> str | None:
    """The env family named in ``name`` (an env id, dataset id or file name), else None.

    Rule: the longest entry of `ENV_FAMILIES` that occurs in ``name.lower()``.
    """
    lowered = name.lower()
    for family in sorted(ENV_FAMILIES, key=len, reverse=True):
        if family in lowered:
            return family
    return None


def d4rl_ref_scores(name: str) -> tuple[float, float] | None:
    """``(ref_min_score, ref_max_score)`` for the family in ``name``: `D4RL_REF_SCORES`, or for an
    Atari game `ATARI_REF_SCORES` (random, human).

    Returns None when ``name`` names no family with references (e.g. Reacher).
    """
    family = env_family(name)
    if family is None:
        return None
    return D4RL_REF_SCORES.get(family) or ATARI_REF_SCORES.get(family)


def _register_env_package(env_id: str) -> str | None:
    """Import the package that registers ``env_id`` if the id needs one.

    Returns the package's name when it is needed but not installed, else None.
    """
    for marker, package in _ENV_PACKAGES.items():
        if marker in env_id:
            try:
                module = importlib.import_module(package)
            except ImportError:
                return package
            gym.register_envs(module)
    return None


def kitchen_env_kwargs(tasks: str | Sequence[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """FrankaKitchen-v1 kwargs with D4RL's evaluation semantics (`KITCHEN_EVAL_KWARGS`).

    Args:
        tasks: a `KITCHEN_TASKS` key ("complete", "partial", "mixed") or a list of subtask names;
            default ``overrides["tasks_to_complete"]``, else the complete/partial targets.
        **overrides: other env kwargs, e.g. a dataset's recorded ones. ``remove_task_when_completed``
            and ``terminate_on_tasks_completed`` are still set to D4RL's evaluation values, and a
            ``max_episode_steps`` entry is dropped (it is the time limit's, not the env's).

    Raises:
        ValueError: an unknown dataset name.
    """
    recorded = overrides.pop("tasks_to_complete", None)
    overrides.pop("max_episode_steps", None)
    tasks = tasks if tasks is not None else recorded or KITCHEN_TASKS["complete"]
    if isinstance(tasks, str):
        if tasks not in KITCHEN_TASKS:
            raise ValueError(f"unknown kitchen dataset {tasks!r}; known: {', '.join(KITCHEN_TASKS)}")
        tasks = KITCHEN_TASKS[tasks]
    return {**overrides, "tasks_to_complete": list(tasks), **KITCHEN_EVAL_KWARGS}


def evaluation_env_kwargs(env_id: str, data_env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Kwargs to evaluate on ``env_id`` given the kwargs the training data were recorded with
    (`TrajectoryDataset.env_kwargs`): kitchen keeps the data's task list with D4RL's evaluation
    semantics (`kitchen_env_kwargs`); other envs use the recorded kwargs unchanged."""
    if env_family(env_id) == "kitchen":
        return kitchen_env_kwargs(**dict(data_env_kwargs or {}))
    return dict(data_env_kwargs or {})


def make_env(env_id: str, seed: int | None = None, max_episode_steps: int | None = None,
             **kwargs: Any) -> gym.Env:
    """Build the Gymnasium env ``env_id`` (e.g. ``"Reacher-v5"``, ``"FrankaKitchen-v1"``).

    Args:
        env_id: a registered Gymnasium id. FrankaKitchen ids import gymnasium-robotics and Atari
            ids import ale-py first. Atari ids (``ALE/<Game>-v5``, ``<Game>NoFrameskip-v4``) get DT's
            preprocessing (`lamo_ray.atari.make_atari_env`; ``max_episode_steps`` counts agent steps). FrankaKitchen gets `kitchen_env_kwargs(**kwargs)`: the given
            ``tasks_to_complete`` (default D4RL's complete/partial targets) with D4RL's reward and
            termination, 280 steps unless ``max_episode_steps`` says otherwise.
        seed: if given, the env is reset once with ``reset(seed=seed)`` and its action space
            seeded, so later ``reset()`` calls without a seed are reproducible. Callers still
            call ``reset()`` before stepping.
        max_episode_steps: time limit (truncation); default the id's registered limit.
        **kwargs: passed to ``gym.make`` (e.g. a dataset's recorded env kwargs).

    Raises:
        ValueError: ``env_id`` is not registered; the message names it, suggests close ids and
            the package to install when one is missing.
    """
    missing_package = _register_env_package(env_id)
    if env_family(env_id) == "kitchen":
        kwargs = kitchen_env_kwargs(**kwargs)
        max_episode_steps = max_episode_steps or KITCHEN_MAX_EPISODE_STEPS
    try:
        if is_atari_id(env_id):
            env = make_atari_env(env_id, max_episode_steps=max_episode_steps, **kwargs)
        else:
            env = gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    except gym.error.UnregisteredEnv as err:
        hint = f"; install the '{missing_package}' package" if missing_package else ""
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        if close:
            hint += f"; did you mean {', '.join(close)}?"
        raise ValueError(f"unknown environment {env_id!r}: {err}{hint}") from None
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


# --------------------------------------------------------------------------- observations

ObservationRule = Callable[[Mapping[str, Any], int], np.ndarray]


def concat_sorted_keys(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """Default dict rule: concatenate the values in sorted key order, recursing into sub-dicts.

    Each leaf of shape ``(*batch, *leaf_shape)`` is flattened to ``(*batch, prod(leaf_shape))``;
    the result is ``(*batch, sum of leaf sizes)`` float32. ``batch_dims`` leading axes are kept
    (1 for a whole episode of observations).
    """
    parts = []
    for key in sorted(obs):
        value = obs[key]
        if isinstance(value, Mapping):
            parts.append(concat_sorted_keys(value, batch_dims))
        else:
            value = np.asarray(value, dtype=np.float32)
            parts.append(value.reshape(value.shape[:batch_dims] + (-1,)))
    return np.concatenate(parts, axis=-1)


def kitchen_d4rl_observation(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """FrankaKitchen-v1 dict observation -> D4RL kitchen's 60-dim state (REFERENCE.md "Kitchen").

    ``[robot qpos (9), object qpos (21), goal (30)]`` = ``observation[0:9]``,
    ``observation[18:39]`` and a 30-vector holding each ``desired_goal[task]`` at
    `KITCHEN_OBS_ELEMENT_INDICES` [task], zeros elsewhere (D4RL ``KitchenBase._get_obs``).
    Works on one observation or on ``batch_dims`` leading axes (a Minari episode stores each
    key as an array over steps). Returns ``(*batch, 60)`` float32.

    Raises:
        ValueError: no ``observation`` key, ``observation`` is not 59-dim, or a desired goal names
            an unknown subtask or has the wrong size.
    """
    if "observation" not in obs:
        raise ValueError(f"FrankaKitchen dict observation has no 'observation' key (found {sorted(obs)}); "
                         "D4RL's 60-dim layout needs 'observation' (59) and 'desired_goal'")
    state = np.asarray(obs["observation"], dtype=np.float32)
    if state.shape[-1] != 59:
        raise ValueError(f"FrankaKitchen observation must be 59-dim for D4RL's 60-dim layout, got shape {state.shape}")
    goal = np.zeros(state.shape[:-1] + (30,), dtype=np.float32)
    for task, value in obs.get("desired_goal", {}).items():
        if task not in KITCHEN_OBS_ELEMENT_INDICES:
            raise ValueError(f"unknown kitchen subtask {task!r} in desired_goal; known: "
                             f"{', '.join(KITCHEN_OBS_ELEMENT_INDICES)}")
        index = list(KITCHEN_OBS_ELEMENT_INDICES[task])
        value = np.asarray(value, dtype=np.float32)
        if value.shape[-1] != len(index):
            raise ValueError(f"desired_goal[{task!r}] must have {len(index)} values, got shape {value.shape}")
        goal[..., index] = np.broadcast_to(value, state.shape[:-1] + (len(index),))
    return np.concatenate([state[..., 0:9], state[..., 18:39], goal], axis=-1)


# Dict-observation rules by env family (`env_family`). Families absent here use
# `concat_sorted_keys`.
OBSERVATION_RULES: dict[str, ObservationRule] = {
    "kitchen": kitchen_d4rl_observation,
}


def observation_rule(env_id: str | None) -> ObservationRule:
    """The dict-observation rule for ``env_id``: its family's entry in `OBSERVATION_RULES`,
    else `concat_sorted_keys` (also for ``env_id=None``)."""
    family = env_family(env_id) if env_id else None
    return OBSERVATION_RULES.get(family, concat_sorted_keys)


def flatten_observation(env_id: str | None, obs: Any, *, batch_dims: int = 0) -> np.ndarray:
    """The state the model sees for observation ``obs`` of env ``env_id``.

    - dict observations: `observation_rule(env_id)` -> ``(*batch, obs_dim)`` float32;
    - uint8 arrays with at least 2 non-batch axes (images, e.g. Atari ``(4, 84, 84)``): unchanged;
    - any other array: as float32, shape unchanged.

    Args:
        env_id: Gymnasium id of the env (selects the dict rule); None for the default rule.
        obs: one observation, or ``batch_dims`` leading axes of them (1 for an episode).

    Raises:
        ValueError: a dict observation its family's rule cannot map (e.g. a malformed kitchen one).
    """
    if isinstance(obs, Mapping):
        return observation_rule(env_id)(obs, batch_dims)
    array = np.asarray(obs)
    if array.dtype == np.uint8 and array.ndim - batch_dims >= 2:
        return array
    return array.astype(np.float32, copy=False)
