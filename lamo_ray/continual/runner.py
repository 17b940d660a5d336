"""One continual run of L2M's protocol (docs/references/l2m.md "Continual World protocol"), in one process:
multi-task pre-training of a `lamo_ray.mddt.MultiDomainDecisionTransformer`, then one stage per task
of the sequence, each trained on that task's data only, with every evaluated task scored every
``eval_every`` steps and at each stage's end.

Methods (``continual.method``; each a class of `lamo_ray.continual.methods`, the runner's loop shared by all):

- ``ft``: the whole model (the backbone's unused token table aside) fine-tuned at every stage;
- ``lora``: one modulator (`lamo_ray.continual.pool` with a pool of one) trained through every stage,
  the pre-trained model frozen: a single LoRA in L2M's placement (q, v, c_fc output);
- ``l2m``: the pool of ``continual.pool.size`` modulators selected per sample by its keys, with the
  count penalty from the second stage and the key pull term;
- ``l2m_oracle``: L2M's task mask: the pool split into one group of ``size // len(tasks)`` modulators
  per task (`lamo_ray.continual.pool.oracle_groups`), the keys selecting within the group of the task
  id, trained as ``l2m``'s (key pull term, count penalty from the second stage); an evaluated task outside the sequence gets the remainder group, which no stage trained (B = 0:
  the pre-trained model).
- ``l2p``: L2P's prompt pool (`lamo_ray.continual.prompts`): ``continual.prompt_pool.size`` prompts,
  the ``top_k`` chosen per sample by their keys prepended to every layer's input, the count penalty
  from the second stage and the key pull term; the model frozen.
- ``ewc`` / ``l2``: ``ft`` plus, from the second stage, ``penalty x sum_i F_i (theta_i - theta*_i)^2``
  over the trainable weights, ``theta*`` the weights at the end of the previous stage and ``F`` the
  mean squared gradient of the loss over ``fisher_batches`` batches of that stage's data (``ewc``,
  Kirkpatrick et al. 2017) or 1 (``l2``). As L2M's ``UDTWithEWC`` (ewc_mode "separate" without
  keep_importance_data, which keeps only the last stage's weights): one anchor, the previous stage's.
- ``single``: the single-task reference of forward transfer (Continual World): every stage starts
  again from the pre-trained weights and trains the whole model on its task alone, so its stage
  AUCs are each task learned without the sequence before it.
- ``joint``: the upper bound: every stage trains the whole model on all the sequence's tasks, batches
  mixed uniformly across them (Continual World's multi-task baseline), with the same steps and
  evaluations as the sequential methods, so its success matrix reads as training progress.

The pre-training follows ``train`` (lr with its linear warm-up, weight decay, eps, clip, batch, and
``grad_accumulation`` micro-batches per optimiser step, the schedule counted in micro-batches, as
L2M's); the stages use ``continual.lr`` constant (L2M), a fresh AdamW per stage, the same clip and
batch, one batch per step. In every
phase the weight decay falls only on Linear / Conv weights, as L2M's optimiser groups
(`lamo_ray.optim.l2m_param_groups`): a modulator, key or prompt no sample selects keeps its weights.
`ContinualRunner.run` calls back after every evaluation with the new `Evaluation` and the runner, so
the caller logs, checkpoints (`state_dict`) and reports; `load_state_dict` resumes after the last
evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lamo_ray.config import ContinualConfig, TrainConfig
from lamo_ray.continual.methods import make_method
from lamo_ray.continual.metrics import Evaluation
from lamo_ray.distributed import (average_gradients, broadcast_module, broadcast_object, ddp_mean, ddp_share,
                                  sum_increments)
from lamo_ray.learner import Learner
from lamo_ray.optim import MixedPrecision

log = logging.getLogger(__name__)

PRETRAIN = -1   # the stage index of multi-task pre-training

#: a batch source: ``sample(batch_size) -> dict`` as `lamo_ray.data.shards.ShardedSampler`
Sampler = Any
#: ``evaluate(model, tasks, task_index) -> {task: success rate}``; ``task_index(task)`` gives the
#: oracle's modulator for a task (None for the other methods)
Evaluate = Callable[[torch.nn.Module, Sequence[str], Callable[[str], int | None]], dict[str, float]]


class ContinualRunner:
    """Pre-training plus the continual stages of one model (module docstring).

    Args:
        model: the MDDT, freshly built (pre-training trains all of it).
        cfg: the ``continual`` settings.
        train: the pre-training's steps (``train.steps``) and optimiser settings.
        sampler_for: ``sampler_for(tasks, seed)``: a sampler mixing those tasks' data.
        evaluate: see `Evaluate`.
        seed: seeds the samplers (per phase) and torch.
        device: where the model trains (the trial session's device); the model is moved there.
        precision: ``train.precision`` resolved for ``device`` (`lamo_ray.optim.MixedPrecision`); default
            ``MixedPrecision.for_device(train.precision, device)``.
        rank, world_size: this worker of ``train.num_workers`` data-parallel ones (a torch.distributed
            group, as Ray Train starts). Every rank runs the whole loop in step: each draws
            ``train.batch_size / world_size`` samples per micro-batch from its own sampler seed, the
            gradients are averaged (`lamo_ray.distributed.average_gradients`, each rank's loss weighted
            by its share of the batch's action tokens, so a step equals one worker's on the concatenated
            batch), the pool's selection counts summed, EWC's Fisher taken from those averaged
            gradients; rank 0 evaluates and every rank records its result.
    """

    def __init__(self, model: torch.nn.Module, cfg: ContinualConfig, train: TrainConfig,
                 sampler_for: Callable[[Sequence[str], Any], Sampler], evaluate: Evaluate, seed: int = 0,
                 device: str | torch.device = "cpu", precision: MixedPrecision | None = None,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size or train.batch_size % world_size:
            raise ValueError(f"rank {rank} of {world_size} workers: need 0 <= rank < world_size and "
                             f"train.batch_size ({train.batch_size}) divisible by world_size")
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.model, self.cfg, self.train = model.to(self.device), cfg, train
        self.sampler_for, self.evaluate, self.seed = sampler_for, evaluate, seed
        self.precision = precision or MixedPrecision.for_device(train.precision, self.device)
        self.history: list[Evaluation] = []
        self.stage = PRETRAIN          # the phase in progress (or the next to start)
        self.step = 0                  # global step over pre-training and stages
        self.stage_step = 0            # steps done in the phase in progress
        self.learner: Learner | None = None   # the phase's optimiser step (None between phases)
        self._pool_attached = False
        self.method = make_method(cfg)   # what the continual method adds (lamo_ray.continual.methods)

    # ------------------------------------------------------------------ methods

    def task_index(self, task: str) -> int | None:
        """The task-id oracle's index of ``task`` (`lamo_ray.continual.methods.ContinualMethod.task_index`):
        its place in the sequence for ``l2m_oracle`` (the remainder group for a task outside it), 0 for
        ``lora``'s single modulator, None otherwise (the keys select over the whole pool, or no pool)."""
        return self.method.task_index(task)

    def _attach(self) -> None:
        """After pre-training: the method's trainable parameters (its pool, the model frozen), if it has any."""
        if self._pool_attached:
            return
        pool = self.method.make_pool(self.model)
        if pool is None:
            return
        self.model.attach_pool(pool.to(self.device))
        self._pool_attached = True

    def _begin_phase(self) -> None:
        """The learner (and pool state) of the phase ``self.stage``: L2M's AdamW groups over what trains in
        it, gradients averaged over the ranks (`lamo_ray.learner.Learner` with ``average``)."""
        from lamo_ray.optim import l2m_param_groups

        torch.manual_seed(self.seed * 1000 + self.stage + 1)
        parallel = {"world_size": self.world_size, "average": True}
        if self.stage == PRETRAIN:
            # stepped once per micro-batch (L2M): the schedule spans train.steps x grad_accumulation of them
            micro = self.train.model_copy(update={"steps": self.train.steps * self.train.grad_accumulation})
            self.learner = Learner.build(l2m_param_groups(self.model, self.train.weight_decay), self.train,
                                         self.precision, schedule_cfg=micro, **parallel)
        else:
            self._attach()
            self.method.start_stage(self, resumed=self.stage_step > 0)
            stage = self.train.model_copy(update={"lr": self.cfg.lr})
            self.learner = Learner.build(l2m_param_groups(self.model, self.train.weight_decay), stage,
                                         self.precision, scheduled=False, **parallel)
        if self.world_size > 1:   # every rank starts the phase from rank 0's weights (as DDP's wrapping), and
            broadcast_module(self.model, self.world_size)   # draws its own dropout masks
            torch.manual_seed(self.seed * 1000 + self.stage + 1 + 1_000_003 * self.rank)

    def _phase_tasks(self) -> list[str]:
        if self.stage == PRETRAIN:
            return self.cfg.pretrain_sources
        return self.method.stage_tasks(self.stage)

    def _phase_steps(self) -> int:
        return self.train.steps if self.stage == PRETRAIN else self.cfg.steps_per_task

    # ------------------------------------------------------------------ training

    def batch(self, sampler: Sampler) -> dict[str, torch.Tensor]:
        """This rank's part of a batch: ``train.batch_size / world_size`` samples of ``sampler``, on the device."""
        size = self.train.batch_size // self.world_size
        return {k: torch.as_tensor(v, device=self.device) for k, v in sampler.sample(size).items()}

    def share(self, batch: dict[str, torch.Tensor], action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The factor of this rank's masked-mean action loss on ``batch`` that makes the averaged gradient
        the whole batch's (`lamo_ray.distributed.ddp_share`); 1 with one worker."""
        return ddp_share(self.model.loss_weight(batch["actions"], batch["attention_mask"], action_mask),
                         self.world_size)

    def reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average ``params``' gradients over the ranks (`lamo_ray.distributed.average_gradients`), as the
        phase's `Learner` does at its step; for gradients taken outside it (EWC's Fisher)."""
        average_gradients(params, self.world_size)

    def _counters(self) -> list[torch.Tensor]:
        """The selection counts a training pass advances (a keyed pool's), summed over the ranks per step."""
        from lamo_ray.pools.modulation import KeyedPool

        return [m.counts for m in self.model.modules() if isinstance(m, KeyedPool)]

    def _loss(self, sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
        """What one batch of ``sampler`` adds to the minimised loss, and its action cross-entropy (each this
        rank's share, `share`, with several workers)."""
        batch = self.batch(sampler)
        task = None
        index = self.task_index(self.cfg.tasks[self.stage]) if self.stage != PRETRAIN else None
        if index is not None:
            task = torch.full((len(batch["task"]),), index, dtype=torch.long, device=self.device)
        with self.learner.autocast():
            logits = self.model(batch["states"], batch["actions"], batch["returns_to_go"], batch["rewards"],
                                batch["timesteps"], batch["attention_mask"], task=task)
            loss = action_loss = self.model.loss(logits, batch["actions"], batch["attention_mask"],
                                                 batch["action_mask"])
            if self.world_size > 1:
                loss = action_loss = action_loss * self.share(batch, batch["action_mask"])
            extra = self.method.loss_terms(self) if self.stage != PRETRAIN else None
            if extra is not None:   # the method's own terms: EWC / L2 penalty, the key pull term
                loss = loss + extra
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step} (stage {self.stage})")
        return loss, action_loss

    def _train_step(self, sampler: Sampler) -> tuple[float, float]:
        """One optimiser step; returns its (loss, action loss), means over its micro-batches.

        In pre-training, ``train.grad_accumulation`` micro-batches of ``train.batch_size``, each loss
        divided by their number and backpropagated in turn, then one clipped step, and the lr schedule
        advanced once per micro-batch (ml-jku/L2M ``src/algos/decision_transformer_sb3.py:835-862``:
        ``loss / accumulation_steps``, the optimiser step every ``accumulation_steps`` updates, the
        schedulers at every one). A stage takes one batch per step, as L2M's continual runs. With several
        workers the logged values are the whole batch's (means over the ranks of their shares)."""
        micro = self.train.grad_accumulation if self.stage == PRETRAIN else 1
        self.model.train()
        self.learner.zero_grad()
        counters = self._counters() if self.world_size > 1 else []
        before = [c.clone() for c in counters]
        total = action = 0.0
        for _ in range(micro):
            loss, action_loss = self._loss(sampler)
            self.learner.backward(loss / micro)
            loss, action_loss = ddp_mean(loss, self.world_size), ddp_mean(action_loss, self.world_size)
            total, action = total + loss.item() / micro, action + action_loss.item() / micro
        sum_increments(counters, before, self.world_size)
        self.learner.step(schedule_steps=micro)   # averaged over the ranks, clipped, the schedule per micro-batch
        return total, action

    def _evaluate(self, stage: int) -> Evaluation:
        self.model.eval()
        success = self.evaluate(self.model, self.cfg.evaluated, self.task_index) if self.rank == 0 else None
        success = broadcast_object(success, self.world_size, self.device)   # rank 0's rollouts, on every rank
        missing = [t for t in self.cfg.evaluated if t not in success]
        if missing:
            raise ValueError(f"evaluate returned no success rate for {missing}")
        record = Evaluation(stage=stage, step=self.step, success={t: float(success[t]) for t in self.cfg.evaluated})
        self.history.append(record)
        return record

    def phase_name(self) -> str:
        """The phase in progress in words: ``pre-training`` or ``stage 2 (window-close)``."""
        if self.stage == PRETRAIN:
            return "pre-training"
        return f"stage {self.stage + 1} ({self.cfg.tasks[self.stage]})"

    def run(self, on_evaluation: Callable[[Evaluation, "ContinualRunner"], None] | None = None,
            on_log: Callable[[int, dict[str, float]], None] | None = None, log_every: int = 100,
            on_phase: Callable[[str], None] | None = None) -> list[Evaluation]:
        """Pre-training (evaluated once at its end), then every stage (evaluated every ``eval_every``
        steps and at its end), from where `load_state_dict` left off. Returns the continual stages'
        evaluations (the pre-training one has stage -1 and is left out: `lamo_ray.continual.metrics`
        takes the rest). ``on_phase(name)`` hears where the run is: a phase's start (its optimiser, a
        stage's pool attach and penalty anchor), its steps, its evaluations."""
        say = on_phase or (lambda name: None)
        while self.stage < len(self.cfg.tasks):
            if self.learner is None:
                say(f"{self.phase_name()}: start")
                self._begin_phase()
            say(self.phase_name())
            # each rank its own samples (rank 0's seed is one worker's)
            sampler = self.sampler_for(self._phase_tasks(), [self.seed, self.stage + 1, self.stage_step]
                                       + ([self.rank] if self.rank else []))
            steps = self._phase_steps()
            losses, seconds = [], []
            while self.stage_step < steps:
                t0 = time.perf_counter()
                losses.append(self._train_step(sampler))
                seconds.append(time.perf_counter() - t0)
                self.step += 1
                self.stage_step += 1
                if on_log is not None and self.step % log_every == 0:
                    total, action = np.mean(losses[-log_every:], axis=0)
                    # the action tokens' cross-entropy, and what was minimised: plus the EWC / L2 penalty or
                    # the key pull term of the method; and the wall seconds per step over the window
                    on_log(self.step, {"train/action_loss": float(action), "train/loss": float(total),
                                       "train/step_s": float(np.mean(seconds[-log_every:])),
                                       "continual/stage": float(self.stage)})
                end = self.stage_step == steps
                if end or (self.stage != PRETRAIN and self.stage_step % self.cfg.eval_every == 0):
                    stage = self.stage
                    if end and stage != PRETRAIN:
                        self.method.end_stage(self, sampler)
                    if end:   # the phase is done: the checkpoint taken in the callback resumes at the next one
                        self.stage, self.stage_step, self.learner = self.stage + 1, 0, None
                    say(f"evaluation at step {self.step}")
                    record = self._evaluate(stage)
                    if on_evaluation is not None:
                        on_evaluation(record, self)
                    if end:
                        break
        return [e for e in self.history if e.stage != PRETRAIN]

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue: model (pool included), optimiser, phase,
        steps, evaluations."""
        phase = {"optimizer": None, "scheduler": None, "grad_scaler": None}   # between phases: none
        if self.learner is not None:
            phase.update(self.learner.state_dict())
        elif self.precision.scaler is not None:
            phase["grad_scaler"] = self.precision.scaler.state_dict()
        return {"model": self.model.state_dict(), "pool_attached": self._pool_attached, **phase,
                "stage": self.stage, "step": self.step, "stage_step": self.stage_step,
                **self.method.state_dict(),   # ewc / l2: anchor, importance; single: pretrained
                "history": [(e.stage, e.step, dict(e.success)) for e in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` into this runner (built with the same model and settings)."""
        if state["pool_attached"]:
            self._attach()
        self.model.load_state_dict(state["model"])
        self.stage, self.step, self.stage_step = state["stage"], state["step"], state["stage_step"]
        self.method.load_state_dict(state, self.device)
        if self.precision.scaler is not None and state.get("grad_scaler") is not None:
            self.precision.scaler.load_state_dict(state["grad_scaler"])
        self.history = [Evaluation(s, t, succ) for s, t, succ in state["history"]]
        self.learner = None
        if state["optimizer"] is not None:
            self._begin_phase()
            self.learner.load_state_dict(state)
