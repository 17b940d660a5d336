"""Adroit and AntMaze domains (issue 18): D4RL's evaluation settings and reference scores on the
Gymnasium-Robotics envs, and their Minari ids listed (not generated) when missing."""

import numpy as np
import pytest

from lamo_ray import domains
from lamo_ray.domains.adroit import ADROIT, REF_SCORES
from lamo_ray.domains.antmaze import ANTMAZE, MAZES, antmaze_observation
from lamo_ray.envs import flatten_observation


@pytest.mark.parametrize("task, steps, obs_dim", [("pen", 100, 45), ("hammer", 200, 46), ("door", 200, 39),
                                                  ("relocate", 200, 39)])
def test_adroit_uses_d4rls_episode_length_and_reference_scores(task, steps, obs_dim):
    env_id = f"AdroitHand{task.capitalize()}-v1"
    assert domains.for_env(env_id) is ADROIT and domains.for_dataset(f"D4RL/{task}/human-v2") is ADROIT
    env = ADROIT.make_env(env_id)
    assert env.spec.max_episode_steps == steps
    obs, _ = env.reset(seed=0)
    assert flatten_observation(env_id, obs).shape == (obs_dim,)
    assert domains.ref_scores(f"D4RL/{task}/expert-v2") == REF_SCORES[task] == domains.ref_scores(env_id)


def test_adroit_references_never_match_other_names():
    assert domains.ref_scores("D4RL/pointmaze/open-v2") is None  # "pen" is in "open"
    assert domains.ref_scores("AdroitHandPen-v1") == (96.262799, 3076.8331017826877)


@pytest.mark.parametrize("name", ["umaze", "medium"])
def test_antmaze_evaluates_as_d4rl_fixed_start_and_goal_episode_ends_there(name):
    env_id, _, reset_cell, goal_cell = MAZES[name]
    assert domains.for_env(env_id) is ANTMAZE and domains.for_dataset("D4RL/antmaze/umaze-v1") is ANTMAZE
    assert domains.ref_scores("D4RL/antmaze/medium-play-v1") == (0.0, 1.0)
    kwargs = ANTMAZE.evaluation_env_kwargs(env_id, {"continuing_task": True, "reset_target": True})
    env = ANTMAZE.make_env(env_id, **kwargs)
    maze = env.unwrapped.maze
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        start = maze.cell_xy_to_rowcol(obs["achieved_goal"])
        assert tuple(int(v) for v in start) == reset_cell
        assert np.all(np.abs(obs["desired_goal"] - maze.cell_rowcol_to_xy(np.array(goal_cell))) <= 0.25 * 4 + 1e-9)
        state = flatten_observation(env_id, obs)
        assert state.shape == (29,) and np.array_equal(state[:2], obs["achieved_goal"].astype(np.float32))
    # the episode ends with reward 1 at the goal: put the ant there
    env.reset(seed=0)
    env.unwrapped.data.qpos[:2] = env.unwrapped.goal
    _, reward, terminated, _, info = env.step(np.zeros(8))
    assert terminated and reward == 1.0 and info["success"]
    with pytest.raises(ValueError, match="achieved_goal"):
        antmaze_observation({"observation": np.zeros(27)})


def test_missing_d4rl_ids_are_listed_for_download_not_generated(tmp_path, monkeypatch):
    from lamo_ray import inputs
    from lamo_ray.config import validate_trial

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    configs = [validate_trial({"data": {"source": source}, "model": {"pretrained": False, "n_layer": 1,
                                                                    "n_embd": 8, "n_head": 1}})
               for source in ("D4RL/pen/human-v2", "D4RL/antmaze/umaze-v1")]
    planned = inputs.plan_inputs(configs)
    assert [(i.name, i.what) for i in planned] == [("D4RL/antmaze/umaze-v1", "Minari dataset"),
                                                   ("D4RL/pen/human-v2", "Minari dataset")]
    assert not ADROIT.generates("D4RL/pen/human-v2") and not ANTMAZE.generates("D4RL/antmaze/umaze-v1")
