"""Reward transforms (ODT-TD3's reward shift and delayed reward): the data side and the env side agree."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamo_ray.config import ConfigError, validate_trial
from lamo_ray.data.rewards import RewardTransform
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset


def test_delay_sums_blocks_at_their_last_step_and_flushes_the_partial_block():
    r = np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.float32)
    assert RewardTransform(delay=3).trajectory(r).tolist() == [0, 0, 6, 0, 0, 15, 7]
    assert RewardTransform(shift=-1.0).trajectory(r).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert RewardTransform(shift=-1.0, delay=2).trajectory(r).tolist() == [0, 1, 0, 5, 0, 9, 6]
    assert RewardTransform().trajectory(r).tolist() == r.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=40), st.sampled_from([0, 2, 3, 7]),
       st.sampled_from([0.0, -1.0, 0.5]))
def test_env_stream_equals_data_transform_and_keeps_the_shifted_total(rewards, delay, shift):
    t = RewardTransform(shift=shift, delay=delay)
    stream = t.stream()
    online = [stream.step(r, i == len(rewards) - 1) for i, r in enumerate(rewards)]
    offline = t.trajectory(np.array(rewards, dtype=np.float32))
    assert np.allclose(online, offline, atol=1e-4)
    assert offline.sum() == pytest.approx(sum(rewards) + shift * len(rewards), abs=1e-3)


def test_dataset_copy_leaves_the_source_unchanged():
    traj = Trajectory(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), np.ones(4, np.float32), False)
    ds = TrajectoryDataset([traj], (2,), 1, False, None, None, None, "x")
    out = RewardTransform(shift=-1.0, delay=2).dataset(ds)
    assert out.trajectories[0].rewards.tolist() == [0, 0, 0, 0] and traj.rewards.tolist() == [1, 1, 1, 1]
    assert RewardTransform().dataset(ds) is ds


def test_delay_of_one_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"data\.delayed_reward.*0 \(off\) or >= 2"):
        validate_trial({"data": {"source": "x", "delayed_reward": 1}})
    with pytest.raises(ValueError, match="delayed_reward"):
        RewardTransform(delay=1)
