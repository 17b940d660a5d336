"""The continual methods (``continual.method``), one small class each: what a method adds to the shared
stage loop of `lamo_ray.continual.runner.ContinualRunner`. The runner owns the model, the optimiser, the
phases, the evaluations and the checkpoints. A method gives:

- `ContinualMethod.make_pool`: the module it attaches after pre-training (its trainable parameters, the
  model frozen), or None (the whole model trains);
- `ContinualMethod.stage_tasks`: the tasks a stage trains on; `ContinualMethod.task_index`: the task-id
  oracle's index;
- `ContinualMethod.start_stage` / `ContinualMethod.end_stage`: what it does when a stage starts or ends;
- `ContinualMethod.loss_terms`: what it adds to the stage's loss;
- `ContinualMethod.state_dict` / `ContinualMethod.load_state_dict`: its own state, saved in the runner's
  checkpoint under the same keys as before this module existed.

Adding a method is a subclass here and its name in `lamo_ray.config.ContinualConfig.method`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from lamo_ray.config import ContinualConfig
    from lamo_ray.continual.runner import ContinualRunner


class ContinualMethod:
    """The defaults: full fine-tuning of the whole model on the stage's task, nothing added (``ft``).

    Args:
        cfg: the ``continual`` settings.
    """

    name: ClassVar[str] = "ft"
    #: a pool selected by its keys: the count penalty from the second stage and the key pull term
    keyed: ClassVar[bool] = False

    def __init__(self, cfg: ContinualConfig):
        self.cfg = cfg
        self.sequence = list(dict.fromkeys(cfg.tasks))

    def make_pool(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The module attached to ``model`` after pre-training, or None: the whole model trains."""
        return None

    def stage_tasks(self, stage: int) -> list[str]:
        """The tasks stage ``stage`` trains on: its own."""
        return [self.cfg.tasks[stage]]

    def task_index(self, task: str) -> int | None:
        """The index a task-id oracle gives ``task``; None: the keys select (or there is no pool)."""
        return None

    def start_stage(self, runner: ContinualRunner, resumed: bool) -> None:
        """Stage ``runner.stage`` starts (``resumed``: mid-stage, from a checkpoint). Keyed pools: from the
        second stage on, selection is penalised by the counts so far (refreshed at a fresh start; on a resume
        the stage's inverse frequencies came back with the weights, a buffer)."""
        pool = runner.model.pool
        if self.keyed and pool is not None:
            if resumed:
                pool.penalize = runner.stage > 0
            else:
                pool.start_task(runner.stage)

    def loss_terms(self, runner: ContinualRunner) -> torch.Tensor | None:
        """What the method adds to a stage batch's loss (after the model's forward on that batch), or None.
        Keyed pools: ``key_loss x`` the pull of the selected keys toward their queries."""
        pool = runner.model.pool
        if not (self.keyed and pool is not None):
            return None
        return self.key_loss_weight() * pool.key_loss(runner.model.pool_query, pool.selected)

    def key_loss_weight(self) -> float:
        return self.cfg.pool.key_loss

    def end_stage(self, runner: ContinualRunner, sampler: Any) -> None:
        """Stage ``runner.stage`` has taken its last step (before its final evaluation); ``sampler`` its data."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        pass


class Joint(ContinualMethod):
    """``joint``: the upper bound: every stage trains the whole model on all the sequence's tasks, batches
    mixed uniformly (Continual World's multi-task baseline), with the sequential methods' steps and
    evaluations."""

    name = "joint"

    def stage_tasks(self, stage: int) -> list[str]:
        return list(self.sequence)


class Single(ContinualMethod):
    """``single``: forward transfer's reference (Continual World): every stage starts again from the
    pre-trained weights and trains the whole model on its task alone."""

    name = "single"

    def __init__(self, cfg: ContinualConfig):
        super().__init__(cfg)
        self.pretrained: dict[str, torch.Tensor] | None = None   # the weights every stage starts from

    def start_stage(self, runner: ContinualRunner, resumed: bool) -> None:
        if resumed:
            return
        if self.pretrained is None:
            self.pretrained = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
        else:
            runner.model.load_state_dict(self.pretrained)

    def state_dict(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.pretrained = _on(state.get("pretrained"), device)


class L2(ContinualMethod):
    """``l2``: ``ft`` plus, from the second stage, ``penalty x sum_i (theta_i - theta*_i)^2`` over the trainable
    weights, ``theta*`` the weights at the end of the previous stage (one anchor, the previous stage's, as
    L2M's ``UDTWithEWC`` with ewc_mode "separate")."""

    name = "l2"

    def __init__(self, cfg: ContinualConfig):
        super().__init__(cfg)
        self.anchor: dict[str, torch.Tensor] | None = None       # theta* of the last stage
        self.importance: dict[str, torch.Tensor] | None = None   # F (ones for l2)

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """``continual.penalty x sum F (theta - theta*)^2`` over the anchored weights."""
        params = dict(model.named_parameters())
        total = sum((self.importance[n] * (params[n] - w).pow(2)).sum() for n, w in self.anchor.items())
        return self.cfg.penalty * total

    def loss_terms(self, runner: ContinualRunner) -> torch.Tensor | None:
        return None if self.anchor is None else self.penalty(runner.model)

    def end_stage(self, runner: ContinualRunner, sampler: Any) -> None:
        self.consolidate(runner, sampler)

    def importances(self, runner: ContinualRunner, sampler: Any,
                    named: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        return {n: torch.ones_like(q) for n, q in named.items()}

    def consolidate(self, runner: ContinualRunner, sampler: Any) -> None:
        """At a stage's end: anchor the trainable weights, with their importance (`importances`)."""
        named = {n: q for n, q in runner.model.named_parameters() if q.requires_grad}
        importance = self.importances(runner, sampler, named)
        self.anchor = {n: q.detach().clone() for n, q in named.items()}
        self.importance = importance

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "importance": self.importance}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.anchor, self.importance = _on(state.get("anchor"), device), _on(state.get("importance"), device)


class EWC(L2):
    """``ewc``: `L2` weighted by the Fisher information: the mean squared gradient of the loss over
    ``fisher_batches`` batches of the stage's data (Kirkpatrick et al. 2017)."""

    name = "ewc"

    def importances(self, runner: ContinualRunner, sampler: Any,
                    named: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """L2M's ``compute_importances`` (ml-jku/L2M ``src/algos/decision_transformer_with_ewc_sb3.py:147-187``:
        model in training mode, the stage's loss as its ``compute_policy_loss`` gives it, so with the
        previous anchor's penalty (``:89-101``) and without ``action_mask``, the padded action dims
        included (``universal_decision_transformer_sb3.py:410-414``)). In fp32 whatever ``train.precision``:
        squared fp16 gradients would underflow (a few batches a stage)."""
        model = runner.model
        importance = {n: torch.zeros_like(q) for n, q in named.items()}
        model.train()
        for _ in range(self.cfg.fisher_batches):
            batch = runner.batch(sampler)
            logits = model(batch["states"], batch["actions"], batch["returns_to_go"], batch["rewards"],
                           batch["timesteps"], batch["attention_mask"])
            every_dim = torch.ones_like(batch["action_mask"])
            loss = model.loss(logits, batch["actions"], batch["attention_mask"], every_dim)
            if runner.world_size > 1:   # the whole batch's gradient, as one worker's (the runner's docstring)
                loss = loss * runner.share(batch, every_dim)
            if self.anchor is not None:
                loss = loss + self.penalty(model)
            model.zero_grad(set_to_none=True)
            loss.backward()
            runner.reduce_gradients(list(named.values()))
            for n, q in named.items():
                if q.grad is not None:
                    importance[n] += q.grad.detach().pow(2)
        model.zero_grad(set_to_none=True)
        return {n: v / self.cfg.fisher_batches for n, v in importance.items()}


class L2M(ContinualMethod):
    """``l2m``: the pool of ``continual.pool.size`` LoRA modulators selected per sample by its keys
    (`lamo_ray.continual.pool.ModulationPool`), the model frozen."""

    name = "l2m"
    keyed = True
    single: ClassVar[bool] = False   # L2M's single-LoRA init of A instead of its pool's (`l2m_init_bound`)

    def pool_size(self) -> int:
        return self.cfg.pool.size

    def make_pool(self, model: torch.nn.Module) -> torch.nn.Module | None:
        from lamo_ray.pools.modulation import ModulationPool

        p, trunk = self.cfg.pool, model.trunk
        return ModulationPool(model.hidden_size, trunk.h[0].mlp.c_fc.nf, len(trunk.h), size=self.pool_size(),
                              rank=p.rank, alpha=p.alpha, single=self.single, task_groups=self.task_groups())

    def task_groups(self) -> int | None:
        return None


class L2MOracle(L2M):
    """``l2m_oracle``: L2M's task mask: one group of ``pool.size // len(tasks)`` modulators per task
    (`lamo_ray.continual.pool.oracle_groups`), the keys, trained as `L2M`'s, selecting within the group of
    the task id; an evaluated task outside the sequence gets the remainder group, which no stage trained."""

    name = "l2m_oracle"

    def task_groups(self) -> int | None:
        return len(self.sequence)

    def task_index(self, task: str) -> int | None:
        return self.sequence.index(task) if task in self.sequence else len(self.sequence)


class LoRA(L2M):
    """``lora``: one modulator (a pool of one, L2M's single-LoRA init) trained through every stage, the
    pre-trained model frozen: a single LoRA in L2M's placement (q, v, c_fc output)."""

    name = "lora"
    keyed = False
    single = True

    def pool_size(self) -> int:
        return 1

    def task_index(self, task: str) -> int | None:
        return 0


class L2P(ContinualMethod):
    """``l2p``: L2P's prompt pool (`lamo_ray.continual.prompts.PromptPool`): ``continual.prompt_pool.size``
    prompts, the ``top_k`` chosen per sample by their keys prepended to every layer's input; the model
    frozen."""

    name = "l2p"
    keyed = True

    def make_pool(self, model: torch.nn.Module) -> torch.nn.Module | None:
        from lamo_ray.pools.prompts import PromptPool

        q = self.cfg.prompt_pool
        return PromptPool(model.hidden_size, len(model.trunk.h), size=q.size, length=q.length, top_k=q.top_k,
                          dropout=q.dropout)

    def key_loss_weight(self) -> float:
        return self.cfg.prompt_pool.key_loss


#: every method by its ``continual.method`` name
METHODS: dict[str, type[ContinualMethod]] = {m.name: m for m in (ContinualMethod, Joint, Single, L2, EWC, L2M,
                                                                 L2MOracle, LoRA, L2P)}


def make_method(cfg: ContinualConfig) -> ContinualMethod:
    """The `ContinualMethod` of ``cfg.method``.

    Raises:
        ValueError: an unknown method (the config's schema lists the same names)."""
    if cfg.method not in METHODS:
        raise ValueError(f"continual.method: unknown method {cfg.method!r} ({', '.join(METHODS)})")
    return METHODS[cfg.method](cfg)


def _on(tensors: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor] | None:
    """A checkpoint is read onto the CPU; a method's tensors live where the model trains."""
    return None if tensors is None else {k: v.to(device) for k, v in tensors.items()}
