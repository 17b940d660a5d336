"""lamo_ray/domains/kitchen: D4RL 60-dim observations, the scripted demonstrator, the kitchen Minari
datasets (and how envs.py, collect.py and data/loading.py reach them through the registry)."""

import json

import numpy as np
import pytest

from lamo_ray import collect
from lamo_ray.data.loading import load_dataset
from lamo_ray.data.trajectories import DatasetError
from lamo_ray.domains.kitchen import LOCAL_DATASET_IDS as KITCHEN_DATASET_IDS
from lamo_ray.domains.kitchen import OBS_ELEMENT_INDICES as KITCHEN_OBS_ELEMENT_INDICES
from lamo_ray.domains.kitchen import TASKS as KITCHEN_TASKS
from lamo_ray.domains.kitchen import env_kwargs
from lamo_ray.domains.kitchen.collect import collect_kitchen, kitchen_sequences
from lamo_ray.domains.kitchen.demonstrator import SUBTASKS, run_demo_episode
from lamo_ray.envs import flatten_observation, make_env

pytest.importorskip("gymnasium_robotics")


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def test_d4rl_60_dim_state_matches_the_simulator_state():
    env = make_env("FrankaKitchen-v1", tasks_to_complete=list(KITCHEN_TASKS["mixed"]),
                   robot_noise_ratio=0.0, object_noise_ratio=0.0)
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    state = flatten_observation("FrankaKitchen-v1", obs)
    qpos = env.unwrapped.data.qpos
    assert state.shape == (60,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:30], qpos[:30], atol=1e-6)  # robot qpos 9 + object qpos 21
    goal = np.zeros(30)
    for task, value in {"microwave": [-0.75], "kettle": [-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06],
                        "bottom burner": [-0.88, -0.01], "light switch": [-0.69, -0.05]}.items():
        goal[list(KITCHEN_OBS_ELEMENT_INDICES[task])] = value
    np.testing.assert_allclose(state[30:], goal, atol=1e-6)
    # achieved goals are the same qpos entries: the 60-dim state places goals where they belong
    for task, achieved in obs["achieved_goal"].items():
        np.testing.assert_allclose(state[list(KITCHEN_OBS_ELEMENT_INDICES[task])], achieved, atol=1e-6)


def test_obs_element_indices_are_gymnasium_robotics_own():
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_INDICES

    assert {k: tuple(v) for k, v in OBS_ELEMENT_INDICES.items()} == KITCHEN_OBS_ELEMENT_INDICES


def test_episode_arrays_map_like_single_observations():
    env = make_env("FrankaKitchen-v1")
    obs, _ = env.reset(seed=0)
    episode = {"observation": np.stack([obs["observation"]] * 4),
               "desired_goal": {k: np.stack([v] * 4) for k, v in obs["desired_goal"].items()},
               "achieved_goal": {k: np.stack([v] * 4) for k, v in obs["achieved_goal"].items()}}
    batch = flatten_observation("FrankaKitchen-v1", episode, batch_dims=1)
    assert batch.shape == (4, 60)
    np.testing.assert_array_equal(batch[2], flatten_observation("FrankaKitchen-v1", obs))
    with pytest.raises(ValueError, match="unknown kitchen subtask 'toaster'"):
        flatten_observation("FrankaKitchen-v1", {"observation": obs["observation"], "desired_goal": {"toaster": [1.0]}})


def test_make_env_gives_d4rl_evaluation_semantics():
    env = make_env("FrankaKitchen-v1")
    kitchen = env.unwrapped
    assert sorted(kitchen.goal) == sorted(KITCHEN_TASKS["complete"])
    assert kitchen.remove_task_when_completed and kitchen.terminate_on_tasks_completed
    assert env.spec.max_episode_steps == 280
    mixed = make_env("FrankaKitchen-v1", tasks_to_complete=list(KITCHEN_TASKS["mixed"]),
                     remove_task_when_completed=False)
    assert "bottom burner" in mixed.unwrapped.goal and mixed.unwrapped.remove_task_when_completed


@pytest.mark.parametrize("subtask, seed", [(t, s) for t in SUBTASKS for s in (0, 1)])
def test_demonstrator_completes_each_subtask_from_a_random_start(subtask, seed):
    env = make_env("FrankaKitchen-v1", tasks_to_complete=[subtask], max_episode_steps=120)
    episode = run_demo_episode(env, [subtask], seed, np.random.default_rng(seed))
    assert subtask in episode.completions, f"{subtask} not done in 120 steps (seed {seed})"
    assert episode.rewards.sum() == 1.0 and episode.terminations[-1]
    assert np.abs(episode.actions).max() <= 1.0


