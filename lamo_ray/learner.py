"""One optimiser step for every trial kind: offline DT, ODT and TD3+ODT's actor and critic, and every
continual method's pre-training and stages go through a `Learner` (issue 29's "one learner step").

A trial gives it what differs between them, its loss and its trainable parameters; the `Learner`
owns the rest:

- the device's autocast precision and the fp16 loss scaler (`lamo_ray.optim.MixedPrecision`);
- gradient accumulation: ``backward`` once per micro-batch between ``zero_grad`` and ``step``;
- data-parallel gradient averaging when the model is not wrapped in DDP (``average=True``:
  `lamo_ray.distributed.average_gradients`, after which a parameter no rank used keeps no gradient);
  a DDP-wrapped model averages during ``backward`` and the `Learner` adds nothing;
- the gradient-norm clip (on unscaled gradients), the optimiser step (skipped by the fp16 scaler when
  the gradients overflowed), the LR schedule (stepped ``schedule_steps`` times, or with a batch's
  non-NOOP action count for LaMo's Atari schedule `lamo_ray.optim.NonNoopActionLR`);
- the optimiser, schedule and scaler state in checkpoints (`state_dict`: the keys ``optimizer``,
  ``scheduler``, ``grad_scaler`` that checkpoints from before this class already hold).

Which step each trial kind takes, and the upstream code it follows:
offline DT (docs/references/lamo.md "Optimiser": AdamW, linear warm-up, clip 0.25, one batch a step);
continual pre-training (ml-jku/L2M ``src/algos/decision_transformer_sb3.py:835-862``: ``loss /
accumulation_steps`` per micro-batch, one clipped step, the schedule at every micro-batch), continual
stages (one batch a step, no schedule); the TD3 actor and ODT's updates (the ODT-TD3 authors'
``trainer.py:648-663`` ``actor_backward``: the DT's optimiser, the clip at 0.25 over the model's parameters,
the log-temperature stepped by its own optimiser after it, then the schedule) and the critic
(``trainer.py:665-668`` ``critic_backward``: no clip; ``main.py:134``: AdamW at ``critic_learning_rate``), in fp32.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from lamo_ray.distributed import average_gradients
from lamo_ray.optim import MixedPrecision, NonNoopActionLR, make_optimizer, make_scheduler


class Learner:
    """The optimiser step of one set of trainable parameters (module docstring).

    Args:
        optimizer: over the trainable parameters (its param groups are the parameters this learner
            clips, steps and, with ``average``, averages).
        precision: ``train.precision`` resolved for the trial's device.
        grad_clip: the gradient-norm clip (``train.grad_clip``), or None for none (the TD3 critic).
        scheduler: the LR schedule, or None (continual stages, the critic).
        world_size: data-parallel ranks (``train.num_workers``).
        average: average the gradients over the ``world_size`` ranks in `step` (a model not wrapped in
            DDP: continual trials, whose trainable set changes each phase); False when DDP's backward
            already did (offline trials under Ray Train) or with one rank.
        clipped: the parameters whose gradient norm ``grad_clip`` bounds; default every parameter of the
            optimiser. ODT's log-temperature is left out (the ODT-TD3 authors' ``trainer.py:651-660`` clip the
            model, then step the temperature with its own optimiser).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, precision: MixedPrecision, grad_clip: float | None = None,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, world_size: int = 1,
                 average: bool = False, clipped: Iterable[torch.nn.Parameter] | None = None):
        self.optimizer, self.precision, self.grad_clip = optimizer, precision, grad_clip
        self.clipped = None if clipped is None else list(clipped)
        self.scheduler, self.world_size, self.average = scheduler, world_size, average and world_size > 1
        self.counts_actions = isinstance(scheduler, NonNoopActionLR)

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter] | list[dict], train_cfg, precision: MixedPrecision, *,
              temperature: Iterable[torch.nn.Parameter] = (), schedule_cfg=None, scheduled: bool = True,
              world_size: int = 1, average: bool = False) -> "Learner":
        """The DT's learner from the trial's ``train`` section: `lamo_ray.optim.make_optimizer` over ``params``
        (parameters or param groups; ``temperature``: ODT's log-temperature group), `make_scheduler` from
        ``schedule_cfg`` (default ``train_cfg``; e.g. with ``steps`` counted in micro-batches) unless not
        ``scheduled``, the clip ``train_cfg.grad_clip`` over ``params`` (not ``temperature``)."""
        params = list(params)
        clipped = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
        optimizer = make_optimizer(params, train_cfg, list(temperature))
        scheduler = make_scheduler(optimizer, schedule_cfg or train_cfg) if scheduled else None
        return cls(optimizer, precision, train_cfg.grad_clip, scheduler, world_size, average,
                   clipped=clipped if temperature else None)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        """The parameters of every param group, in order."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @property
    def lr(self) -> float:
        """The first param group's current learning rate."""
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else self.optimizer.param_groups[0]["lr"]

    def autocast(self):
        """Context for forward and loss (`MixedPrecision.autocast`)."""
        return self.precision.autocast()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (fp16: scaled); once per micro-batch, each loss already divided by their
        number, to accumulate."""
        scaler = self.precision.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()

    def step(self, schedule_steps: int = 1, non_noop_actions: int | None = None) -> None:
        """Average the gradients over the ranks (``average``), unscale them (fp16), clip their norm at
        ``grad_clip``, step the optimiser (skipped by the fp16 scaler on overflow), then advance the
        schedule: ``schedule_steps`` times, or once with ``non_noop_actions`` for `NonNoopActionLR`.

        Raises:
            ValueError: `NonNoopActionLR` without ``non_noop_actions``.
        """
        params = self.params
        if self.average:
            average_gradients(params, self.world_size)
        scaler = self.precision.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params if self.clipped is None else self.clipped, self.grad_clip)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        if self.scheduler is None:
            return
        if self.counts_actions:
            if non_noop_actions is None:
                raise ValueError("train.lr_schedule 'lamo_atari' advances by the batch's non-NOOP action count: "
                                 "step(non_noop_actions=...) needs it")
            self.scheduler.step(non_noop_actions)
            return
        for _ in range(schedule_steps):
            self.scheduler.step()

    def update(self, loss: torch.Tensor, non_noop_actions: int | None = None) -> None:
        """One batch per step: `zero_grad`, `backward`, `step`."""
        self.zero_grad()
        self.backward(loss)
        self.step(non_noop_actions=non_noop_actions)

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer", "scheduler" (None without one), "grad_scaler" (fp16 only)}``."""
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                **({} if self.precision.scaler is None else {"grad_scaler": self.precision.scaler.state_dict()})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` (a scheduler or scaler state the saved run had and this one lacks is
        ignored; so is a saved run without one)."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler is not None and state.get("grad_scaler") is not None:
            self.precision.scaler.load_state_dict(state["grad_scaler"])
