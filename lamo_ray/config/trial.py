"""One trial's config (`lamo_ray.config`): `TrialConfig` (its sections and the rules across them),
`validate_trial`, and what a trial's config gives other modules (`asdict_flat`, `torch_threads`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from lamo_ray.config.continual import ContinualConfig
from lamo_ray.config.sections import (ConfigError, DataConfig, EvalConfig, LanguageConfig, ModelConfig, OnlineConfig,
                                      TrainConfig, _format_validation_error, _Strict)


class TrialConfig(_Strict):
    """Everything one training run needs."""

    seed: int = 0
    task: str | None = Field(None, description="Name of the sweep's `tasks` entry this trial takes its settings "
                             "from (a label; the settings are merged by `resolve_trial`).")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    online: OnlineConfig | None = Field(None, description="Online fine-tuning after the offline steps; none: "
                                        "offline only.")
    continual: ContinualConfig | None = Field(None, description="L2M: multi-task pre-training of a multi-domain DT "
                                              "for train.steps, then a continual task sequence; data.source is a "
                                              "template with {task}.")

    @model_validator(mode="after")
    def _continual_fits(self) -> "TrialConfig":
        if self.continual is None:
            if "{task}" in self.data.source or "{task_underscored}" in self.data.source:
                raise ValueError(f"data.source {self.data.source!r} has a task placeholder, which only a "
                                 "continual: section fills")
            if self.train.grad_accumulation != 1:
                raise ValueError(f"train.grad_accumulation {self.train.grad_accumulation}: only a continual trial's "
                                 "pre-training accumulates gradients (L2M); offline and online trials take one batch "
                                 "per optimiser step, so set it to 1")
            return self
        from lamo_ray.domains.tasks import PLACEHOLDERS, episode_steps, task_domain

        needs = {task_domain(t) for t in [*self.continual.pretrain_tasks, *self.continual.tasks]}
        if any(d not in self.continual.sources for d in needs) and not any(p in self.data.source for p in PLACEHOLDERS):
            raise ValueError(f"continual: data.source must be a template with {{task}} (e.g. "
                             f"'lamo/metaworld/{{task}}-v0'), got {self.data.source!r}")
        # DT clips timesteps past the table (Meta-World sweeps may size it below 200); DMControl's 1000-step
        # episodes in a table sized for Meta-World would have most of their steps clipped, so that is an error
        if "dmcontrol" in needs and self.data.max_ep_len < episode_steps("dmcontrol"):
            raise ValueError(f"data.max_ep_len {self.data.max_ep_len}: DMControl episodes have "
                             f"{episode_steps('dmcontrol')} steps, most of whose timesteps the table would clip; set "
                             f"data.max_ep_len >= {episode_steps('dmcontrol')} (L2M: 1000)")
        from lamo_ray import domains

        for source in self.continual.pretrain_datasets:
            evaluation = domains.for_dataset(source).evaluation
            if evaluation is not None and (evaluation.max_episode_steps or 0) > self.data.max_ep_len:
                raise ValueError(f"data.max_ep_len {self.data.max_ep_len}: continual.pretrain_datasets {source!r} has "
                                 f"episodes of up to {evaluation.max_episode_steps} steps, whose later timesteps the "
                                 f"table would clip; set data.max_ep_len >= {evaluation.max_episode_steps}")
        if self.online is not None:
            raise ValueError("online: and continual: are two different second phases; a trial has at most one")
        if self.model.finetune == "lora":
            raise ValueError("continual: model.finetune 'lora' is not an MDDT pre-training mode: set model.finetune "
                             "to 'full' (L2M) or 'frozen'; LoRA in the continual stages is continual.method")
        if self.train.lr_schedule == "lamo_atari":
            raise ValueError("train.lr_schedule 'lamo_atari' counts the non-NOOP actions of Atari batches; a continual "
                             "trial's multi-domain batches have none: use 'constant' or 'cosine'")
        default_episodes = EvalConfig.model_fields["episodes"].default
        if self.eval.episodes != default_episodes:
            raise ValueError(f"eval.episodes {self.eval.episodes}: a continual trial evaluates each task with "
                             f"continual.eval_episodes ({self.continual.eval_episodes}); set that key instead")
        return self

    @property
    def data_sources(self) -> dict[str | None, str]:
        """``{task: dataset source}`` of every task a continual trial reads (pre-training, sequence,
        evaluation); ``{None: data.source}`` for other trials."""
        if self.continual is None:
            return {None: self.data.source}
        from lamo_ray.domains.tasks import fill_source, task_domain

        c = self.continual
        tasks = dict.fromkeys([*c.pretrain_tasks, *c.tasks, *c.evaluated])
        out = {t: fill_source(c.sources.get(task_domain(t), self.data.source), t) for t in tasks}
        return {**out, **{source: source for source in c.pretrain_datasets}}

    def rtg_scale_of(self, task: str) -> float:
        """A continual task's return-to-go divisor: ``continual.rtg_scales`` of its domain, else
        ``data.rtg_scale``; for a ``continual.pretrain_datasets`` entry, its domain's, else the domain's
        evaluation scale (LaMo's: MuJoCo 1000), else ``data.rtg_scale``."""
        from lamo_ray import domains
        from lamo_ray.domains.tasks import task_domain

        assert self.continual is not None
        domain, default = task_domain(task), self.data.rtg_scale
        if task in self.continual.pretrain_datasets and domains.get(domain).evaluation is not None:
            default = domains.get(domain).evaluation.rtg_scale
        return float(self.continual.rtg_scales.get(domain, default))

    @property
    def continual_steps(self) -> int:
        """Steps of the continual stages (``len(tasks) x steps_per_task``; 0 without a continual section)."""
        return 0 if self.continual is None else len(self.continual.tasks) * self.continual.steps_per_task

    @model_validator(mode="after")
    def _eval_context_fits(self) -> "TrialConfig":
        if self.eval.context_length is not None and self.eval.context_length > self.data.context_length:
            raise ValueError(f"eval.context_length ({self.eval.context_length}) exceeds data.context_length "
                             f"({self.data.context_length}): a rollout cannot condition on more steps than the model "
                             "was trained on")
        return self

    @model_validator(mode="after")
    def _online_fits(self) -> "TrialConfig":
        if self.online is None:
            return self
        head = self.model.action_head
        if self.online.method == "odt" and head != "tanh_gaussian":
            raise ValueError("online.method 'odt' needs model.action_head: tanh_gaussian (Online DT's stochastic "
                             f"head; the authors' code asserts it), got {head!r}")
        if self.online.method != "odt" and head != "deterministic":
            raise ValueError(f"online.method {self.online.method!r} trains a deterministic policy with the critic's "
                             f"gradient: it needs model.action_head: deterministic, got {head!r}")
        if self.online.method != "odt" and self.model.action_tanh is None:
            self.model.action_tanh = True  # the authors' bounded head, whatever the embedding (logged resolved)
        if self.online.method != "odt" and not self.model.bounded_actions:
            raise ValueError(f"model.action_tanh: online.method {self.online.method!r} needs actions bounded to "
                             "[-1, 1] (the authors' head ends in tanh; -Q would push actions where the critic never "
                             "trained): remove model.action_tanh: false")
        if self.train.lr_schedule != "constant":
            raise ValueError(f"online: needs train.lr_schedule 'constant' (got {self.train.lr_schedule!r}): the DT's "
                             "scheduler keeps stepping through the online phase, which a schedule over train.steps "
                             "would spend at its floor (Online DT and ODT-TD3: warm-up, then constant)")
        if self.train.num_workers != 1:
            raise ValueError(f"online: needs train.num_workers 1 (got {self.train.num_workers}); the online phase "
                             "learns in one process while rollout actors collect")
        return self

    @property
    def online_steps(self) -> int:
        """Learner updates of the online phase (``iterations x updates_per_iteration``; 0 offline only)."""
        return 0 if self.online is None else self.online.iterations * self.online.updates_per_iteration

    @property
    def total_steps(self) -> int:
        """The last step a trial reports: ``train.steps`` plus `online_steps` (one per online actor update)
        plus `continual_steps`."""
        return self.train.steps + self.online_steps + self.continual_steps


def validate_trial(raw: dict[str, Any], prefix: str = "", origin: str = "config") -> TrialConfig:
    """Validate a nested dict into a `TrialConfig`. Raises `ConfigError` naming the key path."""
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, TrialConfig, prefix, origin)) from None


def asdict_flat(cfg: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Flatten a config to ``{dotted.key: value}`` (lists as strings), for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in cfg.model_dump().items():
        _flatten(out, f"{prefix}{key}", value)
    return out


def _flatten(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(out, f"{key}.{k}", v)
    else:
        out[key] = value


def torch_threads(cpus: float) -> int:
    """Torch intra-op threads for a process granted ``cpus`` Ray CPUs (docs/references/environment.md "Threads")."""
    return max(1, int(math.floor(cpus + 0.5)))
