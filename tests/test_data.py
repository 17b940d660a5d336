"""lamo_ray/data: loading (D4RL HDF5, Minari), down-sampling, statistics, segments, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamo_ray.data.loading import dataset_info, load_dataset
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import (
    DatasetError,
    Trajectory,
    TrajectoryDataset,
    returns_to_go,
    state_stats,
    subsample,
)
from lamo_ray.domains.reacher import collect_reacher

REPO = Path(__file__).resolve().parents[1]
INFO_KEYS = {"num_trajectories", "num_transitions", "return_mean", "return_min", "return_max",
             "obs_dim", "act_dim", "ref_min_score", "ref_max_score"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def minari_store(tmp_path_factory):
    """A Minari store in tmp holding a tiny collected Reacher dataset (never ~/.minari)."""
    store = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        report = collect_reacher("test/reacher/tiny-v0", episodes=4, seed=1, noise_levels=(0.0, 1.0),
                                 ref_episodes=2, progress=False)
    return store, report


@pytest.fixture(autouse=True)
def _use_tmp_minari_store(minari_store, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_store[0]))


def write_d4rl(path, n=10, terminals=(2,), timeouts=(5,), obs_dim=3, attrs=None, drop=(), discrete=False):
    """A D4RL-format file: step i has observation [i, i, ...], reward i."""
    data = {
        "observations": np.repeat(np.arange(n, dtype=np.float64)[:, None], obs_dim, axis=1),
        "actions": (np.arange(n) % 3) if discrete else np.full((n, 2), 0.5, dtype=np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.isin(np.arange(n), terminals),
        "timeouts": np.isin(np.arange(n), timeouts),
    }
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value)
        f.attrs.update(attrs or {})
    return str(path)


def synthetic(lengths, obs_dim=2, act_dim=1, discrete=False, images=False, seed=0):
    """Trajectories whose observation row is [trajectory index, t] and reward is a random float."""
    rng = np.random.default_rng(seed)
    trajectories = []
    for i, n in enumerate(lengths):
        if images:
            obs = np.full((n, 1, 2, 2), i + 1, dtype=np.uint8)
        else:
            obs = np.zeros((n, obs_dim), dtype=np.float32)
            obs[:, 0], obs[:, 1] = i, np.arange(n)
        actions = rng.integers(0, 4, n) if discrete else rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
        trajectories.append(Trajectory(obs, actions, rng.normal(size=n).astype(np.float32), False))
    return TrajectoryDataset(trajectories, trajectories[0].observations.shape[1:], 4 if discrete else act_dim,
                             discrete, None, None, None, "synthetic")


# --------------------------------------------------------------------------- D4RL HDF5


def test_hdf5_splits_at_terminals_and_timeouts_and_keeps_trailing_piece(tmp_path):
    ds = load_dataset(write_d4rl(tmp_path / "hopper-tiny-v2.hdf5"))
    assert [t.length for t in ds.trajectories] == [3, 3, 4]
    assert [t.terminated for t in ds.trajectories] == [True, False, False]
    np.testing.assert_allclose(ds.returns, [0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8 + 9])
    assert ds.num_transitions == 10
    assert ds.obs_shape == (3,) and ds.act_dim == 2 and not ds.discrete_actions
    assert ds.trajectories[1].observations.dtype == np.float32
    assert ds.trajectories[1].observations[0].tolist() == [3.0, 3.0, 3.0]
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)  # from "hopper" in the name
    assert ds.env_id is None


def test_hdf5_attributes_give_ref_scores_and_env_id(tmp_path):
    path = write_d4rl(tmp_path / "custom.h5", attrs={"ref_min_score": -1.0, "ref_max_score": 9.0, "env_id": "Hopper-v5"})
    ds = load_dataset(path)
    assert (ds.ref_min_score, ds.ref_max_score, ds.env_id) == (-1.0, 9.0, "Hopper-v5")
    assert load_dataset(write_d4rl(tmp_path / "custom2.hdf5")).ref_min_score is None


def test_hdf5_integer_actions_are_discrete(tmp_path):
    ds = load_dataset(write_d4rl(tmp_path / "d.hdf5", discrete=True))
    assert ds.discrete_actions and ds.act_dim == 3
    assert ds.trajectories[0].actions.dtype == np.int64 and ds.trajectories[0].actions.shape == (3,)


def test_bad_sources_raise_dataset_error_naming_source(tmp_path):
    missing = str(tmp_path / "missing.hdf5")
    with pytest.raises(DatasetError, match="missing.hdf5.*not found"):
        load_dataset(missing)
    corrupt = tmp_path / "corrupt.hdf5"
    corrupt.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(DatasetError, match="corrupt.hdf5.*cannot read"):
        load_dataset(str(corrupt))
    with pytest.raises(DatasetError, match=r"nokeys.hdf5.*missing keys \['timeouts'\]"):
        load_dataset(write_d4rl(tmp_path / "nokeys.hdf5", drop=("timeouts",)))
    with pytest.raises(DatasetError, match="empty.hdf5.*no steps"):
        load_dataset(write_d4rl(tmp_path / "empty.hdf5", n=0, terminals=(), timeouts=()))


def test_unknown_minari_id_says_how_to_get_it_and_lists_local_ids():
    with pytest.raises(DatasetError) as err:
        load_dataset("nobody/nothing-v0")
    message = str(err.value)
    assert message.startswith("nobody/nothing-v0")
    assert "minari download nobody/nothing-v0" in message and "lamo_ray.collect" in message
    assert "test/reacher/tiny-v0" in message


# --------------------------------------------------------------------------- Minari


def test_minari_dataset_drops_final_observation_and_reads_metadata(minari_store):
    import minari

    _, report = minari_store
    ds = load_dataset("test/reacher/tiny-v0")
    raw = minari.load_dataset("test/reacher/tiny-v0")
    assert len(ds.trajectories) == 4 and ds.num_transitions == 200
    assert ds.obs_shape == (10,) and ds.act_dim == 2 and not ds.discrete_actions
    first = next(iter(raw.iterate_episodes()))
    np.testing.assert_allclose(ds.trajectories[0].observations, first.observations[:-1].astype(np.float32))
    np.testing.assert_allclose(ds.trajectories[0].rewards, first.rewards.astype(np.float32))
    assert ds.trajectories[0].actions.dtype == np.float32
    assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)
    assert ds.env_id == "Reacher-v5" and ds.max_episode_steps == 50


def make_dict_dataset(dataset_id):
    """A one-episode Minari dataset with dict observations {pos (2,), goal (1,)} and no env."""
    import minari
    from minari.data_collector import EpisodeBuffer

    space = gym.spaces.Dict({"pos": gym.spaces.Box(-9, 9, (2,)), "goal": gym.spaces.Box(-9, 9, (1,))})
    obs = {"pos": np.arange(8, dtype=np.float32).reshape(4, 2), "goal": np.full((4, 1), 7.0, dtype=np.float32)}
    episode = EpisodeBuffer(observations=obs, actions=np.zeros((3, 1), dtype=np.float32),
                            rewards=[1.0, 1.0, 1.0], terminations=[False, False, True], truncations=[False] * 3)
    return minari.create_dataset_from_buffers(dataset_id, [episode], action_space=gym.spaces.Box(-1, 1, (1,)),
                                              observation_space=space, author="t", author_email="t",
                                              code_permalink="t", algorithm_name="t", description="t")


@pytest.mark.filterwarnings("ignore:.*(eval_env|env_spec).*:UserWarning")
def test_minari_dict_observations_are_flattened_in_sorted_key_order():
    make_dict_dataset("test/dict-v0")
    ds = load_dataset("test/dict-v0")
    assert ds.obs_shape == (3,) and ds.trajectories[0].terminated
    assert ds.trajectories[0].observations.tolist() == [[7, 0, 1], [7, 2, 3], [7, 4, 5]]  # goal, pos
    assert ds.ref_min_score is None and ds.env_id is None


@pytest.mark.filterwarnings("ignore:.*(eval_env|env_spec).*:UserWarning")
def test_minari_kitchen_dict_observations_wait_for_their_rule():
    dataset = make_dict_dataset("test/kitchen-v0")
    spec = gym.spec("Reacher-v5").to_json().replace("Reacher-v5", "FrankaKitchen-v1")
    dataset.storage.update_metadata({"env_spec": spec})
    with pytest.raises(DatasetError, match="test/kitchen-v0: FrankaKitchen.*60-dim"):
        load_dataset("test/kitchen-v0")


# --------------------------------------------------------------------------- down-sampling, statistics


def test_subsample_keeps_int_n_ratio_whole_trajectories_seeded():
    ds = synthetic([3] * 101)
    kept = subsample(ds, 0.1, seed=5)
    assert len(kept.trajectories) == int(101 * 0.1) == 10
    ids = [int(t.observations[0, 0]) for t in kept.trajectories]
    assert ids == sorted(ids)  # source order
    assert ids == [int(t.observations[0, 0]) for t in subsample(ds, 0.1, seed=5).trajectories]
    assert ids != [int(t.observations[0, 0]) for t in subsample(ds, 0.1, seed=6).trajectories]
    assert subsample(ds, 1.0, seed=0) is ds


def test_subsample_length_weighted_prefers_long_trajectories_without_repeats():
    """LaMo's Atari ratio_dataset: drawn with probability proportional to length, without replacement."""
    ds = synthetic([1, 40] * 50)  # even indices 1 step, odd indices 40 steps
    for seed in range(3):
        kept = subsample(ds, 0.2, seed=seed, weighting="length_weighted")
        ids = [int(t.observations[0, 0]) for t in kept.trajectories]
        assert len(ids) == len(set(ids)) == 20
        assert sum(i % 2 for i in ids) >= 18      # P(a 1-step one among 20 draws) is ~1/40 per draw
    uniform = [int(t.observations[0, 0]) for t in subsample(ds, 0.2, seed=0).trajectories]
    assert 4 <= sum(i % 2 for i in uniform) <= 16
    with pytest.raises(ValueError, match="weighting"):
        subsample(ds, 0.2, seed=0, weighting="return")


