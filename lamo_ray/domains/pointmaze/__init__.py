"""PointMaze: Gymnasium-Robotics ``PointMaze_{UMaze,Medium,Large}-v3``, D4RL maze2d's task.

Evaluation as D4RL's maze2d (docs/references/odt_td3.md "D4RL / Minari maze data recipe"): the goal sits
in a fixed evaluation cell (UMaze (1,1), Medium (6,6), Large (7,9); jittered +-0.25 within it by the
env at reset), the point starts in a random other cell, the episode runs its full length
(300 / 600 / 800 steps: ``continuing_task``, the goal never moves), and the reward is sparse: 1 for
every step within 0.45 of the goal. The state the model sees is ``observation`` (x, y, vx, vy) +
``desired_goal`` (x, y): 6 numbers. Every evaluation episode records ``success`` (the env's
``info["success"]`` at any step).

Data:
- Made here by `lamo_ray.domains.pointmaze.collect` (``lamo/pointmaze/<umaze|medium|large>-v1``), as
  D4RL made maze2d: one stream of D4RL's waypoint controller going to random targets with N(0, 0.5^2)
  action noise, cut at each reached target, rewards relabelled to the evaluation goal.
- Minari's ``D4RL/pointmaze/*`` ids (downloadable where the network allows). They were recorded with a
  goal that moves after each success. On load (`PointMazeDomain.prepare_dataset`) their goal is set to
  the evaluation goal's centre and their rewards are relabelled as D4RL relabelled maze2d
  (``relabel_maze2d_rewards.py``): sparse, 1 within 0.5 of it; ``-dense`` ids get exp(-distance). Their
  episode cuts stay Minari's.

D4RL's maze2d reference scores do not transfer to these envs, so local datasets carry their own
(uniform random / the controller driving to the evaluation goal).

    python -m lamo_ray.collect pointmaze --maze umaze [--steps N] [--noise 0.5] [--seed S] [--force]
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lamo_ray.domains.base import Domain, EvaluationDefaults, concat_keys, register
from lamo_ray.episodes import in_store

log = logging.getLogger(__name__)

GOAL = "g"  # gymnasium-robotics' maze-map marker of the cells goals are drawn from


@dataclass(frozen=True)
class Maze:
    """One PointMaze layout and its D4RL-style evaluation.

    Attributes:
        name: ``umaze``, ``medium`` or ``large`` (dataset ids ``lamo/pointmaze/<name>-vN``).
        env_id: the Gymnasium-Robotics id.
        layout: gymnasium-robotics' map (1 wall, 0 free), rows top to bottom.
        goal_cell: (row, col) of the evaluation goal (D4RL maze2d's fixed target).
        max_episode_steps: the env's own episode length.
    """

    name: str
    env_id: str
    layout: tuple[tuple[int, ...], ...]
    goal_cell: tuple[int, int]
    max_episode_steps: int

    def evaluation_map(self) -> list[list[Any]]:
        """The layout with the goal marker in `goal_cell`: goals are drawn only there, resets anywhere else."""
        rows = [list(row) for row in self.layout]
        rows[self.goal_cell[0]][self.goal_cell[1]] = GOAL
        return rows

    def goal_xy(self) -> np.ndarray:
        """(x, y) of the evaluation goal cell's centre in Gymnasium-Robotics' frame (``maze_size_scaling`` 1:
        ``maze.cell_rowcol_to_xy``), D4RL's fixed maze2d target before the env's +-0.25 jitter."""
        height, width = len(self.layout), len(self.layout[0])
        row, col = self.goal_cell
        return np.array([col + 0.5 - width / 2, height / 2 - row - 0.5])

    def env_kwargs(self) -> dict[str, Any]:
        """Evaluation kwargs: fixed goal cell, full-length episodes, the goal never moves."""
        return {"maze_map": self.evaluation_map(), "continuing_task": True, "reset_target": False}


def _mazes() -> dict[str, Maze]:
    POINTMAZE.import_env_package()  # first: its import-time notice (about Adroit) is not shown for PointMaze
    from gymnasium_robotics.envs.maze import maps

    def frozen(layout):
        return tuple(tuple(row) for row in layout)

    return {m.name: m for m in (
        Maze("umaze", "PointMaze_UMaze-v3", frozen(maps.U_MAZE), (1, 1), 300),
        Maze("medium", "PointMaze_Medium-v3", frozen(maps.MEDIUM_MAZE), (6, 6), 600),
        Maze("large", "PointMaze_Large-v3", frozen(maps.LARGE_MAZE), (7, 9), 800),
    )}


MAZE_NAMES = ("umaze", "medium", "large")
ENV_IDS = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3", "large": "PointMaze_Large-v3"}


def maze(name_or_env_id: str) -> Maze:
    """The `Maze` of ``umaze|medium|large`` or of its env id (any version).

    Raises:
        ValueError: neither (the message lists the known names).
    """
    mazes = _mazes()
    key = name_or_env_id.lower()
    for m in mazes.values():
        if key == m.name or key.split("-v")[0] == m.env_id.lower().split("-v")[0]:
            return m
    raise ValueError(f"unknown PointMaze {name_or_env_id!r}; known: {', '.join(MAZE_NAMES)} "
                     f"({', '.join(ENV_IDS.values())})")


def pointmaze_observation(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """``observation`` (x, y, vx, vy) followed by ``desired_goal`` (x, y): (..., 6) float32.

    Raises:
        ValueError: either key is missing.
    """
    return concat_keys(obs, ("observation", "desired_goal"), "PointMaze")


class PointMazeDomain(Domain):
    """PointMaze with D4RL maze2d's evaluation (module docstring)."""

    name = "pointmaze"
    env_ids = tuple(ENV_IDS.values())
    env_package = "gymnasium_robotics"
    dataset_prefixes = ("d4rl/pointmaze/",)
    local_prefix = "lamo/pointmaze/"
    # ODT-TD3's maze2d settings (docs/references/odt_td3.md "Per-domain settings": K 1, eval RTG 60, reward scale 1)
    evaluation = EvaluationDefaults(target_returns={ENV_IDS["umaze"]: (60,), ENV_IDS["medium"]: (60,),
                                                    ENV_IDS["large"]: (60,)},
                                    rtg_scale=1.0, max_ep_len=1000)

    def serves_env(self, env_id: str) -> bool:
        return env_id.startswith("PointMaze_")

    def make_env(self, env_id: str, max_episode_steps: int | None = None, **kwargs: Any):
        """The env with ``kwargs`` (a ``maze_map`` is copied: gymnasium-robotics keeps the list)."""
        if "maze_map" in kwargs:
            kwargs = dict(kwargs, maze_map=copy.deepcopy(kwargs["maze_map"]))
        return super().make_env(env_id, max_episode_steps=max_episode_steps, **kwargs)

    def evaluation_env_kwargs(self, env_id: str, data_env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Always D4RL's evaluation (`Maze.env_kwargs`), whatever the data were recorded with
        (Minari's D4RL/pointmaze data move the goal after each success)."""
        return maze(env_id).env_kwargs()

    def flatten_dict_observation(self, obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
        return pointmaze_observation(obs, batch_dims)

    def prepare_dataset(self, dataset):
        """Minari's ``D4RL/pointmaze/<maze>[-dense]-vN`` relabelled to the evaluation goal (module
        docstring): the state's goal (its last 2 numbers) is set to `Maze.goal_xy` and each reward to
        D4RL's relabelling of the step's own position p (``relabel_maze2d_rewards.py:33-36``):
        ``||p - goal|| <= 0.5`` (sparse) or ``exp(-||p - goal||)`` (dense). Other sources are unchanged."""
        import dataclasses

        source = dataset.source.lower()
        if not source.startswith("d4rl/pointmaze/") or dataset.env_id is None:
            return dataset
        goal = maze(dataset.env_id).goal_xy().astype(np.float32)
        dense = "-dense" in source
        trajectories = []
        for t in dataset.trajectories:
            observations = np.array(t.observations, dtype=np.float32)
            observations[:, 4:6] = goal
            distance = np.linalg.norm(observations[:, :2] - goal, axis=-1)
            rewards = np.exp(-distance) if dense else (distance <= 0.5)
            trajectories.append(dataclasses.replace(t, observations=observations, rewards=rewards.astype(np.float32)))
        log.info("%s: goal set to the evaluation goal %s and rewards relabelled as D4RL's maze2d (%s)",
                 dataset.source, goal.tolist(), "dense" if dense else "sparse, within 0.5")
        return dataclasses.replace(dataset, trajectories=trajectories)

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """`lamo_ray.domains.pointmaze.collect.collect_pointmaze` at its default size (D4RL's) unless ``dataset_id``
        (``lamo/pointmaze/<umaze|medium|large>-vN``) is in the Minari store.

        Raises:
            ValueError: ``dataset_id`` names no maze.
        """
        if in_store(dataset_id):
            return
        from lamo_ray.domains.pointmaze.collect import collect_pointmaze

        name = self.local_name(dataset_id, list(MAZE_NAMES))
        log.info("generating %s (D4RL's maze2d generator, seed %d); first use only", dataset_id, seed)
        collect_pointmaze(name, dataset_id, seed=seed)

    def missing_dataset_hint(self, source: str) -> str | None:
        parts = source.lower().split("/")
        if len(parts) == 3 and parts[:2] == ["d4rl", "pointmaze"]:
            name = parts[2].split("-v")[0].replace("-dense", "")
            if name in MAZE_NAMES:
                return (f"Offline, the local alternative is D4RL's maze2d generator run here: lamo/pointmaze/{name}-v1 "
                        f"(`python -m lamo_ray.collect pointmaze --maze {name}`), with its own reference scores")
        return None

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        from lamo_ray.domains.pointmaze.collect import add_collect_arguments

        add_collect_arguments(commands.add_parser(
            self.name, help="D4RL's maze2d generator on PointMaze (one noisy waypoint-controller stream) -> Minari dataset"))


POINTMAZE = register(PointMazeDomain())
