"""Typed configuration: the single source of truth for every knob and its default.

A *trial* is one training run (`TrialConfig`). A *sweep* (`SweepConfig`) is a base trial
config plus named method variants, search domains and seeds; `expand_trials` turns it into the
list of trials Ray Tune runs (variants x grid x seeds).

Defaults follow the LaMo reference code (docs/references/lamo.md "Model", "Data", "Evaluation") unless a
field's description says "ours".

Errors: every validation failure raises `ConfigError`, whose message names the offending key
path (``model.lora.rank``), the file it came from and, for unknown keys, a did-you-mean.

The package's modules, each re-exported here (``from lamo_ray.config import X``):

- `lamo_ray.config.sections`: `ConfigError`, the trial's sections (data, model, language, train, eval,
  online) and how validation errors are worded;
- `lamo_ray.config.continual`: the ``continual:`` section and its pools;
- `lamo_ray.config.trial`: `TrialConfig`, `validate_trial`, `asdict_flat`, `torch_threads`;
- `lamo_ray.config.sweep`: `SweepConfig` and the sweep engine (`load_sweep`, `expand_trials`,
  `resolve_trial`, overrides, search domains).
"""

from lamo_ray.config.continual import (CONTINUAL_METHODS, ContinualConfig, MDDTConfig, PoolConfig,
                                       PromptPoolConfig)
from lamo_ray.config.sections import (DEFAULT_BASELINE, ONLINE_METHODS, SCORE_METRIC, SEARCH_DOMAINS, ConfigError,
                                      DataConfig, EvalConfig, LanguageConfig, LoraConfig, ModelConfig, OnlineConfig,
                                      TrainConfig)
from lamo_ray.config.sweep import (TUNE_KEYS, ConfirmConfig, SchedulerConfig, SweepConfig, TrackingConfig,
                                   deep_merge, expand_trials, find_domains, load_sweep, parse_override,
                                   resolve_trial, resolve_tune_config, set_path, tune_variant_and_params)
from lamo_ray.config.trial import TrialConfig, asdict_flat, torch_threads, validate_trial

__all__ = ["CONTINUAL_METHODS", "DEFAULT_BASELINE", "ONLINE_METHODS", "SCORE_METRIC", "SEARCH_DOMAINS", "TUNE_KEYS",
           "ConfigError", "ConfirmConfig", "ContinualConfig", "DataConfig", "EvalConfig", "LanguageConfig",
           "LoraConfig", "MDDTConfig", "ModelConfig", "OnlineConfig", "PoolConfig", "PromptPoolConfig",
           "SchedulerConfig", "SweepConfig", "TrackingConfig", "TrainConfig", "TrialConfig", "asdict_flat",
           "deep_merge", "expand_trials", "find_domains", "load_sweep", "parse_override", "resolve_trial",
           "resolve_tune_config", "set_path", "torch_threads", "tune_variant_and_params", "validate_trial"]
