"""The training optimiser, precision and learning-rate schedule shared by every trial kind (`lamo_ray.train`,
`lamo_ray.online`, `lamo_ray.continual.runner`): `MixedPrecision` (``train.precision`` on the trial's
device), LaMo's AdamW and linear warm-up (docs/references/lamo.md "Optimiser"), L2M's cosine decay after
it (docs/references/l2m.md "Hyperparameters"), and LaMo's Atari schedule
counted in non-NOOP actions (`NonNoopActionLR`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class MixedPrecision:
    """``train.precision`` resolved for one device: autocast around forward and loss, fp32 weights
    and optimiser state, a `torch.amp.GradScaler` for fp16 (dynamic loss scaling; steps whose
    gradients overflow are skipped by the scaler: `lamo_ray.learner.Learner` uses it). LaMo trains in fp32.

    Attributes:
        name: 'fp32', 'bf16' or 'fp16'.
        device_type: 'cpu' or 'cuda' (autocast's device).
        scaler: the fp16 loss scaler, else None.
    """

    name: str
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

    @classmethod
    def for_device(cls, precision: str, device: torch.device) -> "MixedPrecision":
        """Resolve ``precision`` ('auto', 'fp32', 'bf16', 'fp16') for ``device``: 'auto' is bf16 on a
        CUDA GPU that supports it, fp16 on other CUDA GPUs, fp32 elsewhere.

        Raises:
            ValueError: an unknown precision name.
        """
        if precision == "auto":
            if device.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "fp32"
        if precision not in ("fp32", *cls.DTYPES):
            raise ValueError(f"train.precision: unknown precision {precision!r}; expected auto, fp32, bf16 or fp16")
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        return cls(precision, device.type, scaler)

    def autocast(self):
        """Context for forward and loss: ``torch.autocast`` in bf16/fp16, a no-op for fp32."""
        return torch.autocast(self.device_type, dtype=self.DTYPES.get(self.name, torch.float32),
                              enabled=self.name != "fp32")


def warmup_lambda(warmup_steps: int):
    """LR multiplier: linear warm-up over ``warmup_steps`` then constant (LaMo / DT)."""
    return lambda step: min(1.0, (step + 1) / max(1, warmup_steps))


def cosine_lambda(warmup_steps: int, steps: int, lr: float, lr_min: float):
    """LR multiplier: linear warm-up over ``warmup_steps``, then one cosine cycle from 1 down to
    ``lr_min / lr`` over ``steps`` further steps, then ``lr_min / lr``.

    L2M's pre-training schedule (ml-jku/L2M ``decision_transformer_sb3.py``: ``SequentialLR`` of the
    warm-up ``LambdaLR`` and ``CosineAnnealingLRSingleCycle(T_max=total steps, eta_min=1e-6)`` with the
    milestone at the warm-up's end), in closed form: the cycle starts where the warm-up ends and has
    the length of the whole run, so a run ends part-way down it, as L2M's does.
    """
    floor = lr_min / lr

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = step - warmup_steps
        if t >= steps:
            return floor
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / steps))

    return factor


#: Online DT's temperature optimiser: Adam, lr 1e-4, default eps, no weight decay, no warm-up
TEMPERATURE_GROUP = {"lr": 1e-4, "weight_decay": 0.0, "eps": 1e-8}
#: a param-group flag: `make_scheduler` leaves that group's lr constant
CONSTANT_LR = "constant_lr"
#: the modules whose ``weight`` L2M decays (minGPT's whitelist; GPT-2's ``Conv1D`` is a Linear)
DECAYED_MODULES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)


def l2m_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters of ``model`` in L2M's two AdamW groups (ml-jku/L2M
    ``src/algos/models/online_decision_transformer_model.py:96-148`` ``get_optim_groups``, minGPT's):
    ``weight_decay`` on the ``weight`` of `DECAYED_MODULES`; none on everything else: biases, LayerNorm
    and Embedding weights, and parameters a module holds itself (L2M's pool keys and LoRA A / B, L2P's
    prompts: `lamo_ray.continual.pool`, `lamo_ray.continual.prompts`). L2M builds its optimiser from
    these in pre-training and at every task switch (``decision_transformer_sb3.py:277``, ``:1140``).

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": the rest, "weight_decay": 0.0}]``,
        each in name order; frozen parameters left out (a group may be empty).
    """
    decay, rest = {}, {}
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                full = f"{module_name}.{name}" if module_name else name
                wanted = name == "weight" and isinstance(module, DECAYED_MODULES)
                (decay if wanted else rest)[full] = p
    return [{"params": [decay[n] for n in sorted(decay)], "weight_decay": weight_decay},
            {"params": [rest[n] for n in sorted(rest)], "weight_decay": 0.0}]


def make_optimizer(params: list[torch.nn.Parameter], train_cfg,
                   temperature: list[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """The DT's optimiser, ``train_cfg.optimizer``:

    - 'adamw': AdamW with LaMo's lr, weight decay and eps (docs/references/lamo.md "Optimiser"), as torch's fused
      kernel (one pass over all parameters; CPU and CUDA). Same update as the default for-each AdamW, up
      to float rounding; measured 7.4x faster for 56M parameters on 2 CPU threads (142 -> 19 ms a step).
    - 'lamb': LAMB as the ODT-TD3 authors' (`lamb`).

    ``params``: parameters, or param groups (dicts, e.g. `l2m_param_groups`); ``temperature``: ODT's
    log-temperature, in a last group with `TEMPERATURE_GROUP`'s settings and a constant lr."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    if temperature:
        groups.append({"params": list(temperature), **TEMPERATURE_GROUP, CONSTANT_LR: True})
    if train_cfg.optimizer == "lamb":
        return lamb(groups, train_cfg.lr, train_cfg.weight_decay, train_cfg.adam_eps)
    return torch.optim.AdamW(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, eps=train_cfg.adam_eps,
                             fused=True)


_LAMB: type | None = None


def lamb(groups: list[dict], lr: float, weight_decay: float, eps: float) -> torch.optim.Optimizer:
    """LAMB as the ODT-TD3 authors run it (their ``lamb.py``, Ross Wightman's timm ``Lamb``, NVIDIA's
    FusedLAMB: lines 145-190), from pytorch-optimizer's ``Lamb``: per parameter tensor the Adam direction
    ``m / (sqrt(v) + eps)`` plus ``weight_decay x p`` (coupled into the update, their line 170), scaled by
    the trust ratio ``||p|| / ||update||`` (1 where either norm is 0, lines 174-181), so each tensor
    moves by ``lr x ||p||``. Settings that make pytorch-optimizer's update theirs:

    - ``weight_decouple=False``: decay added to the update before the trust ratio (line 170);
    - ``adam_debias=True``: no extra ``1 / (1 - beta1^t)`` on the step (their bias corrections sit inside
      the update, which the trust ratio normalises away);
    - no cap on ``||p||`` (pytorch-optimizer caps it at 10 by default; theirs has none: a 512 x 2048
      GPT-2 MLP weight has norm ~20 at init).

    What stays different: their bias corrections also set the relative weight of the decay and eps
    terms inside the update (a relative difference of about ``weight_decay x ||p|| / ||adam
    direction||`` early on: ~1e-6 at their settings), and their internal global clip at 1.0 (a no-op
    after the trainer's clip at 0.25, which we apply too). A group flagged `CONSTANT_LR` (ODT's
    temperature, which the authors step with a separate Adam) gets Adam's direction without the trust
    ratio; its second moment is not bias-corrected (early steps smaller than Adam's: x0.03 at the
    first, x0.8 at the 1000th), named in docs/differences.md.

    Raises:
        ValueError: a negative weight decay or lr (pytorch-optimizer's check).
    """
    global _LAMB
    if _LAMB is None:
        from pytorch_optimizer import Lamb

        class UnboundedLamb(Lamb):
            """pytorch-optimizer's Lamb without its cap on the weight norm (the authors' has none)."""

            clamp = math.inf

        _LAMB = UnboundedLamb
    for group in groups:
        if group.get(CONSTANT_LR):
            group.update(adam=True, adam_debias=False)
        else:
            group.setdefault("adam_debias", True)
    return _LAMB(groups, lr=lr, weight_decay=weight_decay, eps=eps, weight_decouple=False)


#: LaMo's Atari schedule (srzer/LaMo-2023 ``experiment-atari/cfgs/config.yaml:26-27``, DT's Atari values):
#: warm-up and cosine lengths in the scheduler's own count (`NonNoopActionLR`)
LAMO_ATARI_WARMUP_TOKENS = 375e6
LAMO_ATARI_FINAL_TOKENS = 260e9


def lamo_atari_factor(count: float, warmup_tokens: float = LAMO_ATARI_WARMUP_TOKENS,
                      final_tokens: float = LAMO_ATARI_FINAL_TOKENS) -> float:
    """LR multiplier of LaMo's Atari ``CustomLRScheduler.get_lr`` (``experiment-atari/core.py:31-39``) at
    scheduler count ``count``: ``count / warmup_tokens`` below ``warmup_tokens``, then
    ``max(0.1, 0.5 (1 + cos(pi progress)))`` with ``progress = (count - warmup) / (final - warmup)``,
    which is not capped at 1: past ``final_tokens`` the cosine comes back up, so the multiplier cycles
    between 0.1 and 1."""
    if count < warmup_tokens:
        return float(count) / float(max(1, warmup_tokens))
    progress = float(count - warmup_tokens) / float(max(1, final_tokens - warmup_tokens))
    return max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))


class NonNoopActionLR(torch.optim.lr_scheduler.LRScheduler):
    """LaMo's Atari learning-rate schedule as their code runs it (``train.lr_schedule: lamo_atari``).

    Their loop (``experiment-atari/core.py:139, 170-171``) adds each batch's non-NOOP actions
    (``(actions > 0).sum()``) to a running total ``tokens`` and calls ``scheduler.step(tokens)``, and
    ``CustomLRScheduler.step`` (``core.py:41-44``) adds that running total to its own count again. So the
    count after step k is the sum of the running totals, quadratic in k: with ~3000 non-NOOP actions per
    batch of 128 x 30 the warm-up ends after ~500 steps, the cosine reaches its 0.1 floor after ~12k
    steps, and from then on the multiplier cycles between 0.1 and 1 (`lamo_atari_factor`): back at 1
    after ~18k, 26k, 32k steps, ..., every ~2k steps near 100k. This class keeps both counts and gives
    the same multiplier for the same action counts.

    ``step(non_noop_actions)``: after each optimiser step, the number of actions with index > 0 in that
    step's global batch (all DDP workers; padding excluded). The lr of the first optimiser step is 0
    (count 0), as theirs. Groups made with ``CONSTANT_LR`` (ODT's temperature) keep their lr.

    Raises:
        ValueError: ``step()`` without the count after construction (a trial loop that does not count
            actions, e.g. the continual runner).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_tokens: float = LAMO_ATARI_WARMUP_TOKENS,
                 final_tokens: float = LAMO_ATARI_FINAL_TOKENS):
        self.warmup_tokens, self.final_tokens = warmup_tokens, final_tokens
        self.actions_seen = 0      # their core.train ``tokens``: non-NOOP actions so far
        self.count = 0             # their ``CustomLRScheduler.tokens``: the sum of the running totals
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = lamo_atari_factor(self.count, self.warmup_tokens, self.final_tokens)
        return [base if group.get(CONSTANT_LR) else base * factor
                for base, group in zip(self.base_lrs, self.optimizer.param_groups)]

    def step(self, non_noop_actions: int | None = None) -> None:
        if non_noop_actions is None:
            if self.last_epoch >= 0:  # construction calls step() once, with no count
                raise ValueError("train.lr_schedule 'lamo_atari' counts non-NOOP actions: step(n) needs each "
                                 "batch's count (only the offline trial loop, lamo_ray.train, feeds it)")
        else:
            self.actions_seen += int(non_noop_actions)
            self.count += self.actions_seen
        super().step()


def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg) -> torch.optim.lr_scheduler.LRScheduler:
    """Every group's schedule from ``train_cfg`` (the groups made with ``CONSTANT_LR``, ODT's temperature,
    keep their lr): linear warm-up (`warmup_lambda`), then constant, or with ``lr_schedule: cosine``
    `cosine_lambda` over ``train_cfg.steps``, or with ``lr_schedule: lamo_atari`` `NonNoopActionLR` (its
    ``step`` takes the batch's non-NOOP action count; ``warmup_steps`` unused)."""
    if train_cfg.lr_schedule == "lamo_atari":
        return NonNoopActionLR(optimizer)
    if train_cfg.lr_schedule == "cosine":
        first = cosine_lambda(train_cfg.warmup_steps, train_cfg.steps, train_cfg.lr, train_cfg.lr_min)
    else:
        first = warmup_lambda(train_cfg.warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [(lambda step: 1.0) if g.get(CONSTANT_LR) else first for g in optimizer.param_groups])
