"""Sharded, memory-mapped task storage (issue 19 "Data at paper scale"): what is written reads back
exactly, trajectories never span shards, and sampled segments are exact slices of the trajectories,
padded into the shared space with their task's action mask."""

import numpy as np
import pytest

from lamo_ray.data.shards import ShardedSampler, ShardedTask, write_task
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset, returns_to_go


def dataset(n, obs_dim, act_dim, tag, seed=0):
    """Trajectories whose states encode (tag, trajectory, step) in their first three numbers."""
    rng = np.random.default_rng(seed)
    trajs = []
    for i in range(n):
        length = int(rng.integers(3, 30))
        obs = rng.normal(size=(length, obs_dim)).astype(np.float32)
        obs[:, 0], obs[:, 1], obs[:, 2] = tag, i, np.arange(length)
        trajs.append(Trajectory(obs, rng.uniform(-1, 1, (length, act_dim)).astype(np.float32),
                                rng.normal(size=length).astype(np.float32), bool(i % 2)))
    return TrajectoryDataset(trajs, (obs_dim,), act_dim, False, 0.0, 10.0, f"Env{tag}-v0", f"test/{tag}-v0")


def test_round_trip_across_shards(tmp_path):
    ds = dataset(20, 7, 3, tag=1)
    path = write_task(ds, tmp_path / "a", "a", shard_rows=60)
    task = ShardedTask.open(path)
    assert task.meta["shards"] > 3 and task.meta["transitions"] == ds.num_transitions
    for i, t in enumerate(ds.trajectories):
        sh, off, n = task.shard[i], task.offset[i], task.length[i]
        assert n == t.length and off + n <= len(task.rewards[sh])             # whole, inside one shard
        assert np.array_equal(task.observations[sh][off:off + n], t.observations)
        assert np.array_equal(task.actions[sh][off:off + n], t.actions)
        assert np.allclose(task.rtg[sh][off:off + n], returns_to_go(t.rewards))
    assert not task.observations[0].flags.writeable                           # views over the mapped file
    with pytest.raises(FileExistsError, match="force"):
        write_task(ds, path, "a")
    with pytest.raises(FileNotFoundError, match="not a sharded task"):
        ShardedTask.open(tmp_path)


def test_segments_are_exact_slices_padded_into_the_shared_space(tmp_path):
    sets = {1: dataset(15, 7, 3, tag=1, seed=1), 2: dataset(10, 5, 2, tag=2, seed=2)}
    paths = [write_task(ds, tmp_path / str(tag), str(tag), shard_rows=50) for tag, ds in sets.items()]
    sampler = ShardedSampler(paths, context_length=4, rtg_scale=10.0, max_ep_len=20, state_dim=12, act_dim=6, seed=0)
    batch = sampler.sample(400)
    assert batch["states"].shape == (400, 4, 12) and batch["actions"].shape == (400, 4, 6)
    assert 150 < (batch["task"] == 0).sum() < 250                               # tasks mixed uniformly
    for b in range(400):
        ds = sets[1 + int(batch["task"][b])]
        s, a = ds.obs_shape[0], ds.act_dim
        mask = batch["attention_mask"][b].astype(bool)
        assert mask[-1] and np.all(np.diff(mask.astype(int)) >= 0)              # left padding, contiguous
        assert batch["action_mask"][b].tolist() == [True] * a + [False] * (6 - a)
        states = batch["states"][b]
        assert np.all(states[:, s:] == 0) and np.all(states[~mask] == 0) and np.all(batch["actions"][b, :, a:] == 0)
        traj = ds.trajectories[int(states[mask][0, 1])]
        steps = states[mask][:, 2].astype(int)
        assert np.array_equal(steps, np.arange(steps[0], steps[0] + mask.sum()))
        assert np.array_equal(states[mask][:, :s], traj.observations[steps])
        assert np.array_equal(batch["actions"][b][mask][:, :a], traj.actions[steps])
        assert np.allclose(batch["returns_to_go"][b][mask][:, 0], returns_to_go(traj.rewards)[steps] / 10.0, atol=1e-5)
        assert np.allclose(batch["rewards"][b][mask][:, 0], traj.rewards[steps] / 10.0)
        assert np.array_equal(batch["timesteps"][b][mask], np.minimum(steps, 19))
    same = ShardedSampler(paths, 4, 10.0, 20, 12, 6, seed=0).sample(400)
    assert all(np.array_equal(same[k], batch[k]) for k in batch)                 # seeded
    normed = ShardedSampler(paths, 4, 10.0, 20, 12, 6, seed=0, normalize=True).sample(400)
    for b in (0, 1, 2):   # the same segments, each task's states standardised by its own statistics
        task, mask = ShardedTask.open(paths[int(batch["task"][b])]), batch["attention_mask"][b].astype(bool)
        s = task.meta["obs_dim"]
        expected = (batch["states"][b][mask][:, :s] - np.array(task.meta["state_mean"], np.float32)) / \
            np.array(task.meta["state_std"], np.float32)
        assert np.allclose(normed["states"][b][mask][:, :s], expected, atol=1e-5)


def test_a_task_wider_than_the_shared_space_is_named(tmp_path):
    path = write_task(dataset(3, 7, 3, tag=1), tmp_path / "wide", "wide")
    with pytest.raises(ValueError, match=r"task 'wide'.*state 7 / action 3 dimensions exceed the shared 6 / 6"):
        ShardedSampler([path], 4, 1.0, 20, state_dim=6, act_dim=6, seed=0)


def test_each_task_has_its_own_return_scale_and_sampling_weight(tmp_path):
    """Tasks of two domains in one sampler (L2M: Meta-World / 200, DMControl / 100): returns-to-go
    divided by their own task's scale, and tasks drawn by their weights."""
    a = write_task(dataset(10, 4, 2, tag=1), tmp_path / "a", "a")
    b = write_task(dataset(10, 6, 3, tag=2, seed=1), tmp_path / "b", "b")
    sampler = ShardedSampler([a, b], 3, [200.0, 100.0], 64, 8, 4, seed=0, task_weights=[1.0, 3.0])
    batch = sampler.sample(4000)
    share_b = (batch["task"] == 1).mean()
    assert abs(share_b - 0.75) < 0.03
    for ti, scale, ds in ((0, 200.0, dataset(10, 4, 2, tag=1)), (1, 100.0, dataset(10, 6, 3, tag=2, seed=1))):
        rows = np.flatnonzero(batch["task"] == ti)[:50]
        for r in rows:
            m = batch["attention_mask"][r] > 0
            traj = ds.trajectories[int(batch["states"][r, m][0, 1])]
            steps = batch["states"][r, m][:, 2].astype(int)
            np.testing.assert_allclose(batch["returns_to_go"][r, m, 0], returns_to_go(traj.rewards)[steps] / scale,
                                       rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one per task"):
        ShardedSampler([a, b], 3, [200.0], 64, 8, 4, seed=0)
    with pytest.raises(ValueError, match="task_weights"):
        ShardedSampler([a, b], 3, 200.0, 64, 8, 4, seed=0, task_weights=[0.0, 0.0])
