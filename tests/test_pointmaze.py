"""PointMaze (issue 18): D4RL maze2d's evaluation on Gymnasium-Robotics' PointMaze, the waypoint
controller, the collector's data and reference scores, and success in the rollout records."""

import numpy as np
import pytest
import torch

from lamo_ray import domains
from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import validate_trial
from lamo_ray.domains.pointmaze import POINTMAZE, maze, pointmaze_observation
from lamo_ray.domains.pointmaze.collect import WaypointController, collect_pointmaze
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
    controller = WaypointController(env)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        assert np.all(np.abs(obs["desired_goal"] - centre) <= 0.25 + 1e-9)   # jittered within the cell
        assert controller.cell(obs["observation"][:2]) != tuple(m.goal_cell)  # starts elsewhere
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


def test_collector_follows_the_recipe_and_stores_its_reference_scores(tmp_path, monkeypatch):
    import minari

    from lamo_ray.data.loading import load_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    report = collect_pointmaze("umaze", "test/pointmaze/umaze-v0", episodes=12, ref_episodes=6, seed=3)
    again = collect_pointmaze("umaze", "test/pointmaze/again-v0", episodes=12, ref_episodes=6, seed=3)
    assert (report.mean_return, report.ref_min_score, report.ref_max_score) == \
        (again.mean_return, again.ref_min_score, again.ref_max_score)  # everything derives from the seed
    assert report.transitions == 12 * 300
    # low-return data: the wanderer is far below the controller driving to the goal; random is near 0
    assert report.ref_min_score < report.mean_return < 0.5 * report.ref_max_score
    with pytest.raises(FileExistsError, match="--force"):
        collect_pointmaze("umaze", "test/pointmaze/umaze-v0", episodes=1, ref_episodes=1)

    raw = minari.load_dataset("test/pointmaze/umaze-v0")
    for episode in raw.iterate_episodes():
        position = episode.observations["achieved_goal"][1:]
        goal = episode.observations["desired_goal"][1:]
        near = np.linalg.norm(position - goal, axis=-1) <= 0.45
        assert np.array_equal(episode.rewards > 0, near)        # sparse reward of the evaluation goal
        assert np.allclose(goal, goal[0])                       # which never moves
        assert np.all(np.abs(episode.actions) <= 1.0)
    ds = load_dataset("test/pointmaze/umaze-v0")
    assert ds.obs_shape == (6,) and ds.act_dim == 2 and ds.env_id == "PointMaze_UMaze-v3"
    assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)


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
