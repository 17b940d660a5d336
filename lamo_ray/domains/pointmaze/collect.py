"""PointMaze data made here with D4RL's maze2d recipe (D4RL ``scripts/generation/generate_maze2d_datasets.py``;
REFERENCE_ODT_TD3.md "D4RL / Minari maze data recipe").

Behaviour: `WaypointController` steers along a shortest cell path (breadth-first over the maze's free
cells) towards a goal cell of its own, ``action = 10 (waypoint - position) - velocity``, plus
N(0, noise^2) per dimension, clipped to [-1, 1]; when it reaches its goal cell it picks a new random
one (the env is not reset, as D4RL). The env is the evaluation env (`Maze.env_kwargs`), so every
reward is D4RL's relabelled sparse one: 1 per step within 0.45 of the evaluation goal, which the
wandering controller passes only by chance (low-return data, where the ODT-TD3 paper finds RL
gradients help most). Episodes are the env's own length from random start cells.

Reference scores stored with the dataset (as D4RL's, per episode): ``ref_min_score`` = uniform random
actions, ``ref_max_score`` = the noise-free controller driving to the evaluation goal and staying,
each the mean over ``ref_episodes`` episodes whose reset seeds differ from the data's.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lamo_ray.domains.pointmaze import MAZE_NAMES, POINTMAZE, Maze, maze
from lamo_ray.episodes import mean_return, noisy, run_episode, uniform_random, writable_path, write_minari

log = logging.getLogger(__name__)

DEFAULT_EPISODES = 200
DEFAULT_NOISE = 0.5  # D4RL maze2d's N(0, 0.5^2) action noise
REF_EPISODES = 50
GAIN_POSITION, GAIN_VELOCITY = 10.0, 1.0  # D4RL's WaypointController (p_gain 10, d_gain -1)


class WaypointController:
    """D4RL maze2d's waypoint controller on a gymnasium-robotics maze.

    Args:
        env: a PointMaze env (its ``unwrapped.maze`` gives the cells and their coordinates).
        rng: picks the controller's goal cells (`wander`); None: always the env's goal.
    """

    def __init__(self, env, rng: np.random.Generator | None = None):
        self.maze = env.unwrapped.maze
        self.env = env.unwrapped
        self.rng = rng
        layout = self.maze.maze_map
        self.free = [(r, c) for r in range(len(layout)) for c in range(len(layout[0])) if layout[r][c] != 1]
        self.goal_cell: tuple[int, int] | None = None
        self._paths: dict[tuple[tuple[int, int], tuple[int, int]], list[tuple[int, int]]] = {}

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        row, col = self.maze.cell_xy_to_rowcol(np.asarray(xy, dtype=np.float64))
        return int(row), int(col)

    def path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Shortest 4-connected path of free cells from ``start`` to ``goal`` (both included)."""
        key = (start, goal)
        if key not in self._paths:
            previous = {start: start}
            queue = deque([start])
            while queue:
                here = queue.popleft()
                if here == goal:
                    break
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    nxt = (here[0] + dr, here[1] + dc)
                    if nxt in previous or nxt not in self.free_set:
                        continue
                    previous[nxt] = here
                    queue.append(nxt)
            if goal not in previous:
                raise ValueError(f"no path from cell {start} to {goal}")
            cells = [goal]
            while cells[-1] != start:
                cells.append(previous[cells[-1]])
            self._paths[key] = cells[::-1]
        return self._paths[key]

    @property
    def free_set(self) -> set[tuple[int, int]]:
        if not hasattr(self, "_free_set"):
            self._free_set = set(self.free)
        return self._free_set

    def __call__(self, obs) -> np.ndarray:
        """``obs`` (the env's dict observation) -> action (2,) float32 in [-1, 1], noise-free."""
        position, velocity = np.asarray(obs["observation"][:2]), np.asarray(obs["observation"][2:4])
        here = self.cell(position)
        if self.rng is None:  # drive to the env's goal and stay there
            goal_xy = np.asarray(obs["desired_goal"], dtype=np.float64)
            goal = self.cell(goal_xy)
        else:
            if self.goal_cell is None or here == self.goal_cell:
                choices = [c for c in self.free if c != here]
                self.goal_cell = choices[int(self.rng.integers(len(choices)))]
            goal = self.goal_cell
            goal_xy = self.maze.cell_rowcol_to_xy(np.array(goal))
        cells = self.path(here, goal)
        waypoint = goal_xy if len(cells) == 1 else self.maze.cell_rowcol_to_xy(np.array(cells[1]))
        action = GAIN_POSITION * (np.asarray(waypoint) - position) - GAIN_VELOCITY * velocity
        return np.clip(action, -1.0, 1.0).astype(np.float32)


