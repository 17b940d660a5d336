"""LaMo's paper-scale sweeps as LaMo's code runs them (issue 28, L1-L4): each test reads the real code
path (the resolved sweep, the scheduler, the env a trial evaluates on) against srzer/LaMo-2023 at 3e4fcc8."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lamo_ray.config import TrainConfig, expand_trials, load_sweep
from lamo_ray.optim import make_optimizer, make_scheduler

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def _trials(name: str) -> list:
    return [row["config"] for row in expand_trials(load_sweep(SWEEPS / name))]


# --------------------------------------------------------------------------- L1: Atari's lr schedule


class _TheirCustomLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """LaMo's ``experiment-atari/core.py:24-44`` ``CustomLRScheduler``, line for line (not imported)."""

    def __init__(self, optimizer, warmup_tokens, final_tokens, last_epoch=-1):
        self.tokens = 0
        self.warmup_tokens = warmup_tokens
        self.final_tokens = final_tokens
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.tokens < self.warmup_tokens:
            lr_mult = float(self.tokens) / float(max(1, self.warmup_tokens))
        else:
            progress = float(self.tokens - self.warmup_tokens) / float(max(1, self.final_tokens - self.warmup_tokens))
            lr_mult = max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return [lr * lr_mult for lr in self.base_lrs]

    def step(self, tokens=None):
        if tokens is not None:
            self.tokens += tokens
        super().step()


def test_lamo_atari_schedule_is_their_double_counted_token_schedule():
    """srzer/LaMo-2023 ``experiment-atari/core.py``: the loop keeps ``tokens = 0`` (:139), and after each
    ``optimizer.step()`` does ``tokens += (actions > 0).sum()`` and ``scheduler.step(tokens)`` (:169-171),
    whose ``step`` adds the running total to its own count again (:41-44); warm-up 375e6 and final 260e9
    (``cfgs/config.yaml:26-27``), lr 1e-3 (``run.sh:18``). Fed the same non-NOOP counts, ours gives the
    same lr at every step: 0 for the first, warm-up over ~500 steps (not the whole run), the 0.1 floor
    before 15k steps, back up to the full lr and down again, more and more often. Fails before issue 28:
    ``train.lr_schedule`` had no 'lamo_atari'."""
    steps, lr = 100_000, 1e-3
    counts = np.random.default_rng(0).integers(2500, 3500, size=steps)   # non-NOOP actions of 128 x 30
    cfg = TrainConfig(lr=lr, weight_decay=0.01, adam_eps=1e-8, lr_schedule="lamo_atari", batch_size=128)
    p = torch.nn.Parameter(torch.zeros(1))
    ours_opt = make_optimizer([p], cfg)
    ours = make_scheduler(ours_opt, cfg)
    q = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.AdamW([q], lr=lr, weight_decay=0.01)
    ref = _TheirCustomLRScheduler(ref_opt, 375e6, 260e9)
    ours_lr, ref_lr = np.empty(steps), np.empty(steps)
    tokens = 0
    for i, n in enumerate(counts):
        ours_lr[i], ref_lr[i] = ours_opt.param_groups[0]["lr"], ref_opt.param_groups[0]["lr"]
        ours_opt.step()
        ref_opt.step()
        ours.step(int(n))
        tokens += int(n)
        ref.step(tokens)
    np.testing.assert_allclose(ours_lr, ref_lr, rtol=1e-12, atol=0)
    assert ours_lr[0] == 0.0
    warmed = int(np.argmax(ours_lr >= lr * 0.999))
    assert 300 < warmed < 800                       # a linear ramp over the whole run would end at 100k
    floor = int(np.argmax((ours_lr <= lr * 0.1 + 1e-15) & (np.arange(steps) > warmed)))
    assert 9_000 < floor < 15_000
    back_up = np.flatnonzero((ours_lr[1:] >= 0.999 * lr) & (ours_lr[:-1] < 0.999 * lr)) + 1
    back_up = back_up[back_up > floor]
    assert len(back_up) > 10    # cycles between 0.1 and 1 after the floor
    assert np.diff(back_up)[-1] < np.diff(back_up)[0] / 2   # ... ever faster: the count is quadratic


