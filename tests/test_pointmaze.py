"""PointMaze (issue 18): D4RL maze2d's evaluation on Gymnasium-Robotics' PointMaze, the waypoint
controller, the collector's data and reference scores, and success in the rollout records."""

import numpy as np
import pytest
import torch

from lamo_ray import domains
from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import validate_trial
from lamo_ray.domains.pointmaze import POINTMAZE, maze, pointmaze_observation
from lamo_ray.domains.pointmaze.collect import D4RLWaypointController, collect_pointmaze
from lamo_ray.envs import flatten_observation
from lamo_ray.evaluate import Rollout, summarize


def eval_env(name):
    m = maze(name)
    return m, POINTMAZE.make_env(m.env_id, **POINTMAZE.evaluation_env_kwargs(m.env_id, {"reset_target": True}))


@pytest.mark.parametrize("name", ["umaze", "medium", "large"])
def test_evaluation_goal_is_the_fixed_cell_and_the_controller_reaches_it(name):
    m, env = eval_env(name)
    assert env.spec.max_episode_steps == m.max_episode_steps
    centre = env.unwrapped.maze.cell_rowcol_to_xy(np.array(m.goal_cell))
    controller = D4RLWaypointController(env, np.random.default_rng(0))
    assert np.allclose(m.goal_xy(), centre)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        assert np.all(np.abs(obs["desired_goal"] - centre) <= 0.25 + 1e-9)   # jittered within the cell
        assert controller.gridify(controller.to_grid(obs["observation"][:2])) != tuple(m.goal_cell)  # starts elsewhere
        state = flatten_observation(m.env_id, obs)
        assert state.shape == (6,) and np.array_equal(state[4:], obs["desired_goal"].astype(np.float32))
        ret, steps, success, done = 0.0, 0, False, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(controller(obs))
            ret, steps, success = ret + reward, steps + 1, success or info["success"]
            done = terminated or truncated
            assert np.array_equal(obs["desired_goal"], env.unwrapped.goal)  # the goal never moves
        assert steps == m.max_episode_steps and success and ret > 0.2 * steps  # full length, sits on the goal


def test_domain_registry_and_evaluation_ignore_the_datas_moving_goal():
    assert domains.for_env("PointMaze_Medium-v3") is POINTMAZE
    assert domains.for_dataset("D4RL/pointmaze/umaze-v2") is POINTMAZE
    assert domains.for_dataset("lamo/pointmaze/large-v0") is POINTMAZE
    kwargs = POINTMAZE.evaluation_env_kwargs("PointMaze_UMaze-v3", {"continuing_task": True, "reset_target": True})
    assert kwargs["reset_target"] is False and kwargs["continuing_task"] is True
    assert kwargs["maze_map"][1][1] == "g" and sum(row.count("g") for row in kwargs["maze_map"]) == 1
    with pytest.raises(ValueError, match="umaze, medium, large"):
        maze("PointMaze_Open-v3")
    with pytest.raises(ValueError, match="desired_goal"):
        pointmaze_observation({"observation": np.zeros(4)})
    assert "collect pointmaze --maze medium" in POINTMAZE.missing_dataset_hint("D4RL/pointmaze/medium-v2")