def test_sequences_follow_d4rl_dataset_meanings():
    rng = np.random.default_rng(0)
    targets = KITCHEN_TASKS["partial"]
    assert kitchen_sequences("complete", 5, rng) == [targets] * 5
    partial = kitchen_sequences("partial", 10, rng)
    assert partial[:3] == [targets] * 3 and all(not set(targets) <= set(s) for s in partial[3:])
    mixed = kitchen_sequences("mixed", 50, rng)
    assert all(not set(KITCHEN_TASKS["mixed"]) <= set(s) and 2 <= len(s) <= 4 for s in mixed)
    assert len(set(mixed)) > 10  # random subsets and orders


def test_collector_writes_a_minari_dataset_in_d4rl_kitchen_layout(minari_store):
    import minari

    report = collect_kitchen("partial", "test/kitchen/tiny-v0", episodes=2, seed=0, progress=False)
    assert report.path == minari_store / "test" / "kitchen" / "tiny-v0" and report.episodes == 2
    raw = minari.load_dataset("test/kitchen/tiny-v0")
    episode = next(raw.iterate_episodes())
    assert set(episode.observations) == {"observation", "achieved_goal", "desired_goal"}
    assert set(episode.observations["desired_goal"]) == set(KITCHEN_TASKS["partial"])
    assert episode.observations["observation"].shape == (len(episode) + 1, 59)
    spec = json.loads(raw.storage.metadata["env_spec"])
    assert spec["id"] == "FrankaKitchen-v1" and spec["kwargs"]["tasks_to_complete"] == list(KITCHEN_TASKS["partial"])

    ds = load_dataset("test/kitchen/tiny-v0")
    assert ds.obs_shape == (60,) and ds.act_dim == 9 and ds.env_id == "FrankaKitchen-v1"
    assert (ds.ref_min_score, ds.ref_max_score) == (0.0, 4.0)
    assert ds.trajectories[0].ret == 4.0  # episode 0 attempts the target sequence
    assert all(0 <= t.ret <= 4 and t.length <= 280 for t in ds.trajectories)


def test_collector_refuses_to_overwrite_without_force(capsys, monkeypatch):
    # a stub demonstrator keeps this test fast; the real one is exercised above
    from lamo_ray.domains.kitchen import demonstrator as kitchen

    def still(env, subtasks, seed, rng, noise_std=0.0, jitter=0.0, perturb=True):
        env = make_env("FrankaKitchen-v1", tasks_to_complete=list(KITCHEN_TASKS["mixed"]), max_episode_steps=3)
        return real(env, [], seed, rng, noise_std, jitter, perturb=False)

    real = kitchen.run_demo_episode
    monkeypatch.setattr(kitchen, "run_demo_episode", still)
    collect_kitchen("mixed", "test/kitchen/keep-v0", episodes=1, progress=False)
    assert collect.main(["kitchen", "--dataset", "mixed", "--dataset-id", "test/kitchen/keep-v0",
                         "--episodes", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert collect.main(["kitchen", "--dataset", "mixed", "--dataset-id", "test/kitchen/keep-v0",
                         "--episodes", "2", "--force"]) == 0
    assert len(load_dataset("test/kitchen/keep-v0").trajectories) == 2


@pytest.mark.parametrize("name", ["complete", "partial", "mixed"])
def test_missing_d4rl_kitchen_id_says_how_to_get_it_and_names_the_local_alternative(name):
    with pytest.raises(DatasetError) as err:
        load_dataset(f"D4RL/kitchen/{name}-v2")
    message = str(err.value)
    assert f"minari download D4RL/kitchen/{name}-v2" in message
    assert KITCHEN_DATASET_IDS[name] in message and f"--dataset {name}" in message


def test_evaluation_summary_reports_per_subtask_success():
    from lamo_ray.evaluate import summarize

    def record(target, ret, done):
        return {"target_return": target, "seed": 0, "return": ret, "length": 280,
                "tasks_completed": {t: t in done for t in KITCHEN_TASKS["complete"]}}

    records = [record(4.0, 2.0, {"microwave", "kettle"}), record(4.0, 1.0, {"microwave"}),
               record(2.0, 0.0, set()), {"target_return": 2.0, "seed": 1, "return": 0.0, "length": 280}]
    out = summarize(records, (0.0, 4.0))
    assert out["eval/target_4/success/microwave"] == 1.0 and out["eval/target_4/success/kettle"] == 0.5
    assert out["eval/target_4/success/light_switch"] == 0.0 and out["eval/target_2/success/microwave"] == 0.0
    assert out["eval/target_4/normalized_score"] == pytest.approx(100 * 1.5 / 4)  # return / 4, x100


def test_env_kwargs_take_a_dataset_name_or_a_task_list():
    assert env_kwargs("partial")["tasks_to_complete"] == list(KITCHEN_TASKS["partial"])
    assert env_kwargs(["kettle"], max_episode_steps=9) == {"tasks_to_complete": ["kettle"],
                                                          "remove_task_when_completed": True,
                                                          "terminate_on_tasks_completed": True}
    with pytest.raises(ValueError, match="unknown kitchen dataset"):
        env_kwargs("medium")
