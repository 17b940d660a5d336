"""The pieces of online fine-tuning (issue 18): ODT's trajectory replay buffer, the TD3 twin critic
and its losses, ODT's tanh-Gaussian head with its temperature."""

import numpy as np
import pytest
import torch

from lamo_ray.data.trajectories import Trajectory
from lamo_ray.heads import LOG_STD_BOUNDS, TanhGaussianHead
from lamo_ray.online.critic import (TwinQ, actor_rl_loss, critic_loss, ema_copy, soft_update,
                                    target_actions)
from lamo_ray.online.replay import TrajectoryReplay


def traj(ret, length=3, terminated=False):
    rewards = np.full(length, ret / length, dtype=np.float32)
    return Trajectory(np.zeros((length, 2), np.float32), np.zeros((length, 1), np.float32), rewards, terminated)


def returns(buffer):
    return [round(t.ret, 3) for t in buffer.trajectories]


# --------------------------------------------------------------------------- replay


def test_replay_keeps_the_best_offline_then_overwrites_lowest_return_first():
    buffer = TrajectoryReplay(3, [traj(r) for r in (5, 1, 9, 7, 3)])
    assert returns(buffer) == [5, 7, 9]                     # the 3 best, lowest to highest
    buffer.add([traj(100)])
    assert returns(buffer) == [100, 7, 9]                   # slot 0: the lowest-return one goes first
    buffer.add([traj(101), traj(102)])
    assert returns(buffer) == [100, 101, 102] and buffer.start == 0
    buffer.add([traj(103)])
    assert returns(buffer) == [103, 101, 102]               # then a ring: the oldest goes
    assert all(t.terminated for t in buffer.trajectories)   # online ones stored as terminated (authors' code)
    assert buffer.added == 4 and buffer.added_transitions == 12


def test_replay_fills_before_overwriting_and_more_than_capacity_keeps_the_newest():
    buffer = TrajectoryReplay(4, [traj(1), traj(2)])
    buffer.add([traj(3)])
    assert returns(buffer) == [1, 2, 3]
    buffer.add([traj(4), traj(5), traj(6)])
    assert returns(buffer) == [3, 4, 5, 6]                  # extend, keep the last 4 (Online DT)
    fresh = TrajectoryReplay(2, [traj(1), traj(2)])
    fresh.add([traj(10), traj(11), traj(12)])
    assert sorted(returns(fresh)) == [11, 12]
    with pytest.raises(ValueError, match="online.replay_size"):
        TrajectoryReplay(0)


def test_replay_state_dict_continues_exactly():
    a = TrajectoryReplay(3, [traj(r) for r in (5, 1, 9, 7)])
    a.add([traj(20)])
    b = TrajectoryReplay(1)
    b.load_state_dict(a.state_dict())
    for buffer in (a, b):
        buffer.add([traj(30), traj(31)])
    assert returns(a) == returns(b) == [20, 30, 31] and (a.start, a.added) == (b.start, b.added)


# --------------------------------------------------------------------------- critic


def test_layer_norm_adds_no_parameters_and_shapes_follow_the_positions():
    with_ln, without = TwinQ(5, 2, hidden=16, layer_norm=True), TwinQ(5, 2, hidden=16, layer_norm=False)
    assert sum(p.numel() for p in with_ln.parameters()) == sum(p.numel() for p in without.parameters())
    q1, q2 = with_ln(torch.zeros(4, 7, 5), torch.zeros(4, 7, 2))
    assert q1.shape == q2.shape == (4, 7)


def test_critic_target_is_td3s_and_padded_positions_do_not_count():
    torch.manual_seed(0)
    critic, target = TwinQ(3, 1, hidden=8), TwinQ(3, 1, hidden=8)
    s, a, s2, a2 = torch.randn(2, 4, 3), torch.randn(2, 4, 1), torch.randn(2, 4, 3), torch.randn(2, 4, 1)
    r, d = torch.randn(2, 4), torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float32)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float32)
    loss, info = critic_loss(critic, target, s, a, r, s2, a2, d, mask, gamma=0.9)
    tq1, tq2 = target(s2, a2)
    y = (r + 0.9 * (1 - d) * torch.minimum(tq1, tq2)).detach()
    q1, q2 = critic(s, a)
    m = mask > 0
    expected = ((q1 - y)[m] ** 2).mean() + ((q2 - y)[m] ** 2).mean()
    assert torch.allclose(loss, expected) and info["target_mean"] == pytest.approx(float(y[m].mean()), rel=1e-5)
    r2 = r.clone()
    r2[~m] = 1e6  # anything at padded positions
    assert torch.allclose(critic_loss(critic, target, s, a, r2, s2, a2, d, mask, gamma=0.9)[0], loss)


