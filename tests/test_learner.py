"""The one optimiser step (`lamo_ray.learner.Learner`, issue 29): what it owns (accumulation, clip, the
schedule, fp16 scaling, checkpoint state), and that every trial kind's optimiser steps are its steps.

The last test is the one that would fail if a trial loop stepped an optimiser of its own again: a global
optimiser-step hook records, for every step an offline, ODT, TD3+ODT and continual run takes, whether it
happened inside `Learner.step`."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from test_continual_runner import runner, shards  # noqa: F401 - shards: a fixture
from test_online_trial import online_trial, stand_ins  # noqa: F401 - stand_ins: a fixture
from test_train import fakes, session_on, trial  # noqa: F401 - fakes: a fixture

from lamo_ray import learner as learner_module
from lamo_ray import train
from lamo_ray.config import TrainConfig
from lamo_ray.learner import Learner
from lamo_ray.optim import MixedPrecision, NonNoopActionLR

CPU = torch.device("cpu")


def linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)


def mse(model, x, y):
    return (model(x) - y).pow(2).mean()


def test_micro_batches_accumulate_into_the_step_of_their_concatenated_batch():
    """Two micro-batches, each loss halved, then one step: the same update as one step on both together
    (a mean loss); the schedule advanced once per micro-batch when asked (L2M's pre-training)."""
    cfg = TrainConfig(lr=0.1, warmup_steps=4, grad_clip=1e9)
    x, y = data()
    one, two = linear(), linear()
    whole = Learner.build(one.parameters(), cfg, MixedPrecision.for_device("fp32", CPU))
    parts = Learner.build(two.parameters(), cfg, MixedPrecision.for_device("fp32", CPU))
    whole.update(mse(one, x, y))
    parts.zero_grad()
    for half in (slice(0, 4), slice(4, 8)):
        parts.backward(mse(two, x[half], y[half]) / 2)
    parts.step(schedule_steps=2)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q)
    assert whole.lr == pytest.approx(0.1 * 2 / 4) and parts.lr == pytest.approx(0.1 * 3 / 4)


def test_the_clip_bounds_the_dts_gradient_and_leaves_the_temperature_out():
    """``train.grad_clip`` bounds the norm of the DT's parameters' gradient; ODT's log-temperature, in the
    same optimiser, is outside the clip (Online DT steps it with its own Adam)."""
    model = linear()
    temperature = torch.nn.Parameter(torch.zeros(()))
    cfg = TrainConfig(lr=1e-3, grad_clip=0.25, warmup_steps=1)
    lrn = Learner.build(model.parameters(), cfg, MixedPrecision.for_device("fp32", CPU), temperature=[temperature])
    x, y = data()
    seen = {}
    lrn.optimizer.register_step_pre_hook(lambda opt, a, k: seen.update(
        dt=torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item(), t=temperature.grad.abs().item()))
    lrn.update(100 * mse(model, x, y) + 1000 * temperature)
    assert seen["dt"] == pytest.approx(0.25, rel=1e-5)
    assert seen["t"] == pytest.approx(1000.0)   # unclipped: with it in the clip it would be < 0.25


def test_lamo_ataris_schedule_needs_the_batchs_non_noop_count():
    model = linear()
    lrn = Learner.build(model.parameters(), TrainConfig(lr_schedule="lamo_atari"), MixedPrecision.for_device("fp32", CPU))
    assert isinstance(lrn.scheduler, NonNoopActionLR) and lrn.counts_actions
    x, y = data()
    with pytest.raises(ValueError, match="non-NOOP"):
        lrn.update(mse(model, x, y))
    lrn.update(mse(model, x, y), non_noop_actions=5)
    assert lrn.scheduler.actions_seen == 5


def test_the_state_holds_optimiser_schedule_and_fp16_scaler_and_a_restored_learner_continues_identically():
    """`state_dict` carries the keys checkpoints already use (``optimizer``, ``scheduler``, ``grad_scaler``
    with fp16 only); a learner restored from it takes the same next step as the one that saved it."""
    import warnings

    cfg = TrainConfig(lr=0.05, warmup_steps=3)
    x, y = data()
    with warnings.catch_warnings():   # no CUDA: the fp16 scaler's device warning
        warnings.simplefilter("ignore")
        fp16 = MixedPrecision.for_device("fp16", CPU)
        fp16b = MixedPrecision.for_device("fp16", CPU)
    a = linear()
    la = Learner.build(a.parameters(), cfg, fp16)
    for _ in range(2):
        la.update(mse(a, x, y))
    buffer = io.BytesIO()   # through a file, as checkpoints (the loaded optimiser would share tensors otherwise)
    torch.save(la.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "grad_scaler"}
    assert set(Learner.build(linear().parameters(), cfg, MixedPrecision.for_device("fp32", CPU)).state_dict()) \
        == {"optimizer", "scheduler"}
    b = linear(seed=5)
    b.load_state_dict(a.state_dict())
    lb = Learner.build(b.parameters(), cfg, fp16b)
    lb.load_state_dict(state)
    assert lb.scheduler.last_epoch == 2 and lb.precision.scaler.state_dict() == la.precision.scaler.state_dict()
    la.update(mse(a, x, y))
    lb.update(mse(b, x, y))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


@contextlib.contextmanager
def steps_recorded():
    """Record, for every optimiser step taken in the block, whether it ran inside `Learner.step`."""
    inside, record = [False], []
    real = Learner.step

    def step(self, *args, **kwargs):
        inside[0] = True
        try:
            return real(self, *args, **kwargs)
        finally:
            inside[0] = False

    handle = register_optimizer_step_pre_hook(lambda opt, a, k: record.append(inside[0]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(learner_module.Learner, "step", step)
        try:
            yield record
        finally:
            handle.remove()


def test_every_optimiser_step_of_offline_online_and_continual_runs_is_a_learner_step(tmp_path, fakes, stand_ins,
                                                                                      shards):  # noqa: F811
    """Offline DT (4 steps), ODT and TD3+ODT through the trial entry point (offline steps, then 2 online
    iterations: TD3's critic and actor steps too), and a continual run (pre-training and 3 stages, l2m and
    ewc): every optimiser step any of them takes is `Learner.step`'s. A loop that stepped its own
    optimiser would leave a False in the record."""
    runs = {}
    with steps_recorded() as record:
        train.train_loop_per_worker({"trial": trial(4, 2)}, session_on(CPU, tmp_path / "offline"))
        runs["offline"] = len(record)
        for method in ("odt", "td3_odt"):
            train.train_loop_per_worker({"trial": online_trial(method)}, session_on(CPU, tmp_path / method))
            runs[method] = len(record) - sum(runs.values())
        for method in ("l2m", "ewc"):
            runner(shards, method).run()
            runs[method] = len(record) - sum(runs.values())
    assert record and all(record), runs
    # 4 offline steps; ODT: 4 + 2 x 3 updates; TD3+ODT: per step the critic's and the actor's (policy delay 2:
    # 2 critic + 1 actor per offline step), and 3 updates per online iteration; continual: 4 + 3 x 6 steps
    assert runs["offline"] == 4 and runs["odt"] == 4 + 2 * 3
    assert runs["td3_odt"] > 4 + 2 * 3 and runs["l2m"] == runs["ewc"] == 4 + 3 * 6