def test_collector_is_d4rls_maze2d_stream_relabelled_to_the_evaluation_goal(tmp_path, monkeypatch):
    """Issue 28, point 7 (Farama-Foundation/D4RL at 89141a6). ``generate_maze2d_datasets.py:62-85``: one
    stream, cut when the controller reaches its target or after ``max_episode_steps`` + 1 rows, and the
    recorded state is not advanced on the cut row. ``relabel_maze2d_rewards.py:36``: reward 1 when the
    row's own position is within 0.5 of the evaluation goal. D4RL issue #85: the cuts are timeouts, not
    terminals. Before: 300-step episodes from env resets, rewarded by the env within 0.45 of the next
    position."""
    import minari

    from lamo_ray.data.loading import load_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    report = collect_pointmaze("umaze", "test/pointmaze/umaze-v1", steps=6000, ref_episodes=4, seed=3)
    again = collect_pointmaze("umaze", "test/pointmaze/again-v1", steps=6000, ref_episodes=4, seed=3)
    assert (report.mean_return, report.ref_min_score, report.ref_max_score, report.transitions) == \
        (again.mean_return, again.ref_min_score, again.ref_max_score, again.transitions)   # all from the seed
    assert 6000 - 301 <= report.transitions <= 6000        # the stream, less its unfinished last piece
    assert report.ref_min_score < report.ref_max_score
    with pytest.raises(FileExistsError, match="--force"):
        collect_pointmaze("umaze", "test/pointmaze/umaze-v1", steps=400, ref_episodes=1)
    with pytest.raises(ValueError, match="need steps > 300"):
        collect_pointmaze("umaze", "test/pointmaze/short-v1", steps=300, ref_episodes=1)

    goal = maze("umaze").goal_xy()
    raw = list(minari.load_dataset("test/pointmaze/umaze-v1").iterate_episodes())
    assert len(raw) == report.episodes > 20
    for episode, following in zip(raw, raw[1:]):
        position = episode.observations["observation"][:, :2]
        assert np.array_equal(episode.rewards > 0, np.linalg.norm(position[:-1] - goal, axis=-1) <= 0.5)
        assert np.allclose(episode.observations["desired_goal"], goal)
        assert len(episode.rewards) <= 301 and not episode.terminations.any() and episode.truncations[-1]
        # the cut row's state is recorded again: last observation = the next trajectory's first
        assert np.array_equal(episode.observations["observation"][-1], episode.observations["observation"][-2])
        assert np.array_equal(following.observations["observation"][0], episode.observations["observation"][-1])
        steps = np.linalg.norm(np.diff(position[:-1], axis=0), axis=-1)
        assert np.all(steps < 0.2)                          # one stream: the point never jumps within it
    ends = [e.observations["observation"][-1, :2] for e in raw if len(e.rewards) < 301]
    # a trajectory cut before the time limit ended at its target: at a cell centre (D4RL's controller)
    centres = np.abs(((np.array(ends) + 0.5) % 1.0) - 0.5)
    assert len(ends) > 10 and np.all(centres < 0.2)
    ds = load_dataset("test/pointmaze/umaze-v1")
    assert ds.obs_shape == (6,) and ds.act_dim == 2 and ds.env_id == "PointMaze_UMaze-v3"
    assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)
    assert not any(t.terminated for t in ds.trajectories)