@dataclass
class CollectionReport:
    """What `collect_pointmaze` wrote: folder, mean return and success share of the data, the
    reference scores, size, wall time."""

    path: Path
    mean_return: float
    success_share: float
    ref_min_score: float
    ref_max_score: float
    episodes: int
    transitions: int
    seconds: float


def collect_pointmaze(name: str, dataset_id: str | None = None, episodes: int = DEFAULT_EPISODES,
                      noise: float = DEFAULT_NOISE, seed: int = 0, ref_episodes: int = REF_EPISODES,
                      force: bool = False, progress: bool | None = None) -> CollectionReport:
    """Collect ``episodes`` episodes on maze ``name`` with D4RL's maze2d recipe (module docstring) and
    store them as Minari ``dataset_id`` (default ``lamo/pointmaze/<name>-v0``) with their reference
    scores. Everything derives from ``seed``.

    Raises:
        FileExistsError: the id exists and ``force`` is false (checked before collecting).
        ValueError: unknown maze, ``episodes`` or ``ref_episodes`` < 1, ``noise`` < 0.
    """
    from minari.data_collector import EpisodeBuffer

    layout: Maze = maze(name)
    dataset_id = dataset_id or f"lamo/pointmaze/{layout.name}-v0"
    path = writable_path(dataset_id, force)
    if episodes < 1 or ref_episodes < 1 or noise < 0:
        raise ValueError(f"{dataset_id}: need episodes >= 1, ref_episodes >= 1, noise >= 0; got {episodes}, "
                         f"{ref_episodes}, {noise}")
    began = time.perf_counter()
    seed_rng, goal_rng, noise_rng, random_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    reset_seeds = seed_rng.choice(2**31 - 1, size=episodes + 2 * ref_episodes, replace=False)
    data_seeds, min_seeds, max_seeds = np.split(reset_seeds, [episodes, episodes + ref_episodes])
    env = POINTMAZE.make_env(layout.env_id, **layout.env_kwargs())
    wanderer = noisy(WaypointController(env, goal_rng), noise, noise_rng)
    buffers, returns, successes = [], [], []
    for i in tqdm(range(episodes), desc=f"collecting {dataset_id}", unit="ep",
                  disable=None if progress is None else not progress):
        episode = run_episode(env, wanderer, int(data_seeds[i]))
        buffers.append(EpisodeBuffer(id=i, seed=int(data_seeds[i]), **episode))
        returns.append(float(episode["rewards"].sum()))
        successes.append(bool(episode["rewards"].max() > 0))
    ref_min = mean_return(env, uniform_random(env, random_rng), min_seeds)
    ref_max = mean_return(env, WaypointController(env), max_seeds)
    log.info("%s: mean return %.2f, %.0f%% of episodes reach the goal; ref_min_score (random) %.2f, "
             "ref_max_score (controller to the goal) %.2f", dataset_id, np.mean(returns), 100 * np.mean(successes),
             ref_min, ref_max)
    dataset = write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name="D4RL maze2d waypoint controller to random goal cells with Gaussian action noise",
        code_permalink="lamo_ray/domains/pointmaze/collect.py (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
        description=(f"{layout.env_id}, {episodes} episodes; goal fixed in cell {layout.goal_cell} (D4RL maze2d "
                     f"evaluation), behaviour wanders between random cells with N(0, {noise}^2) noise; seed {seed}."))
    dataset.storage.update_metadata({"noise": noise, "collection_seed": seed, "goal_cell": list(layout.goal_cell),
                                     "success_share": float(np.mean(successes))})
    transitions = int(sum(len(b.rewards) for b in buffers))
    seconds = time.perf_counter() - began
    log.info("%s: wrote %d episodes, %d transitions to %s in %.1f s", dataset_id, episodes, transitions, path, seconds)
    return CollectionReport(path, float(np.mean(returns)), float(np.mean(successes)), ref_min, ref_max, episodes,
                            transitions, seconds)


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maze", choices=MAZE_NAMES, default="umaze")
    parser.add_argument("--dataset-id", default=None, help="default lamo/pointmaze/<maze>-v0")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE, help="action-noise std (D4RL: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-episodes", type=int, default=REF_EPISODES,
                        help="episodes for each of ref_min_score and ref_max_score")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset id")
    parser.set_defaults(run=_collect_command)


def _collect_command(args: argparse.Namespace) -> int:
    report = collect_pointmaze(args.maze, args.dataset_id, args.episodes, args.noise, args.seed, args.ref_episodes,
                               args.force)
    print(f"{report.path}: {report.episodes} episodes, {report.transitions} transitions, {report.seconds:.1f} s; "
          f"mean return {report.mean_return:.2f}, {100 * report.success_share:.0f}% reach the goal; "
          f"ref_min_score (uniform random) {report.ref_min_score:.2f}, "
          f"ref_max_score (controller to the goal) {report.ref_max_score:.2f}")
    return 0
