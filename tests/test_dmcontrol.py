"""DMControl (L2M's second pre-training domain): L2M's 204-number state layout, the envs, reference
scores owned by the domain, L2M's own files, and the SAC replay-buffer collector."""

import numpy as np
import pytest
import torch

from lamo_ray import domains
from lamo_ray.data.loading import load_dataset
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError
from lamo_ray.domains.dmcontrol import (DMC10, OBSTYPE_TO_STARTIDX, STATE_DIM, check_tasks, env_id, l2m_state,
                                        make_task_env)


def test_state_layout_is_l2ms_slots():
    # L2M's DMC_OBSTYPE_TO_STARTIDX, spot-checked against its table, and 204 numbers in all
    assert (OBSTYPE_TO_STARTIDX["orientations"], OBSTYPE_TO_STARTIDX["velocity"], OBSTYPE_TO_STARTIDX["position"],
            OBSTYPE_TO_STARTIDX["joints"], OBSTYPE_TO_STARTIDX["body_velocities"],
            OBSTYPE_TO_STARTIDX["height"]) == (0, 14, 41, 144, 158, 203)
    state = l2m_state({"position": np.array([1.0, 2.0, 3.0]), "velocity": np.array([4.0, 5.0]), "height": 7.0})
    expected = np.zeros(STATE_DIM, np.float32)
    expected[41:44], expected[14:16], expected[203] = [1, 2, 3], [4, 5], 7
    np.testing.assert_array_equal(state, expected)
    batch = l2m_state({"position": np.ones((6, 3)), "velocity": np.zeros((6, 2))}, batch_dims=1)
    assert batch.shape == (6, STATE_DIM) and batch[:, 41:44].all() and not batch[:, 44:].any()
    with pytest.raises(ValueError, match="'wheel' has no slot"):
        l2m_state({"wheel": np.zeros(2)})
    with pytest.raises(ValueError, match="'touch' has 6 numbers, more than its 5"):
        l2m_state({"touch": np.zeros(6)})


def test_every_dmc10_task_fits_the_layout_and_the_padded_action_space():
    for task in DMC10:
        env = make_task_env(task)
        obs, _ = env.reset(seed=0)
        raw = env.unwrapped._env.observation_spec()
        assert obs.shape == (STATE_DIM,) and obs.dtype == np.float32
        # every key of the task lands in its own slot, unchanged
        time_step_obs = env.unwrapped._env.reset().observation
        state = l2m_state(time_step_obs)
        for key, value in time_step_obs.items():
            flat = np.ravel(value).astype(np.float32)
            np.testing.assert_array_equal(state[OBSTYPE_TO_STARTIDX[key]: OBSTYPE_TO_STARTIDX[key] + flat.size], flat)
        assert set(raw) == set(time_step_obs)
        assert env.action_space.shape[0] <= 6 and (env.action_space.low == -1).all() and (env.action_space.high == 1).all()


