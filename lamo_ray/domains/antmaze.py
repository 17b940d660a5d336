"""AntMaze: Gymnasium-Robotics ``AntMaze_{UMaze,Medium,Large}-v4`` evaluated as D4RL's antmaze-v2
(the ODT-TD3 paper's hardest sparse-reward domain; docs/references/odt_td3.md "Environments").

- Evaluation as D4RL (``d4rl/locomotion``: ``*_MAZE_TEST`` maps, ``eval=True``): the ant starts in
  cell (1, 1) and the goal is one fixed cell (UMaze (3, 1), Medium (6, 6), Large (7, 9)); reward 1
  within 0.45 of the goal (D4RL: 0.5) and the episode ends there (``continuing_task=False``), so a
  return is 0 or 1 and D4RL's references are (0, 1). Episodes: 700 steps (UMaze), 1000 otherwise.
- The state is D4RL's 29 numbers: ``achieved_goal`` (the torso's x, y) followed by ``observation``
  (27: the rest of qpos and qvel); D4RL's evaluation observation has no goal, and neither does ours.
  ``-v4`` is the version with D4RL's observation (``-v5`` has 105 numbers); Gymnasium's deprecation
  warning for it is filtered.
- Data: Minari ``D4RL/antmaze/{umaze,umaze-diverse,medium-play,medium-diverse,large-play,large-diverse}-v1``,
  downloaded by the sweep where the network allows (`lamo_ray.inputs`); nothing is generated here.
  The ODT-TD3 paper trains on rewards shifted by -1 (eval RTG -100); that is a training-data setting,
  not the env's.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from lamo_ray.domains.base import Domain, concat_keys, register

# name -> (env id, gymnasium-robotics map name, reset cell, goal cell): D4RL's *_MAZE_TEST maps
MAZES = {"umaze": ("AntMaze_UMaze-v4", "U_MAZE", (1, 1), (3, 1)),
         "medium": ("AntMaze_Medium-v4", "MEDIUM_MAZE", (1, 1), (6, 6)),
         "large": ("AntMaze_Large-v4", "LARGE_MAZE", (1, 1), (7, 9))}
REF_SCORES = (0.0, 1.0)  # d4rl/infos.py: every antmaze dataset


def maze_of(env_id: str) -> str | None:
    for name, (known, *_rest) in MAZES.items():
        if env_id.split("-v")[0] == known.split("-v")[0]:
            return name
    return None


def evaluation_map(name: str) -> list[list[Any]]:
    """Gymnasium-Robotics' layout of maze ``name`` with D4RL's reset ("r") and goal ("g") cells."""
    ANTMAZE.import_env_package()  # first: its import-time notice (about Adroit) is not shown for AntMaze
    from gymnasium_robotics.envs.maze import maps

    _, layout, reset, goal = MAZES[name]
    rows = [list(row) for row in getattr(maps, layout)]
    rows[reset[0]][reset[1]] = "r"
    rows[goal[0]][goal[1]] = "g"
    return rows


def antmaze_observation(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """D4RL's antmaze state: ``achieved_goal`` (x, y) then ``observation`` (27): (..., 29) float32.

    Raises:
        ValueError: a key is missing.
    """
    return concat_keys(obs, ("achieved_goal", "observation"), "AntMaze")


class AntMazeDomain(Domain):
    """AntMaze with D4RL antmaze-v2's evaluation (module docstring)."""

    name = "antmaze"
    env_ids = tuple(m[0] for m in MAZES.values())
    env_package = "gymnasium_robotics"
    dataset_prefixes = ("d4rl/antmaze/",)
    ref_scores_by_name = {"antmaze": REF_SCORES}

    def serves_env(self, env_id: str) -> bool:
        return env_id.startswith("AntMaze_")

    def make_env(self, env_id: str, max_episode_steps: int | None = None, **kwargs: Any):
        if "maze_map" in kwargs:  # gymnasium-robotics keeps (and may change) the list it is given
            kwargs = dict(kwargs, maze_map=copy.deepcopy(kwargs["maze_map"]))
        with warnings.catch_warnings():  # -v4 is D4RL's observation; -v5's differs (module docstring)
            warnings.filterwarnings("ignore", message=".*is out of date.*")
            return super().make_env(env_id, max_episode_steps=max_episode_steps, **kwargs)

    def evaluation_env_kwargs(self, env_id: str, data_env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """D4RL's evaluation whatever the data were recorded with: fixed start and goal cells, the
        episode ends at the goal."""
        name = maze_of(env_id)
        if name is None:
            raise ValueError(f"unknown AntMaze {env_id!r}; known: {', '.join(m[0] for m in MAZES.values())}")
        return {"maze_map": evaluation_map(name), "continuing_task": False, "reset_target": False}

    def flatten_dict_observation(self, obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
        return antmaze_observation(obs, batch_dims)


ANTMAZE = register(AntMazeDomain())