def test_lamo_atari_schedule_survives_a_checkpoint_and_refuses_an_uncounted_step():
    """The counts are scheduler state (resumed trials continue the same schedule); a loop that does not
    count actions (e.g. the continual runner) gets a clear error, not a learning rate stuck at 0."""
    cfg = TrainConfig(lr=1e-3, lr_schedule="lamo_atari", batch_size=128)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([p], cfg)
    sched = make_scheduler(opt, cfg)
    for _ in range(300):
        opt.step()
        sched.step(3000)
    restored_opt = make_optimizer([p], cfg)
    restored = make_scheduler(restored_opt, cfg)
    restored.load_state_dict(sched.state_dict())
    opt.step()
    sched.step(3000)
    restored_opt.step()
    restored.step(3000)
    assert restored.get_last_lr() == sched.get_last_lr() and 0 < sched.get_last_lr()[0] < 1e-3
    with pytest.raises(ValueError, match="lamo_atari.*non-NOOP"):
        sched.step()


def test_lamo_atari_schedule_in_a_continual_trial_is_refused_when_the_config_is_read():
    """A continual trial's runner steps its scheduler without action counts: the sweep file is refused
    before any compute, naming the key (before: the first scheduler step raised, after pre-training began)."""
    from lamo_ray.config import load_sweep

    with pytest.raises(ValueError, match="train.lr_schedule 'lamo_atari'.*continual"):
        load_sweep(SWEEPS / "l2m_local.yaml", overrides=["train.lr_schedule=lamo_atari"])


def test_non_noop_actions_counts_real_actions_above_zero():
    """LaMo's count, ``(actions > 0).sum()`` on the batch (``experiment-atari/core.py:170``): NOOP (0) and
    our pads (0) are not counted."""
    from lamo_ray.train import non_noop_actions

    actions = torch.tensor([[0, 1, 3, 0], [2, 2, 0, 0]])   # (B, K), pads 0
    assert non_noop_actions(actions) == 4


def test_atari_sweep_uses_lamos_schedule():
    """``sweeps/atari.yaml``: every trial (LaMo and DT arms) runs LaMo's token-counted schedule
    (``experiment-atari/core.py:113``: one ``CustomLRScheduler`` for every model). Fails before issue 28:
    a linear warm-up over 130k steps."""
    assert {c.train.lr_schedule for c in _trials("atari.yaml")} == {"lamo_atari"}


# --------------------------------------------------------------------------- L2: Atari trains without dropout


def test_atari_sweep_trains_without_dropout_as_their_code():
    """srzer/LaMo-2023 ``experiment-atari``: the LaMo trunk comes from ``GPT2LMHeadModel.from_pretrained``
    (``model.py:91``), which returns it in eval mode, and the loop never calls ``model.train()``; ``eval``
    calls ``model.eval()`` (``core.py:49``) every 200 steps (``cfgs/config.yaml:24``), so the randomly
    initialised DT baseline (``model.py:181-187``) loses its dropout at step 200 of 100k. peft's LoRA
    dropout is 0 (``model.py:120``). Every trial of ``sweeps/atari.yaml`` builds a model with no dropout
    left (built here without weights from GPT-2 small's config: the same modules). Fails before issue 28:
    dropout 0.1."""
    import transformers

    from lamo_ray.model import DecisionTransformer

    trials = _trials("atari.yaml")
    assert {(c.model.dropout, c.model.lora.dropout) for c in trials} == {(0.0, 0.0)}
    for variant in ("lamo", "dt"):
        cfg = next(c for row, c in zip(expand_trials(load_sweep(SWEEPS / "atari.yaml")), trials)
                   if row["variant"] == variant)
        model = DecisionTransformer(cfg.model, (4, 84, 84), 4, cfg.data.max_ep_len, discrete_actions=True,
                                    load_weights=False, backbone_config=transformers.GPT2Config().to_dict())
        rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        assert rates <= {0.0}, (variant, rates)