def test_envs_are_seeded_by_reset_and_run_the_suites_1000_steps():
    domain = domains.for_env(env_id("cartpole-balance"))
    assert domain.name == "dmcontrol"
    env = domain.make_env(env_id("cartpole-balance"))
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    other, _ = env.reset(seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    steps, truncated, terminated = 0, False, False
    while not (truncated or terminated):
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        steps += 1
    assert steps == 1000 and truncated and not terminated
    with pytest.raises(ValueError, match="at most 1000 steps"):
        domain.make_env(env_id("cartpole-balance"), max_episode_steps=1001)


def test_task_names_lists_and_did_you_mean():
    assert check_tasks(["dmc10"]) == DMC10
    assert check_tasks(["point_mass-easy"]) == ("point_mass-easy",)
    with pytest.raises(ValueError, match="pretrain: unknown DMControl task 'walker-runn'; did you mean 'walker-run'"):
        check_tasks(["walker-runn"], key="pretrain")


def test_reference_scores_belong_to_the_serving_domain():
    # the id contains "hopper", D4RL Hopper's key in the MuJoCo domain: the DMControl domain answers alone
    assert domains.ref_scores(env_id("hopper-stand")) == (1.296, 266.783)
    assert domains.ref_scores("/data/dm_control/hopper_stand.npz") == (1.296, 266.783)
    assert domains.ref_scores("Hopper-v5") != (1.296, 266.783)
    assert domains.get("dmcontrol").evaluation.target_returns[env_id("walker-run")] == (513.464,)


def write_buffer(path, obs_dim, act_dim, ends=(1000, 2000), n=2300, rng=np.random.default_rng(0)):
    dones = np.zeros(n, np.float32)
    dones[np.array(ends) - 1] = 1.0
    arrays = {"observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
              "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
              "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
              "rewards": rng.uniform(0, 1, size=n).astype(np.float32), "dones": dones}
    np.savez(path, **arrays)
    return arrays


def test_l2m_files_in_the_full_state_or_the_flat_observation(tmp_path):
    full = write_buffer(tmp_path / "walker_run.npz", STATE_DIM, 6)
    ds = load_dataset(str(tmp_path / "walker_run.npz"))
    assert ds.env_id == env_id("walker-run") and ds.obs_shape == (STATE_DIM,) and ds.act_dim == 6
    assert [len(t.rewards) for t in ds.trajectories] == [1000, 1000]          # the unfinished tail dropped
    np.testing.assert_array_equal(ds.trajectories[1].observations, full["observations"][1000:2000])
    assert ds.ref_min_score is None and ds.ref_max_score is None
    # cartpole's flat observation: position (3) then velocity (2), as its observation_spec orders them
    flat = write_buffer(tmp_path / "cartpole_balance.npz", 5, 1)
    ds = load_dataset(str(tmp_path / "cartpole_balance.npz"))
    first = ds.trajectories[0].observations
    np.testing.assert_array_equal(first[:, 41:44], flat["observations"][:1000, :3])
    np.testing.assert_array_equal(first[:, 14:16], flat["observations"][:1000, 3:])
    assert not np.delete(first, [41, 42, 43, 14, 15], axis=1).any()


def test_malformed_and_missing_l2m_files_say_what_is_wrong(tmp_path):
    write_buffer(tmp_path / "cartpole_swingup.npz", 7, 1)
    with pytest.raises(DatasetError, match=r"observations \(7,\) per step, neither L2M's state \(204,\) nor "
                                           r"cartpole-swingup's flat observation \(5,\)"):
        load_dataset(str(tmp_path / "cartpole_swingup.npz"))
    write_buffer(tmp_path / "reacher_hard.npz", STATE_DIM, 3)
    with pytest.raises(DatasetError, match=r"actions \(3,\) per step, not the task's \(2,\)"):
        load_dataset(str(tmp_path / "reacher_hard.npz"))
    with pytest.raises(DatasetNotDownloadedError, match="huggingface-cli download ml-jku/dm_control"):
        load_dataset(str(tmp_path / "fish_upright.npz"))
    assert domains.for_dataset(str(tmp_path / "fish_upright.npz")).download_url(str(tmp_path / "fish_upright.npz")) \
        == "https://huggingface.co/datasets/ml-jku/dm_control/resolve/main/1M/fish_upright.npz"


def test_collector_stores_the_sac_replay_buffer_with_references(tmp_path, monkeypatch):
    from lamo_ray.domains.dmcontrol.collect import collect_dmcontrol

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(ValueError, match="timesteps 1500: a positive multiple"):
        collect_dmcontrol("pendulum-swingup", timesteps=1500)
    with pytest.raises(ValueError, match="did you mean 'pendulum-swingup'"):
        collect_dmcontrol("pendulum-swingupp", timesteps=1000)
    # one episode; SAC takes a gradient step only at the last env step (the smallest real run)
    report = collect_dmcontrol("pendulum-swingup", timesteps=1000, learning_starts=999, ref_episodes=1, seed=1)
    assert (report.episodes, report.transitions) == (1, 1000)
    ds = load_dataset("lamo/dmcontrol/pendulum-swingup-v0")
    assert ds.env_id == env_id("pendulum-swingup") and ds.obs_shape == (STATE_DIM,) and ds.act_dim == 1
    (trajectory,) = ds.trajectories
    assert len(trajectory.rewards) == 1000 and not trajectory.terminated
    # pendulum's keys sit in their slots (orientation 140-141, velocity 14); the rest stays zero
    assert trajectory.observations[:, 140:142].any() and not np.delete(trajectory.observations, [140, 141, 14], axis=1).any()
    assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)
    with pytest.raises(FileExistsError):
        collect_dmcontrol("pendulum-swingup", timesteps=1000, learning_starts=999, ref_episodes=1)


class Constant(torch.nn.Module):
    """A policy that always pushes the cart to one side (cartpole-balance's single action)."""

    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        assert states.shape[-1] == STATE_DIM
        return torch.ones(states.shape[0], 1)


def test_rollouts_run_the_suites_episodes_and_score_with_l2ms_references():
    from lamo_ray.checkpoint import PolicySpec
    from lamo_ray.config import validate_trial
    from lamo_ray.evaluate import Rollout, reference_scores, summarize

    cfg = validate_trial({"data": {"source": "unused", "context_length": 2, "rtg_scale": 100, "max_ep_len": 1000},
                          "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1}})
    spec = PolicySpec(trial=cfg, state_shape=(STATE_DIM,), act_dim=1, discrete_actions=False,
                      state_mean=np.zeros(STATE_DIM, np.float32), state_std=np.ones(STATE_DIM, np.float32))
    records = Rollout(spec, env_id("cartpole-balance"), num_envs=2, model=Constant()).run([(993.0, 0), (993.0, 1)])
    assert all(r["length"] == 1000 for r in records)
    refs = reference_scores(cfg.eval, env_id("cartpole-balance"), (None, None))
    assert refs == (350.391, 938.506)                     # L2M's data-normalized score
    summary = summarize(records, refs)
    expected = np.mean([100 * (r["return"] - 350.391) / (938.506 - 350.391) for r in records])
    assert summary["normalized_score"] == pytest.approx(expected)
    # pushing one way drops the pole early: far below L2M's data
    assert max(r["return"] for r in records) < 350.391
