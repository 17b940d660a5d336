"""lamo_ray/envs.py: env construction, reference scores and observation flattening, through the domains."""

import numpy as np
import pytest

from lamo_ray.envs import evaluation_env_kwargs, flatten_observation, make_env, reference_scores_for


def test_reference_scores_match_reference_md():
    """docs/references/lamo.md "Evaluation", "Atari": D4RL's random / expert returns, kitchen 0 / 4,
    Atari random / human."""
    assert reference_scores_for("hopper-medium-v2.hdf5") == (-20.272305, 3234.3)
    assert reference_scores_for("walker2d-medium-replay-v2.hdf5") == (1.629008, 4592.3)
    assert reference_scores_for("HalfCheetah-v5") == (-280.178953, 12135.0)
    assert reference_scores_for("FrankaKitchen-v1") == reference_scores_for("D4RL/kitchen/partial-v2") == (0.0, 4.0)
    assert reference_scores_for("ALE/Breakout-v5") == (1.7, 31.8)
    assert reference_scores_for("Reacher-v5") is None          # its dataset's own references
    assert reference_scores_for("unknown.hdf5") is None


def test_make_env_seeds_and_time_limit():
    env_a = make_env("Reacher-v5", seed=3, max_episode_steps=7)
    env_b = make_env("Reacher-v5", seed=3)
    obs_a, _ = env_a.reset()
    obs_b, _ = env_b.reset()
    assert obs_a.shape == (10,)
    np.testing.assert_array_equal(obs_a, obs_b)  # same seed, same start
    steps, truncated = 0, False
    while not truncated:
        _, _, _, truncated, _ = env_a.step(np.zeros(2, dtype=np.float32))
        steps += 1
    assert steps == 7


def test_make_env_unknown_id_names_it():
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="did you mean Reacher-v"):
        make_env("Reacher-v9")


def test_flatten_vector_is_float32_and_image_stays_uint8():
    vec = flatten_observation("Reacher-v5", np.arange(3, dtype=np.float64))
    assert vec.dtype == np.float32 and vec.tolist() == [0.0, 1.0, 2.0]
    image = np.zeros((4, 84, 84), dtype=np.uint8)
    assert flatten_observation("BreakoutNoFrameskip-v4", image) is image


def test_flatten_dict_default_rule_is_sorted_keys_recursive():
    obs = {"b": np.array([3.0, 4.0]), "a": np.array([[1.0], [2.0]]), "c": {"z": 6.0, "y": np.array([5.0])}}
    out = flatten_observation("SomeDictEnv-v0", obs)
    assert out.dtype == np.float32
    assert out.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # a, b, c.y, c.z


def test_flatten_dict_keeps_batch_axes():
    episode = {"b": np.ones((5, 2)), "a": np.zeros((5, 3, 2))}
    out = flatten_observation(None, episode, batch_dims=1)
    assert out.shape == (5, 8)
    assert (out[:, :6] == 0).all() and (out[:, 6:] == 1).all()


def test_kitchen_observations_take_the_kitchen_rule():
    obs = {"observation": np.arange(59.0), "desired_goal": {"slide cabinet": np.array([0.37])}}
    state = flatten_observation("FrankaKitchen-v1", obs)
    assert state.shape == (60,)
    assert state[:9].tolist() == list(range(9)) and state[9:30].tolist() == list(range(18, 39))
    assert state[30 + 19] == pytest.approx(0.37) and np.count_nonzero(state[30:]) == 1
    with pytest.raises(ValueError, match="59-dim"):
        flatten_observation("FrankaKitchen-v1", {"observation": np.zeros(60)})


def test_evaluation_kwargs_follow_the_domain():
    from lamo_ray.domains.kitchen import TASKS

    minari_d4rl = {"tasks_to_complete": list(TASKS["mixed"]), "remove_task_when_completed": False,
                   "terminate_on_tasks_completed": False, "max_episode_steps": 450}
    assert evaluation_env_kwargs("FrankaKitchen-v1", minari_d4rl) == {
        "tasks_to_complete": list(TASKS["mixed"]), "remove_task_when_completed": True,
        "terminate_on_tasks_completed": True}
    assert evaluation_env_kwargs("Reacher-v5", {"a": 1}) == {"a": 1}
