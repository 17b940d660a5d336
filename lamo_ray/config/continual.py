"""The continual phase's sections (`lamo_ray.config`): L2M's modulation pool, L2P's prompt pool, the
multi-domain DT's sizes and the ``continual:`` section (pre-training, task sequence, evaluation).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lamo_ray.config.sections import _Strict


CONTINUAL_METHODS = ("l2m", "l2m_oracle", "lora", "ft", "ewc", "l2", "l2p", "joint", "single")


class PoolConfig(_Strict):
    """L2M's modulation pool (docs/references/l2m.md "The modulation pool"; `lamo_ray.continual.pool`)."""

    size: int = Field(30, ge=1, description="Modulators in the pool (L2M: 30).")
    rank: int = Field(8, ge=1, description="LoRA rank of each modulator (L2M: 8).")
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha; the update is scaled by alpha / rank (L2M: 16).")
    top_k: int = Field(1, ge=1, description="Modulators selected per sample (L2M: 1, the only value built).")
    key_loss: float = Field(0.5, ge=0.0, description="Weight of the key pull term -cos(key, query) (L2M: 0.5).")

    @model_validator(mode="after")
    def _top_k_fits(self) -> "PoolConfig":
        if self.top_k > self.size:
            raise ValueError(f"continual.pool.top_k ({self.top_k}) is larger than the pool (size {self.size})")
        if self.top_k != 1:
            raise ValueError(f"continual.pool.top_k {self.top_k}: L2M selects one modulator per sample; only 1 is built")
        return self


class PromptPoolConfig(_Strict):
    """L2P's prompt pool as L2M's baseline (docs/references/l2m.md "Baselines"; ml-jku/L2M ``prompt/l2p.py``,
    ``prompt_kwargs/l2p.yaml``; `lamo_ray.continual.prompts`)."""

    size: int = Field(100, ge=1, description="Prompts in the pool (L2M's L2P: 100).")
    length: int = Field(5, ge=1, description="Tokens per prompt and layer (L2M's L2P: 5).")
    top_k: int = Field(5, ge=1, description="Prompts selected per sample, by key similarity (L2M's L2P: 5).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the selected prompts in training (L2M's "
                           "Prompt default 0.1).")
    key_loss: float = Field(0.5, ge=0.0, description="Weight of the key pull term -sum_k cos(key_k, query) (L2M: "
                            "pull_constraint_coef 0.5).")

    @model_validator(mode="after")
    def _top_k_fits(self) -> "PromptPoolConfig":
        if self.top_k > self.size:
            raise ValueError(f"continual.prompt_pool.top_k ({self.top_k}) is larger than the pool (size {self.size})")
        return self


class MDDTConfig(_Strict):
    """L2M's multi-domain DT sizes (`lamo_ray.mddt`)."""

    state_dim: int = Field(204, ge=1, description="Shared state space; a task's states are zero-padded to it.")
    action_dim: int = Field(6, ge=1, description="Shared action size; a task's actions are zero-padded, and masked.")
    action_bins: int = Field(64, ge=2, description="Tokens per action dimension, over [-1, 1].")
    action_dim_embedding: bool = Field(False, description="Add an embedding of the action dimension's index to its "
                                       "token (L2M's a_pos_embds, off in its configs).")


