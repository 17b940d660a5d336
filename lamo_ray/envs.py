"""Environments: construction, observation flattening and reference scores, through the domain registry.

Three things every other module needs about an environment, each answered by the env's domain
(`lamo_ray.domains.for_env`; a plain Gymnasium env otherwise):

- `make_env`: a Gymnasium env from its id, registering the env package the domain needs, failing
  with a message that names the id (close ids, the package to install).
- `evaluation_env_kwargs`: the kwargs to evaluate on an env given those the training data were
  recorded with.
- `flatten_observation`: how an observation becomes the state the model sees. Vectors pass through
  as float32, images stay uint8, dict observations go through the domain's rule.

and `reference_scores_for(name)`: the reference (min, max) returns any domain knows for an env id,
dataset id or file name (docs/references/lamo.md "Evaluation").
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from lamo_ray import domains

log = logging.getLogger(__name__)


def make_env(env_id: str, seed: int | None = None, max_episode_steps: int | None = None,
             **kwargs: Any) -> gym.Env:
    """Build the Gymnasium env ``env_id`` (e.g. ``"Reacher-v5"``, ``"FrankaKitchen-v1"``) as its domain does
    (`lamo_ray.domains.Domain.make_env`: e.g. FrankaKitchen with D4RL's evaluation semantics, Atari
    with DT's preprocessing, ``max_episode_steps`` in agent steps).

    Args:
        env_id: a registered Gymnasium id.
        seed: if given, the env is reset once with ``reset(seed=seed)`` and its action space
            seeded, so later ``reset()`` calls without a seed are reproducible. Callers still
            call ``reset()`` before stepping.
        max_episode_steps: time limit (truncation); default the domain's, else the id's registered limit.
        **kwargs: passed to the domain's ``make_env`` (e.g. a dataset's recorded env kwargs).

    Raises:
        ValueError: ``env_id`` is not registered; the message names it, suggests close ids and
            the package to install when one is missing.
    """
    domain = domains.for_env(env_id)
    missing_package = domain.register_envs()
    try:
        env = domain.make_env(env_id, max_episode_steps=max_episode_steps, **kwargs)
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


def evaluation_env_kwargs(env_id: str, data_env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Kwargs to evaluate on ``env_id`` given the kwargs the training data were recorded with
    (`TrajectoryDataset.env_kwargs`), as the env's domain says (e.g. FrankaKitchen keeps the data's
    task list with D4RL's evaluation semantics); unchanged for other envs."""
    return domains.for_env(env_id).evaluation_env_kwargs(env_id, data_env_kwargs)


def flatten_observation(env_id: str | None, obs: Any, *, batch_dims: int = 0) -> np.ndarray:
    """The state the model sees for observation ``obs`` of env ``env_id``.

    - dict observations: the env's domain rule (`Domain.flatten_dict_observation`; the default
      concatenates the values in sorted key order) -> ``(*batch, obs_dim)`` float32;
    - uint8 arrays with at least 2 non-batch axes (images, e.g. Atari ``(4, 84, 84)``): unchanged;
    - any other array: as float32, shape unchanged.

    Args:
        env_id: Gymnasium id of the env (selects the dict rule); None for the default rule.
        obs: one observation, or ``batch_dims`` leading axes of them (1 for an episode).

    Raises:
        ValueError: a dict observation its domain's rule cannot map (e.g. a malformed kitchen one).
    """
    if isinstance(obs, Mapping):
        domain = domains.for_env(env_id) if env_id else domains.GENERIC
        return domain.flatten_dict_observation(obs, batch_dims)
    array = np.asarray(obs)
    if array.dtype == np.uint8 and array.ndim - batch_dims >= 2:
        return array
    return array.astype(np.float32, copy=False)


def reference_scores_for(name: str) -> tuple[float, float] | None:
    """``(ref_min_score, ref_max_score)`` a registered domain knows for ``name`` (an env id,
    dataset id or file name: D4RL's for MuJoCo files and kitchen, random / human for Atari games),
    else None (e.g. Reacher, whose references are its dataset's)."""
    return domains.ref_scores(name)