# --------------------------------------------------------------------------- L3: Walker2d's physics


def _foot_friction(env) -> dict[str, float]:
    import mujoco

    model = env.unwrapped.model
    names = {i: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) for i in range(model.ngeom)}
    return {name: float(model.geom_friction[i][0]) for i, name in names.items() if name and "foot" in name}


def test_d4rl_walker2d_task_evaluates_on_the_datas_physics(tmp_path):
    """D4RL's walker2d-*-v2 data were recorded on Walker2d-v3, whose model (gymnasium's ``walker2d.xml``,
    as v2-v4) has right-foot friction 0.9 and left 1.9; Walker2d-v5's default ``walker2d_v5.xml`` has 1.9 on
    both (gymnasium ``walker2d_v5.py`` version history). LaMo evaluates on the data's env
    (srzer/LaMo-2023 ``experiment-d4rl/experiment.py:65``: ``gym.make("walker2d-medium-v2")``, D4RL's env on
    gym's ``walker2d.xml``). ``sweeps/mujoco.yaml``'s walker2d task,
    with a D4RL-format file of that name, builds its evaluation env (kwargs as ``lamo_ray.train`` computes
    them) on the v2-v4 model; data recorded on Walker2d-v5 itself keep v5's. Fails before issue 28: 1.9."""
    import h5py

    from lamo_ray.data.loading import load_dataset
    from lamo_ray.envs import evaluation_env_kwargs, make_env

    cfg = next(c for c in _trials("mujoco.yaml") if c.task == "walker2d")
    assert cfg.eval.env_id == "Walker2d-v5" and Path(cfg.data.source).name == "walker2d-medium-v2.hdf5"
    path = tmp_path / Path(cfg.data.source).name
    n = 50
    with h5py.File(path, "w") as f:   # D4RL's keys, no env id (as D4RL's files)
        f["observations"] = np.zeros((n, 17), np.float32)
        f["actions"] = np.zeros((n, 6), np.float32)
        f["rewards"] = np.ones(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = np.arange(n) == n - 1
    ds = load_dataset(str(path))
    env_id = cfg.eval.env_id
    env = make_env(env_id, **evaluation_env_kwargs(env_id, ds.env_kwargs if env_id == ds.env_id else None))
    assert _foot_friction(env) == {"foot_geom": 0.9, "foot_left_geom": 1.9}
    env.close()
    v5_data = make_env(env_id, **evaluation_env_kwargs(env_id, {}))   # e.g. Minari's mujoco/walker2d/*-v0
    assert _foot_friction(v5_data) == {"foot_geom": 1.9, "foot_left_geom": 1.9}
    v5_data.close()


# --------------------------------------------------------------------------- L4: precision


@pytest.mark.parametrize("sweep", ["kitchen.yaml", "mujoco.yaml", "atari.yaml"])
def test_paper_scale_sweeps_train_in_fp32_on_gpus_with_bf16_one_key_away(sweep):
    """LaMo trains in fp32: srzer/LaMo-2023 ``experiment-d4rl/run.sh:29-49`` passes no ``--fp16``
    (``experiment.py:477``, default False) and ``SequenceTrainer.train_step`` (``seq_trainer.py:8-56``) has
    no autocast; ``experiment-atari/core.py:149-171`` none either. Every trial of the paper-scale sweeps
    resolves to fp32 on a CUDA device, and ``--set train.precision=bf16`` gives bf16. Fails before issue 28:
    ``train.precision: auto``, bf16 on a GPU."""
    from lamo_ray.train import MixedPrecision

    cuda = torch.device("cuda")
    assert {MixedPrecision.for_device(c.train.precision, cuda).name for c in _trials(sweep)} == {"fp32"}
    bf16 = [row["config"] for row in expand_trials(load_sweep(SWEEPS / sweep, ["train.precision=bf16"]))]
    assert {MixedPrecision.for_device(c.train.precision, cuda).name for c in bf16} == {"bf16"}