class ContinualConfig(_Strict):
    """Multi-task pre-training, then continual fine-tuning over a task sequence (L2M; Continual World's
    protocol, docs/references/l2m.md "Continual World protocol"). Each stage trains on one task's data only and every ``eval_every``
    steps evaluates every task of ``eval_tasks`` (default: the sequence)."""

    pretrain_tasks: list[str] = Field(min_length=1, description="Tasks of the multi-task pre-training for "
                                      "train.steps steps, all of the MDDT trained: Meta-World tasks and DMControl "
                                      "tasks (<domain>-<task>, dmc10) in any mix (L2M: mt40 + dmc10); batches mixed "
                                      "as pretrain_mixing says.")
    pretrain_datasets: list[str] = Field(default_factory=list, description="More pre-training data: dataset "
                                         "sources of the project's other continuous-control domains (e.g. "
                                         "lamo/mujoco/hopper/medium-v0, D4RL/pointmaze/umaze-v2), states zero-padded "
                                         "on the right into the shared space as Meta-World's; each scaled by "
                                         "continual.rtg_scales of its domain, else that domain's evaluation scale "
                                         "(MuJoCo 1000), else data.rtg_scale. Never evaluated.")
    pretrain_mixing: Literal["task", "domain"] = Field(
        "task", description="How pre-training batches mix their tasks: 'task' (each sample's task uniform over the "
        "tasks) or 'domain' (L2M's: each batch from one domain, the domains in turn, tasks uniform within it; with "
        "train.grad_accumulation = the number of domains every optimiser step takes one batch of each).")
    sources: dict[str, str] = Field(default_factory=dict, description="Data-source templates per domain "
                                    "('metaworld', 'dmcontrol'), for that domain's tasks instead of data.source; "
                                    "placeholders {task} and {task_underscored} (L2M's DMC files: "
                                    "'~/data/dm_control/{task_underscored}.npz').")
    rtg_scales: dict[str, float] = Field(default_factory=dict, description="Return-to-go and reward divisor per "
                                         "domain for that domain's tasks instead of data.rtg_scale (L2M: metaworld "
                                         "200, dmcontrol 100).")
    tasks: list[str] = Field(min_length=1, description="The continual sequence, in order ('cw10' for Continual "
                             "World's).")
    steps_per_task: int = Field(ge=1, description="Training steps of each stage (Continual World: 100k).")
    eval_every: int = Field(ge=1, description="Steps between evaluations within a stage (each stage's end too).")
    eval_tasks: list[str] | None = Field(None, description="Tasks evaluated at each evaluation; default the sequence.")
    eval_episodes: int = Field(5, ge=1, description="Episodes per task and evaluation (L2M: 5).")
    target_return: Literal["expert", "data_max"] = Field(
        "expert", description="Each evaluated task's target return: 'expert' (the mean return of the scripted expert "
        "recorded in the task's dataset as ref_max_score) or 'data_max' (L2M's rule: the largest episode return in the "
        "task's dataset; its envs/target_returns.py tables are its datasets' maxima).")
    success_rule: Literal["last_step", "any_step"] = Field(
        "any_step", description="When an evaluation episode is a success: 'last_step' (L2M's rule: info['success'] "
        "at the episode's last step, ml-jku/L2M src/callbacks/custom_eval_callback.py:298-303) or 'any_step' "
        "(Continual World's SuccessCounter: the flag set at any step). Logged with the trial's params, so every "
        "success rate says which rule made it; only domains with a success flag (Meta-World) can be scored.")
    method: Literal["l2m", "l2m_oracle", "lora", "ft", "ewc", "l2", "l2p", "joint", "single"] = Field(
        description="l2m (pool selected by keys), l2m_oracle (L2M's task mask: the keys select within the task's group of "
        "pool.size // len(tasks) modulators), lora (one "
        "modulator for every task), ft (the whole model fine-tuned), ewc / l2 (ft with a penalty pulling the "
        "weights towards the previous stage's end, weighted by the Fisher information / uniformly), l2p (a pool of "
        "prompts prepended to every layer's input, the top-k chosen per sample by their keys; the model frozen), "
        "joint (the upper "
        "bound: every stage trains on all the sequence's tasks at once), single (forward transfer's reference: every "
        "stage starts again from the pre-trained weights).")
    lr: float = Field(1e-4, gt=0.0, description="Constant learning rate of the continual stages (L2M).")
    penalty: float = Field(400.0, ge=0.0, description="ewc / l2: the penalty's weight lambda (L2M: ewc_lambda 400, "
                           "for both).")
    fisher_batches: int = Field(10, ge=1, description="ewc: batches of the finished stage's data whose squared "
                                "gradients are averaged into the Fisher information (L2M: 10).")
    pool: PoolConfig = Field(default_factory=PoolConfig)
    prompt_pool: PromptPoolConfig = Field(default_factory=PromptPoolConfig)
    mddt: MDDTConfig = Field(default_factory=MDDTConfig)

    @field_validator("pretrain_tasks", "tasks", "eval_tasks")
    @classmethod
    def _tasks_known(cls, v: list[str] | None, info) -> list[str] | None:
        """Meta-World and DMControl task names (did-you-mean), with named lists (cw10, mt40, mt50, dmc10)
        expanded (`lamo_ray.domains.tasks.check_continual_tasks`)."""
        from lamo_ray.domains.tasks import check_continual_tasks

        return None if v is None else check_continual_tasks(v, key=f"continual.{info.field_name}")

    @field_validator("sources", "rtg_scales")
    @classmethod
    def _domains_known(cls, v: dict, info) -> dict:
        from lamo_ray import domains
        from lamo_ray.domains.tasks import CONTINUAL_DOMAINS, PLACEHOLDERS

        known = CONTINUAL_DOMAINS if info.field_name == "sources" else [d.name for d in domains.registered()]
        for domain, value in v.items():
            if domain not in known:
                raise ValueError(f"continual.{info.field_name}: unknown domain {domain!r} (known: "
                                 f"{', '.join(known)})")
            if info.field_name == "sources" and not any(p in value for p in PLACEHOLDERS):
                raise ValueError(f"continual.sources.{domain}: {value!r} has no {' or '.join(PLACEHOLDERS)} placeholder")
            if info.field_name == "rtg_scales" and not value > 0:
                raise ValueError(f"continual.rtg_scales.{domain}: must be > 0, got {value}")
        return v

    @model_validator(mode="after")
    def _sequence_is_success_scored(self) -> "ContinualConfig":
        from lamo_ray.domains.tasks import SUCCESS_RULES, task_domain

        for key, tasks in (("tasks", self.tasks), ("eval_tasks", self.eval_tasks or [])):
            scoreless = [t for t in tasks if self.success_rule not in SUCCESS_RULES[task_domain(t)]]
            if scoreless:
                raise ValueError(f"continual.{key}: {scoreless} are DMControl tasks, which have no success flag for "
                                 f"continual.success_rule {self.success_rule!r}; the continual sequence and its "
                                 "evaluations are scored by success (Continual World's metrics). DMControl tasks go in "
                                 "continual.pretrain_tasks (L2M: mt40 + dmc10)")
        return self

    @model_validator(mode="after")
    def _oracle_has_a_modulator_per_task(self) -> "ContinualConfig":
        if self.method != "l2m_oracle":
            return self
        n, size = len(dict.fromkeys(self.tasks)), self.pool.size
        if size < n:
            raise ValueError(f"continual.pool.size {size}: the task-id oracle needs a modulator per task ({n} tasks)")
        unseen = [t for t in self.evaluated if t not in self.tasks]
        if unseen and size % n == 0:    # L2M's task mask (continual.pool.oracle_groups) leaves no remainder group
            raise ValueError(f"continual.pool.size {size}: the oracle's task mask splits it into {n} groups of "
                             f"{size // n} with no modulator left for the evaluated tasks outside the sequence "
                             f"{unseen}; a size that is not a multiple of {n} leaves one")
        return self

    @field_validator("pretrain_datasets")
    @classmethod
    def _datasets_have_a_domain(cls, v: list[str]) -> list[str]:
        from lamo_ray import domains
        from lamo_ray.domains.tasks import PLACEHOLDERS

        for source in v:
            if any(p in source for p in PLACEHOLDERS):
                raise ValueError(f"continual.pretrain_datasets: {source!r} is one dataset, not a template (tasks with "
                                 "templates go in continual.pretrain_tasks)")
            if domains.for_dataset(source) is None:
                raise ValueError(f"continual.pretrain_datasets: no domain serves {source!r} (its return scale and "
                                 "episodes come from its domain: " + ", ".join(d.name for d in domains.registered()) + ")")
        if len(set(v)) != len(v):
            raise ValueError(f"continual.pretrain_datasets: {v} lists a dataset twice")
        return v

    @property
    def pretrain_sources(self) -> list[str]:
        """What pre-training mixes: ``pretrain_tasks`` then ``pretrain_datasets`` (each named by its source)."""
        return [*self.pretrain_tasks, *self.pretrain_datasets]

    @property
    def evaluated(self) -> list[str]:
        """The tasks of every evaluation: ``eval_tasks``, else the sequence (each once)."""
        return list(dict.fromkeys(self.eval_tasks if self.eval_tasks is not None else self.tasks))