def test_subsample_keeping_nothing_names_ratio_and_count():
    with pytest.raises(DatasetError, match=r"synthetic: sample_ratio 0.01 keeps int\(50 \* 0.01\) = 0 of its 50"):
        subsample(synthetic([2] * 50), 0.01, seed=0)
    with pytest.raises(DatasetError, match="sample_ratio must be in"):
        subsample(synthetic([2]), 1.5, seed=0)


def test_returns_to_go_matches_hand_computation():
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0, -1.0])), [5.0, 4.0, 2.0, -1.0])
    assert returns_to_go(np.array([0.5], dtype=np.float32)).dtype == np.float32
    # LaMo's Atari buffer: the rewards after step t
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0, -1.0]), include_current=False),
                               [4.0, 2.0, -1.0, 0.0])


def test_state_stats_over_all_transitions():
    ds = synthetic([2, 3])  # rows [0,0],[0,1],[1,0],[1,1],[1,2]
    mean, std = state_stats(ds)
    np.testing.assert_allclose(mean, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(std, np.std([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]], axis=0) + 1e-6, rtol=1e-6)
    assert mean.dtype == std.dtype == np.float32


# --------------------------------------------------------------------------- segments


def identity_sampler(ds, k=4, rtg_scale=2.0, max_ep_len=1000, seed=0):
    shape = ds.obs_shape
    return SegmentSampler(ds, k, rtg_scale, max_ep_len, np.zeros(shape), np.ones(shape), seed)


