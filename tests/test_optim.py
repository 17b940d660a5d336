"""The learning-rate schedules of `lamo_ray.optim` against the torch schedulers the reference code uses."""

from __future__ import annotations

import pytest
import torch

from lamo_ray.config import TrainConfig, validate_trial
from lamo_ray.optim import make_optimizer, make_scheduler


def _lrs(scheduler, optimizer, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_schedule_is_l2m_sequential_warmup_then_single_cosine_cycle():
    """L2M's decision_transformer_sb3.py: SequentialLR([LambdaLR warm-up, CosineAnnealingLR(T_max=steps,
    eta_min)], milestones=[warmup]); after T_max its single-cycle subclass stays at eta_min."""
    warmup, steps, lr, lr_min = 5, 40, 1e-3, 1e-6
    cfg = TrainConfig(steps=steps, warmup_steps=warmup, lr=lr, lr_min=lr_min, lr_schedule="cosine", batch_size=4)
    p = torch.nn.Parameter(torch.zeros(2))
    ours_opt = make_optimizer([p], cfg)
    ours = _lrs(make_scheduler(ours_opt, cfg), ours_opt, warmup + steps)

    q = torch.nn.Parameter(torch.zeros(2))
    ref_opt = torch.optim.AdamW([q], lr=lr)
    ref_sched = torch.optim.lr_scheduler.SequentialLR(
        ref_opt, [torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda s: min((s + 1) / warmup, 1)),
                  torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=steps, eta_min=lr_min)],
        milestones=[warmup])
    ref = _lrs(ref_sched, ref_opt, warmup + steps)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-12)
    assert ours[warmup] == pytest.approx(lr) and ours[warmup + steps // 2] == pytest.approx((lr + lr_min) / 2)

    after = _lrs(make_scheduler(ours_opt, cfg), ours_opt, warmup + steps + 10)[-10:]
    assert after == pytest.approx([lr_min] * 10)   # one cycle: it does not come back up


def test_constant_schedule_is_warmup_then_flat():
    cfg = TrainConfig(steps=50, warmup_steps=4, lr=2e-4, batch_size=4)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([p], cfg)
    assert _lrs(make_scheduler(opt, cfg), opt, 8) == pytest.approx([5e-5, 1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4, 2e-4, 2e-4])


def test_cosine_floor_above_lr_is_rejected_naming_the_keys():
    with pytest.raises(ValueError, match=r"train.lr_min \(0.01\) is above train.lr"):
        TrainConfig(lr=1e-3, lr_min=1e-2, lr_schedule="cosine")


def test_cosine_with_an_online_phase_is_rejected():
    raw = {"data": {"source": "lamo/mujoco/hopper-medium-v0"}, "model": {"action_head": "deterministic"},
           "train": {"lr_schedule": "cosine"}, "online": {"method": "td3", "iterations": 2, "target_return": 3600}}
    with pytest.raises(ValueError, match="online: needs train.lr_schedule 'constant'"):
        validate_trial(raw)