def test_critic_learns_a_one_step_reward_and_the_actor_term_climbs_it():
    """A bandit (done = 1): Q -> r(s, a) = -(a - s)^2; then -Q1 pulls actions toward a = s."""
    torch.manual_seed(0)
    critic = TwinQ(1, 1, hidden=64, layer_norm=True)
    target = ema_copy(critic)
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(400):
        s, a = torch.rand(64, 1, 1) * 2 - 1, torch.rand(64, 1, 1) * 2 - 1
        r = -((a - s) ** 2).reshape(64, 1)
        loss, _ = critic_loss(critic, target, s, a, r, s, a, torch.ones(64, 1), torch.ones(64, 1), gamma=0.99)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01
    s = torch.full((32, 1, 1), 0.5)
    actions = torch.full((32, 1, 1), -0.5, requires_grad=True)
    actor_rl_loss(critic, s, actions, torch.ones(32, 1)).backward()
    assert (actions.grad < 0).all()  # descending -Q moves the action up, toward s = 0.5


def test_target_smoothing_is_clipped_and_clamped_and_soft_update_interpolates():
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(10000, 2)
    smoothed = target_actions(base, noise=0.2, noise_clip=0.5, generator=g)
    assert smoothed.abs().max() <= 0.5 and 0.15 < smoothed.std() < 0.25
    assert target_actions(torch.full((100, 2), 0.9), 0.2, 0.5, generator=g).max() <= 1.0
    src, tgt = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = tgt.weight.detach().clone()
    soft_update(tgt, src, 0.25)
    assert torch.allclose(tgt.weight, 0.75 * before + 0.25 * src.weight)
    assert not any(p.requires_grad for p in ema_copy(src).parameters())


# --------------------------------------------------------------------------- stochastic head


def test_tanh_gaussian_head_bounds_and_learning():
    torch.manual_seed(0)
    head = TanhGaussianHead(8, 2)
    assert head.temperature().item() == pytest.approx(0.1) and head.target_entropy == -2.0
    h = torch.randn(16, 5, 8) * 100  # extreme inputs: log-std stays within its bounds
    dist = head(h)
    low, high = (np.exp(b) for b in LOG_STD_BOUNDS)
    assert (dist.base_dist.scale >= low - 1e-6).all() and (dist.base_dist.scale <= high + 1e-6).all()
    assert head.mean_action(dist).abs().max() <= 1.0 and head.mean_action(head(torch.randn(3, 8))).abs().max() < 1.0

    # fit fixed data actions (including the boundary +-1): the NLL falls, everything stays finite
    data = torch.tensor([0.5, -1.0]).expand(16, 5, 2)
    mask = torch.ones(16, 5)
    x = torch.randn(16, 5, 8)
    opt = torch.optim.Adam([p for n, p in head.named_parameters() if n != "log_temperature"], lr=1e-2)
    first = None
    for _ in range(200):
        policy_loss, temperature_loss, info = head.losses(head(x), data, mask)
        first = first if first is not None else info["nll"]
        opt.zero_grad()
        policy_loss.backward()
        opt.step()
    assert np.isfinite(info["nll"]) and info["nll"] < first - 2.0
    # the temperature loss moves only the temperature, toward the target entropy: down while the
    # entropy is above it, up below it
    names = [n for n, _ in head.named_parameters()]
    grads = torch.autograd.grad(temperature_loss, list(head.parameters()), allow_unused=True)
    assert [n for n, g in zip(names, grads) if g is not None] == ["log_temperature"]
    (grad,) = [g for g in grads if g is not None]
    assert np.sign(grad.item()) == np.sign(info["entropy"] - head.target_entropy) != 0