def test_segments_shapes_and_left_padding():
    ds = synthetic([2, 6])
    batch = identity_sampler(ds, k=4).sample(256)
    assert batch["states"].shape == (256, 4, 2) and batch["states"].dtype == np.float32
    assert batch["actions"].shape == (256, 4, 1) and batch["actions"].dtype == np.float32
    assert batch["returns_to_go"].shape == (256, 4, 1) and batch["returns_to_go"].dtype == np.float32
    assert batch["timesteps"].shape == (256, 4) and batch["timesteps"].dtype == np.int64
    assert batch["attention_mask"].shape == (256, 4) and batch["attention_mask"].dtype == np.float32
    short = batch["states"][:, -1, 0] == 0  # rows from the 2-step trajectory: at most 2 real steps
    assert short.any()
    mask = batch["attention_mask"]
    assert (mask[short, :2] == 0).all() and (mask[:, -1] == 1).all()
    pads = mask == 0
    assert (batch["actions"][pads] == -10).all() and (batch["states"][pads] == 0).all()
    assert (batch["returns_to_go"][pads] == 0).all() and (batch["timesteps"][pads] == 0).all()


def test_full_window_segments_start_in_0_to_t_minus_k_and_pad_right():
    """LaMo's Atari AtariBuffer.sample: starts uniform in [0, T-K), right padding only when T < K."""
    ds = synthetic([3, 10])
    sampler = SegmentSampler(ds, 4, 1.0, 1000, np.zeros(2), np.ones(2), seed=0, segments="full_window",
                             rtg_includes_current_reward=False)
    batch = sampler.sample(512)
    long = batch["states"][:, 0, 0] == 1
    mask = batch["attention_mask"]
    assert (mask[long] == 1).all()
    starts = batch["states"][long, 0, 1].astype(int)
    assert set(starts) == set(range(0, 10 - 4))                   # 0 .. T-K-1, each seen
    np.testing.assert_array_equal(batch["states"][long, :, 1], starts[:, None] + np.arange(4))
    short = ~long                                                # T = 3 < K: one window, right-padded
    assert (mask[short] == [1, 1, 1, 0]).all()
    assert (batch["states"][short][:, :3, 1] == [0, 1, 2]).all() and (batch["states"][short][:, 3] == 0).all()
    assert (batch["actions"][short][:, 3] == -10).all()
    rtg = returns_to_go(ds.trajectories[1].rewards, include_current=False)
    row = np.flatnonzero(long)[0]
    np.testing.assert_allclose(batch["returns_to_go"][row, :, 0], rtg[starts[0]:starts[0] + 4], rtol=1e-6)
    images = SegmentSampler(synthetic([2, 6], images=True), 3, 1.0, 100, np.zeros(1), np.ones(1), seed=0,
                            segments="full_window").sample(64)
    real = images["attention_mask"] == 1
    assert (real[:, 0]).all() and (images["states"][~real] == 0).all()
    assert set(np.unique(images["states"][real])) <= {1, 2}


