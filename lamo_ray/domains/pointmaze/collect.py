"""PointMaze data made here as D4RL made maze2d (Farama-Foundation/D4RL at 89141a6:
``scripts/generation/generate_maze2d_datasets.py``, ``d4rl/pointmaze/waypoint_controller.py``,
``scripts/generation/relabel_maze2d_rewards.py``), on Gymnasium-Robotics' PointMaze (a port of D4RL's
point mass: the same action and velocity clips, ``maze_size_scaling`` 1).

- **One stream** of ``steps`` steps (D4RL: 1M umaze, 2M medium, 4M large; ``--steps``). The env is
  reset once; after that the point never jumps. A navigation target is a random free cell plus
  uniform(-0.1, 0.1) per coordinate (``maze_model.py:211-216``).
- **The controller** is D4RL's ``WaypointController`` (`D4RLWaypointController`). On a new target cell it
  plans a shortest cell path (D4RL runs q-iteration over the grid; here a breadth-first search, which
  can break ties between equally short paths differently). Every waypoint but the target cell is
  shifted by ``-uniform(0, 1) x 0.2`` per coordinate in D4RL's (row, col) frame. It steers with
  ``10 (waypoint - position) - velocity``, clipped to [-1, 1]. It moves to the next waypoint once within
  0.1 of it and moving less than 0.1 per step. The target counts as reached under the same two
  conditions at the target cell's centre (``waypoint_controller.py:30-57``).
- **Noise.** N(0, 0.5^2) is added per dimension and the action clipped again (``--noisy``,
  ``generate_maze2d_datasets.py:66-69``).
- **Trajectory cuts.** A trajectory ends when the target is reached or after ``max_episode_steps`` + 1
  rows (300 / 600 / 800 for the mazes; ``:70-71``). Then a new target is drawn. The recorded state is
  *not* advanced on that row (``:80-85``), so the next trajectory starts from the last recorded state.
  D4RL's released files mark these cuts as ``timeouts`` with no terminal (D4RL issue #85), so here they
  are truncations, and the last incomplete piece of the stream is dropped, as the ODT-TD3 authors' loader
  drops it (``data/download_d4rl_basic.py:34-56``).
- **Reward** (``relabel_maze2d_rewards.py:25-36``): 1 when the recorded position is within 0.5 of the
  fixed evaluation goal (the goal cell's centre), else 0. It is computed on the state before the step,
  D4RL's off-by-one (D4RL issue #194).

Stored as Minari dict observations: ``observation`` (x, y, vx, vy), ``achieved_goal`` (x, y) and
``desired_goal``, which is the evaluation goal's centre at every step. The model reads 6 numbers
(`lamo_ray.domains.pointmaze.pointmaze_observation`) where D4RL has 4; the 2 goal numbers are constant
in the data.

Reference scores stored with the dataset, per episode of the evaluation env (as D4RL's):
``ref_min_score`` is uniform random actions, ``ref_max_score`` is the noise-free controller driving to
the evaluation goal and staying there. Each is the mean over ``ref_episodes`` episodes whose reset seeds
differ from the data's.
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
from lamo_ray.episodes import mean_return, uniform_random, writable_path, write_minari

log = logging.getLogger(__name__)

#: D4RL maze2d's stream lengths (``generate_maze2d_datasets.py --num_samples``; D4RL's maze2d-*-v1 files)
DEFAULT_STEPS = {"umaze": 1_000_000, "medium": 2_000_000, "large": 4_000_000}
DEFAULT_NOISE = 0.5          # ``act + np.random.randn(*act.shape) * 0.5``
REF_EPISODES = 50
P_GAIN, D_GAIN = 10.0, -1.0  # ``WaypointController(maze_str, solve_thresh=0.1, p_gain=10.0, d_gain=-1.0)``
SOLVE_THRESHOLD = VELOCITY_THRESHOLD = 0.1
WAYPOINT_JITTER = 0.2        # ``waypoint - np.random.uniform(size=(2,)) * 0.2``
TARGET_JITTER = 0.1          # ``set_target``: ``reset_location + uniform(-.1, .1)``
RELABEL_RADIUS = 0.5         # ``relabel_maze2d_rewards.py``: ``norm(obs[:, :2] - target_goal) <= 0.5``


class D4RLWaypointController:
    """D4RL's ``WaypointController`` (module docstring) on a Gymnasium-Robotics maze.

    It works in D4RL's frame, (row, col) with cell centres at integers. Gymnasium's (x, y) maps to it by
    ``row = y_center - y - 0.5``, ``col = x + x_center - 0.5``. Actions map back the same way.

    Args:
        env: a PointMaze env (``unwrapped.maze`` gives the map and its frame).
        rng: the waypoint jitter's generator (D4RL's global ``np.random``).
    """

    def __init__(self, env, rng: np.random.Generator):
        self.maze = env.unwrapped.maze
        self.rng = rng
        layout = self.maze.maze_map
        self.free = {(r, c) for r in range(len(layout)) for c in range(len(layout[0])) if layout[r][c] != 1}
        self.target = np.zeros(2)                  # D4RL: ``-1000 * ONES``, and its ONES is zeros
        self.waypoints: list[np.ndarray] = []
        self.index = 0
        self.previous = np.zeros(2)

    # frames ---------------------------------------------------------------
    def to_grid(self, xy: np.ndarray) -> np.ndarray:
        """Gymnasium (x, y) -> D4RL (row, col)."""
        return np.array([self.maze.y_map_center - xy[1] - 0.5, xy[0] + self.maze.x_map_center - 0.5])

    def to_xy(self, rowcol: np.ndarray) -> np.ndarray:
        """D4RL (row, col) -> Gymnasium (x, y) (``maze.cell_rowcol_to_xy`` for integer cells)."""
        return np.array([rowcol[1] + 0.5 - self.maze.x_map_center, self.maze.y_map_center - rowcol[0] - 0.5])

    @staticmethod
    def gridify(rowcol: np.ndarray) -> tuple[int, int]:
        return int(round(float(rowcol[0]))), int(round(float(rowcol[1])))

    # planning -------------------------------------------------------------
    def path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """A shortest 4-connected path of free cells from ``start`` to ``goal``, both included.

        Raises:
            ValueError: no path between the two cells."""
        previous = {start: start}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            if here == goal:
                break
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                nxt = (here[0] + dr, here[1] + dc)
                if nxt not in previous and nxt in self.free:
                    previous[nxt] = here
                    queue.append(nxt)
        if goal not in previous:
            raise ValueError(f"no path from cell {start} to {goal}")
        cells = [goal]
        while cells[-1] != start:
            cells.append(previous[cells[-1]])
        return cells[::-1]

    def _new_target(self, location: np.ndarray, target: tuple[int, int]) -> None:
        """``_new_target``: waypoints along the path (the start cell excluded), each but the target jittered."""
        cells = self.path(self.gridify(location), target)[1:] or [target]
        self.waypoints = [np.array(c, dtype=np.float64) - (0.0 if c == target else self.rng.uniform(size=2) * WAYPOINT_JITTER)
                          for c in cells]
        self.index = 0
        self.previous = np.array(self.gridify(location), dtype=np.float64)
        self.target = np.array(target, dtype=np.float64)

    def act(self, position_xy: np.ndarray, velocity_xy: np.ndarray, target_xy: np.ndarray) -> tuple[np.ndarray, bool]:
        """``get_action``: (action (2,) float in [-1, 1] in Gymnasium's frame, whether the target is reached)."""
        location = self.to_grid(position_xy)
        velocity = np.array([-velocity_xy[1], velocity_xy[0]])
        target = self.gridify(self.to_grid(target_xy))
        if np.linalg.norm(self.target - np.array(target)) > 1e-3:
            self._new_target(location, target)
        moved = np.linalg.norm(self.previous - location)
        unsolved = np.linalg.norm(location - self.target) >= SOLVE_THRESHOLD or moved >= VELOCITY_THRESHOLD
        waypoint = self.waypoints[self.index] if unsolved else self.target
        action = P_GAIN * (waypoint - location) + D_GAIN * velocity
        if unsolved and np.linalg.norm(location - waypoint) < SOLVE_THRESHOLD and moved < VELOCITY_THRESHOLD:
            self.index = min(self.index + 1, len(self.waypoints) - 1)
        self.previous = location
        action = np.clip(action, -1.0, 1.0)
        return np.array([action[1], -action[0]]), not unsolved

    def __call__(self, obs) -> np.ndarray:
        """Drive to the env's own goal (``desired_goal``) and stay: (2,) float32 action, noise-free."""
        observation = np.asarray(obs["observation"], dtype=np.float64)
        return self.act(observation[:2], observation[2:4], np.asarray(obs["desired_goal"]))[0].astype(np.float32)


def random_target(controller: D4RLWaypointController, rng: np.random.Generator) -> np.ndarray:
    """``MazeEnv.set_target()``: a uniformly drawn free cell + uniform(-0.1, 0.1) per coordinate, in (x, y)."""
    cells = sorted(controller.free)
    cell = np.array(cells[int(rng.integers(len(cells)))], dtype=np.float64)
    return controller.to_xy(cell + rng.uniform(-TARGET_JITTER, TARGET_JITTER, size=2))


def maze2d_stream(env, steps: int, max_episode_steps: int, goal_xy: np.ndarray, noise: float, seed: int,
                  rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """``generate_maze2d_datasets.py`` then ``relabel_maze2d_rewards.py --relabel_type sparse`` (module
    docstring): ``steps`` rows from one reset (``seed``), cut into trajectories. Returns Minari episode arrays
    (dict observations with T+1 rows, actions (T, 2) float32, rewards (T,), terminations all False,
    truncations True at the end), the incomplete last piece dropped."""
    controller = D4RLWaypointController(env, rng)
    obs, _ = env.reset(seed=seed)
    state = np.asarray(obs["observation"], dtype=np.float64)
    target = random_target(controller, rng)
    episodes, rows, actions, ts = [], [], [], 0
    for _ in range(steps):
        action, done = controller.act(state[:2], state[2:4], target)
        action = np.clip(action + rng.standard_normal(2) * noise, -1.0, 1.0) if noise > 0 else action
        if ts >= max_episode_steps:
            done = True
        rows.append(state)
        actions.append(action)
        obs, *_ = env.step(action.astype(np.float32))
        ts += 1
        if done:
            observations = np.array([*rows, rows[-1]], dtype=np.float64)   # the state is not advanced: s, then s
            position = observations[:, :2]
            reward = (np.linalg.norm(position[:-1] - goal_xy, axis=-1) <= RELABEL_RADIUS).astype(np.float64)
            length = len(rows)
            episodes.append({
                "observations": {"observation": observations, "achieved_goal": position,
                                 "desired_goal": np.broadcast_to(goal_xy, position.shape).copy()},
                "actions": np.array(actions, dtype=np.float32), "rewards": reward,
                "terminations": np.zeros(length, dtype=bool), "truncations": np.arange(length) == length - 1})
            rows, actions, ts = [], [], 0
            target = random_target(controller, rng)
        else:
            state = np.asarray(obs["observation"], dtype=np.float64)
    return episodes


@dataclass
class CollectionReport:
    """What `collect_pointmaze` wrote: folder, mean return and goal-reaching share of the trajectories,
    the reference scores, size, wall time."""

    path: Path
    mean_return: float
    success_share: float
    ref_min_score: float
    ref_max_score: float
    episodes: int
    transitions: int
    seconds: float


def collect_pointmaze(name: str, dataset_id: str | None = None, steps: int | None = None,
                      noise: float = DEFAULT_NOISE, seed: int = 0, ref_episodes: int = REF_EPISODES,
                      force: bool = False, progress: bool | None = None) -> CollectionReport:
    """Run D4RL's maze2d generator for ``steps`` steps on maze ``name`` (default `DEFAULT_STEPS`, D4RL's
    sizes). Relabel the rewards to the evaluation goal and store the trajectories as Minari ``dataset_id``
    (default ``lamo/pointmaze/<name>-v1``) with their reference scores (module docstring). Everything
    derives from ``seed``.

    Raises:
        FileExistsError: the id exists and ``force`` is false (checked before collecting).
        ValueError: unknown maze; ``steps`` <= ``max_episode_steps`` (no complete trajectory);
            ``ref_episodes`` < 1; ``noise`` < 0.
    """
    from minari.data_collector import EpisodeBuffer

    layout: Maze = maze(name)
    dataset_id = dataset_id or f"lamo/pointmaze/{layout.name}-v1"
    steps = DEFAULT_STEPS[layout.name] if steps is None else steps
    path = writable_path(dataset_id, force)
    if steps <= layout.max_episode_steps or ref_episodes < 1 or noise < 0:
        raise ValueError(f"{dataset_id}: need steps > {layout.max_episode_steps} (one trajectory at most "
                         f"{layout.max_episode_steps + 1} rows), ref_episodes >= 1, noise >= 0; got {steps}, "
                         f"{ref_episodes}, {noise}")
    began = time.perf_counter()
    seed_rng, stream_rng, random_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    reset_seeds = seed_rng.choice(2**31 - 1, size=1 + 2 * ref_episodes, replace=False)
    stream_seed, min_seeds, max_seeds = int(reset_seeds[0]), reset_seeds[1:1 + ref_episodes], reset_seeds[1 + ref_episodes:]
    env = POINTMAZE.make_env(layout.env_id, **layout.env_kwargs())
    goal_xy = layout.goal_xy()
    stream_env = POINTMAZE.make_env(layout.env_id, max_episode_steps=steps + 1, **layout.env_kwargs())
    with tqdm(total=1, desc=f"collecting {dataset_id} ({steps} steps)", disable=None if progress is None else not progress):
        episodes = maze2d_stream(stream_env, steps, layout.max_episode_steps, goal_xy, noise, stream_seed, stream_rng)
    buffers = [EpisodeBuffer(id=i, **e) for i, e in enumerate(episodes)]
    returns = [float(e["rewards"].sum()) for e in episodes]
    successes = [bool(e["rewards"].max() > 0) for e in episodes]
    ref_min = mean_return(env, uniform_random(env, random_rng), min_seeds)
    ref_max = mean_return(env, D4RLWaypointController(env, np.random.default_rng(0)), max_seeds)
    transitions = int(sum(len(e["rewards"]) for e in episodes))
    log.info("%s: %d trajectories, %d transitions, mean return %.2f, %.0f%% touch the goal; ref_min_score (random) "
             "%.2f, ref_max_score (controller to the goal) %.2f", dataset_id, len(episodes), transitions,
             np.mean(returns), 100 * np.mean(successes), ref_min, ref_max)
    dataset = write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name="D4RL maze2d: waypoint controller to random targets in one stream, N(0, 0.5^2) action "
                       "noise, sparse rewards relabelled to the evaluation goal",
        code_permalink="lamo_ray/domains/pointmaze/collect.py (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
        description=(f"{layout.env_id}: D4RL's maze2d generator, {steps} steps in one stream cut at each "
                     f"reached target or every {layout.max_episode_steps + 1} rows; rewards 1 within "
                     f"{RELABEL_RADIUS} of the goal cell {layout.goal_cell}'s centre; noise {noise}; seed {seed}."))
    dataset.storage.update_metadata({"recipe": "d4rl_maze2d_stream", "steps": steps, "noise": noise,
                                     "collection_seed": seed, "goal_cell": list(layout.goal_cell),
                                     "success_share": float(np.mean(successes))})
    seconds = time.perf_counter() - began
    log.info("%s: wrote %d trajectories to %s in %.1f s", dataset_id, len(episodes), path, seconds)
    return CollectionReport(path, float(np.mean(returns)), float(np.mean(successes)), ref_min, ref_max,
                            len(episodes), transitions, seconds)


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maze", choices=MAZE_NAMES, default="umaze")
    parser.add_argument("--dataset-id", default=None, help="default lamo/pointmaze/<maze>-v1")
    parser.add_argument("--steps", type=int, default=None,
                        help="length of the stream (default D4RL's: umaze 1M, medium 2M, large 4M)")
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE, help="action-noise std (D4RL: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-episodes", type=int, default=REF_EPISODES,
                        help="episodes for each of ref_min_score and ref_max_score")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset id")
    parser.set_defaults(run=_collect_command)


def _collect_command(args: argparse.Namespace) -> int:
    report = collect_pointmaze(args.maze, args.dataset_id, args.steps, args.noise, args.seed, args.ref_episodes,
                               args.force)
    print(f"{report.path}: {report.episodes} trajectories, {report.transitions} transitions, {report.seconds:.1f} s; "
          f"mean return {report.mean_return:.2f}, {100 * report.success_share:.0f}% touch the goal; "
          f"ref_min_score (uniform random) {report.ref_min_score:.2f}, "
          f"ref_max_score (controller to the goal) {report.ref_max_score:.2f}")
    return 0