def test_the_controller_is_d4rls_waypoint_controller():
    """``d4rl/pointmaze/waypoint_controller.py:30-90`` in Gymnasium's frame: waypoints are the path's cells
    (the start cell excluded), each but the target shifted by -uniform(0, 1) x 0.2 in (row, col); the action is
    10 (waypoint - position) - velocity, clipped; 'done' only at the target cell's centre, nearly still."""
    m, env = eval_env("umaze")
    env.reset(seed=0)
    c = D4RLWaypointController(env, np.random.default_rng(1))
    start = c.to_xy(np.array([1.0, 1.0]))          # cell (1, 1); target cell (3, 1): around the U
    target = c.to_xy(np.array([3.0, 1.0]))
    action, done = c.act(start, np.zeros(2), target)
    assert not done and [c.gridify(w) for w in c.waypoints] == [(1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    jitter = np.array([c.gridify(w) for w in c.waypoints[:-1]]) - np.array(c.waypoints[:-1])
    assert np.all((jitter >= 0) & (jitter <= 0.2)) and np.array_equal(c.waypoints[-1], [3.0, 1.0])
    expected = np.clip(10 * (c.waypoints[0] - np.array([1.0, 1.0])), -1, 1)      # in (row, col)
    assert np.allclose(action, [expected[1], -expected[0]])                        # as (x, y)
    assert np.allclose(c.to_grid(c.to_xy(np.array([2.3, 0.7]))), [2.3, 0.7])
    near = target + np.array([0.05, 0.0])
    c.act(near, np.zeros(2), target)                 # a step there: moved > 0.1 since the last call
    assert c.act(near, np.zeros(2), target)[1]       # then still, within 0.1 of the centre: reached


def test_minaris_d4rl_pointmaze_data_are_relabelled_to_the_evaluation_goal():
    """D4RL's relabelling (``relabel_maze2d_rewards.py:33-36``) applied to Minari's ``D4RL/pointmaze`` data,
    whose goal moved after each success: the goal in the state becomes the evaluation goal's centre and the
    reward its sparse (or dense) reward of each row's position. Local ``lamo/`` data are left as made."""
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset

    goal = maze("umaze").goal_xy()
    obs = np.zeros((3, 6), np.float32)
    obs[:, :2] = [goal + [0.3, 0.0], goal + [2.0, 0.0], goal + [0.49, 0.0]]
    obs[:, 4:6] = [5.0, 5.0]                                                   # Minari's moving goal
    trajectory = Trajectory(obs, np.zeros((3, 2), np.float32), np.array([0, 1, 0], np.float32), False)

    def loaded(source):
        return TrajectoryDataset([trajectory], (6,), 2, False, 0.0, 1.0, "PointMaze_UMaze-v3", source)

    sparse = POINTMAZE.prepare_dataset(loaded("D4RL/pointmaze/umaze-v2")).trajectories[0]
    assert sparse.rewards.tolist() == [1.0, 0.0, 1.0] and np.allclose(sparse.observations[:, 4:6], goal)
    dense = POINTMAZE.prepare_dataset(loaded("D4RL/pointmaze/umaze-dense-v2")).trajectories[0]
    assert np.allclose(dense.rewards, np.exp(-np.array([0.3, 2.0, 0.49])), atol=1e-6)
    own = POINTMAZE.prepare_dataset(loaded("lamo/pointmaze/umaze-v1")).trajectories[0]
    assert own.rewards.tolist() == [0.0, 1.0, 0.0] and own.observations[0, 4] == 5.0


class ToTheGoal(torch.nn.Module):
    """Straight at the goal from the (un-normalised) state: x, y, vx, vy, goal x, goal y."""

    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        s = states[:, -1]
        return torch.clamp(10 * (s[:, 4:6] - s[:, :2]) - s[:, 2:4], -1, 1)


class Still(ToTheGoal):
    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        return torch.zeros(states.shape[0], 2)


def test_rollout_records_success_and_the_summary_its_rate():
    cfg = validate_trial({"data": {"source": "unused", "context_length": 2, "rtg_scale": 1, "max_ep_len": 1000},
                          "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1},
                          "eval": {"max_episode_steps": 40}})
    spec = PolicySpec(trial=cfg, state_shape=(6,), act_dim=2, discrete_actions=False,
                      state_mean=np.zeros(6, np.float32), state_std=np.ones(6, np.float32))
    corridor = {"maze_map": [[1, 1, 1, 1], [1, "g", 0, 1], [1, 1, 1, 1]], "continuing_task": True,
                "reset_target": False}  # starts in the cell next to the goal: straight at it works
    reach = Rollout(spec, "PointMaze_UMaze-v3", num_envs=2, model=ToTheGoal(), max_episode_steps=40,
                    env_kwargs=corridor).run([(60.0, 0), (60.0, 1)])
    stay = Rollout(spec, "PointMaze_UMaze-v3", num_envs=1, model=Still(), max_episode_steps=40,
                   env_kwargs=corridor).run([(30.0, 0)])
    assert [r["success"] for r in reach] == [True, True] and stay[0]["success"] is False
    summary = summarize(reach + stay, (0.0, 40.0))
    assert summary["eval/target_60/success_rate"] == 1.0 and summary["eval/target_30/success_rate"] == 0.0
    assert summary["success_rate"] == 1.0  # the best target's