def test_segment_rtg_scaled_and_timesteps_clipped():
    ds = synthetic([30])
    batch = identity_sampler(ds, k=5, rtg_scale=4.0, max_ep_len=10).sample(64)
    rtg = returns_to_go(ds.trajectories[0].rewards) / 4.0
    for b in range(64):
        real = batch["attention_mask"][b] == 1
        t = batch["states"][b, real, 1].astype(int)
        np.testing.assert_allclose(batch["returns_to_go"][b, real, 0], rtg[t], rtol=1e-5, atol=1e-6)
        assert (batch["timesteps"][b, real] == np.minimum(t, 9)).all()


def test_segment_normalises_states_but_not_images():
    ds = synthetic([5, 5])
    mean, std = np.array([1.0, 2.0]), np.array([2.0, 4.0])
    batch = SegmentSampler(ds, 3, 1.0, 100, mean, std, seed=0).sample(8)
    real = batch["attention_mask"] == 1
    raw_t = batch["timesteps"][real]
    np.testing.assert_allclose(batch["states"][real][:, 1], (raw_t - 2.0) / 4.0)
    images = identity_sampler(synthetic([4, 4], images=True), k=3).sample(8)
    assert images["states"].dtype == np.uint8 and images["states"].shape == (8, 3, 1, 2, 2)
    assert set(np.unique(images["states"][images["attention_mask"] == 1])) <= {1, 2}


def test_segment_discrete_actions_pad_with_zero():
    batch = identity_sampler(synthetic([1, 1], discrete=True), k=3).sample(4)
    assert batch["actions"].shape == (4, 3) and batch["actions"].dtype == np.int64
    assert (batch["actions"][:, :2] == 0).all()


def test_segments_sample_trajectories_proportional_to_length():
    batch = identity_sampler(synthetic([1, 9]), k=1, seed=3).sample(20_000)
    share_long = (batch["states"][:, 0, 0] == 1).mean()
    assert abs(share_long - 0.9) < 0.02
    starts = batch["timesteps"][batch["states"][:, 0, 0] == 1, 0]
    counts = np.bincount(starts, minlength=9)
    assert counts.min() > 0.8 * counts.mean()  # start uniform over the 9 steps


def test_sampler_is_seeded():
    ds = synthetic([5, 7, 9])
    a, b, c = (identity_sampler(ds, seed=s).sample(16) for s in (1, 1, 2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["states"], c["states"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6), k=st.integers(1, 8),
       rtg_scale=st.floats(0.5, 100.0), max_ep_len=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_segment_properties(lengths, k, rtg_scale, max_ep_len, seed):
    ds = synthetic(lengths, seed=seed)
    batch = identity_sampler(ds, k=k, rtg_scale=rtg_scale, max_ep_len=max_ep_len, seed=seed).sample(16)
    for b in range(16):
        mask = batch["attention_mask"][b]
        n_real = int(mask.sum())
        assert n_real >= 1 and (mask == np.r_[np.zeros(k - n_real), np.ones(n_real)]).all()  # suffix
        pad, real = slice(0, k - n_real), slice(k - n_real, k)
        assert (batch["states"][b, pad] == 0).all() and (batch["actions"][b, pad] == -10).all()
        assert (batch["returns_to_go"][b, pad] == 0).all() and (batch["timesteps"][b, pad] == 0).all()
        traj_ids = batch["states"][b, real, 0].astype(int)
        assert (traj_ids == traj_ids[0]).all()
        traj = ds.trajectories[traj_ids[0]]
        t = batch["states"][b, real, 1].astype(int)
        assert (np.diff(t) == 1).all()
        assert n_real == min(k, traj.length - t[0])  # runs to K steps or to the trajectory's end
        rtg = batch["returns_to_go"][b, real, 0] * rtg_scale
        np.testing.assert_allclose(rtg, returns_to_go(traj.rewards)[t], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rtg[:-1] - rtg[1:], traj.rewards[t[:-1]], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(batch["actions"][b, real], traj.actions[t])
        assert (batch["timesteps"][b, real] == np.minimum(t, max_ep_len - 1)).all()


# --------------------------------------------------------------------------- dataset_info, CLI


def test_dataset_info_values(tmp_path):
    info = dataset_info(write_d4rl(tmp_path / "walker2d-x.hdf5"), sample_ratio=1.0)
    assert set(info) == INFO_KEYS
    assert info == {"num_trajectories": 3, "num_transitions": 10, "return_mean": 15.0, "return_min": 3.0,
                    "return_max": 30.0, "obs_dim": 3, "act_dim": 2,
                    "ref_min_score": 1.629008, "ref_max_score": 4592.3}


def run_cli(*args):
    env = dict(os.environ, MINARI_DATASETS_PATH=os.environ["MINARI_DATASETS_PATH"])
    return subprocess.run([sys.executable, "-m", "lamo_ray.data", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_info_json_and_errors(tmp_path):
    path = write_d4rl(tmp_path / "x.hdf5", n=40, terminals=(), timeouts=tuple(range(3, 40, 4)))
    done = run_cli("info", path, "--sample-ratio", "0.5", "--seed", "1", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)  # exactly one JSON object
    assert set(info) == INFO_KEYS
    assert info["num_trajectories"] == 5 and info["num_transitions"] == 20
    assert info["obs_dim"] == 3 and info["ref_min_score"] is None

    for source in (str(tmp_path / "gone.hdf5"), "nobody/nothing-v0"):
        failed = run_cli("info", source, "--json")
        assert failed.returncode == 2 and failed.stdout == ""
        assert failed.stderr.count("\n") == 1 and source in failed.stderr and "Traceback" not in failed.stderr


def test_sampler_reseed_restarts_a_different_reproducible_stream():
    from lamo_ray.data.sampling import SegmentSampler
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset, state_stats

    rng = np.random.default_rng(0)
    trajs = [Trajectory(rng.standard_normal((30, 3)).astype(np.float32), rng.uniform(-1, 1, (30, 2)).astype(np.float32),
                        rng.standard_normal(30).astype(np.float32), True) for _ in range(5)]
    ds = TrajectoryDataset(trajs, (3,), 2, False, None, None, None, "mem")
    mean, std = state_stats(ds)
    a = SegmentSampler(ds, 4, 1.0, 100, mean, std, seed=0)
    first = a.sample(8)["states"]
    a.reseed([0, 0, 100])
    resumed = a.sample(8)["states"]
    b = SegmentSampler(ds, 4, 1.0, 100, mean, std, seed=0)
    b.reseed([0, 0, 100])
    assert not np.array_equal(first, resumed)
    np.testing.assert_array_equal(resumed, b.sample(8)["states"])
