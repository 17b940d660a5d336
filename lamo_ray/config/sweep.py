"""Sweep files (`lamo_ray.config`): `SweepConfig` (a base trial config with search domains, variants,
tasks, seeds, scheduler, confirmation stage) and the engine that reads and expands it: `load_sweep`
(with ``--set`` overrides, `parse_override`), `expand_trials` (variants x grid x seeds), `resolve_trial`
(base + params + task + variant + seed) and the Tune side (`tune_variant_and_params`,
`resolve_tune_config`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from lamo_ray.config.sections import (DEFAULT_BASELINE, SCORE_METRIC, SEARCH_DOMAINS, ConfigError, _format_error,
                                      _format_validation_error, _Strict)
from lamo_ray.config.trial import TrialConfig


class SchedulerConfig(_Strict):
    """Tune scheduler. ASHA stops trials on the evaluation normalized score, in training steps."""

    type: Literal["asha", "fifo"] = "asha"
    metric: str = SCORE_METRIC
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(2500, ge=1, description="Steps before a trial can be stopped.")
    reduction_factor: float = Field(2.0, gt=1.0)

    def rungs(self, max_t: int) -> list[int]:
        """ASHA's milestones in training steps, ascending: ``grace_period * reduction_factor**k`` below
        ``max_t`` (Ray's ``_Bracket`` with one bracket, as `lamo_ray.sweep` configures it); [] for FIFO."""
        if self.type != "asha":
            return []
        count = int(math.log(max_t / self.grace_period) / math.log(self.reduction_factor) + 1)
        return [int(self.grace_period * self.reduction_factor ** k) for k in range(max(count, 0))]


class ConfirmConfig(_Strict):
    """Confirmation stage of a hyperparameter search: after the search (the sweep's variants x search
    domains x seeds under ``scheduler``, usually ASHA), the ``top_k`` configurations of each variant
    are trained again to their full ``train.steps`` with the fresh ``seeds``, every trial to the end
    (FIFO), in the same sweep command and MLflow parent run. The report scores arms only from these
    trials: an ASHA arm is a mean over the seeds that survived, and the best of many configurations
    is biased upward by the selection itself (docs/references/lamo.md "Evaluation").

    Ranking of the search (per variant, over a configuration's search seeds): furthest step reached
    first (what ASHA let run longest), then the mean of the last evaluation's ``scheduler.metric``."""

    top_k: int = Field(1, ge=1, description="Configurations per variant to confirm.")
    seeds: list[int] = Field(min_length=1, description="Seeds of the confirmation trials; none may be a search seed.")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"confirm.seeds must be unique, got {v}")
        return v


class TrackingConfig(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; default the sweep name.")


class SweepConfig(_Strict):
    """A sweep file. ``base`` may hold search domains ({grid: [...]}, ...) at any leaf."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"default": {}}, min_length=1)
    tasks: dict[str, dict[str, Any]] | None = Field(
        None, description="Named settings of a task (its dataset, evaluation env, target returns, ...), chosen by "
        "base.task (usually {grid: [...]}): a trial is base + its task + its variant, and the report compares "
        "variants task by task.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    num_samples: int = Field(1, ge=1, description="Samples of the random domains per grid point.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage_path: str = Field("~/lamo_ray_results", description="Ray Tune results and checkpoints.")
    trial_cpus: float = Field(0.01, gt=0.0, description="CPU share of each trial's driver (it only waits on its workers).")
    max_concurrent_trials: int | None = Field(None, ge=1)
    report_baseline: str = Field(DEFAULT_BASELINE, description="Variant the report compares every other variant with.")
    confirm: ConfirmConfig | None = Field(None, description="Search-then-confirm: re-run the best configurations "
                                          "of each variant with fresh seeds to the end (see ConfirmConfig).")

    _origin: str = PrivateAttr("sweep")

    @functools.cached_property
    def trials(self) -> list[dict[str, Any]]:
        """The trial table (`expand_trials`), expanded and validated once per sweep."""
        return expand_trials(self, origin=self._origin)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be unique, got {v}")
        return v

    @model_validator(mode="after")
    def _tasks_are_chosen(self) -> "SweepConfig":
        chosen = self.base.get("task")
        if self.tasks is None:
            if chosen is not None:
                raise ValueError(f"base.task is {chosen!r} but the sweep has no tasks: section to take it from")
            return self
        if not self.tasks:
            raise ValueError("tasks: is empty; give at least one named task, or remove the section")
        if chosen is None:
            raise ValueError(f"tasks: defined ({', '.join(self.tasks)}) but base.task does not choose one: set "
                             f"base.task: {{grid: [{', '.join(self.tasks)}]}} (or one name)")
        names = chosen[next(iter(chosen))] if _is_domain(chosen) else [chosen]
        for name in names if isinstance(names, list) else [names]:
            if name not in self.tasks:
                close = difflib.get_close_matches(str(name), list(self.tasks), n=1)
                raise ValueError(f"base.task: unknown task {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (tasks: {', '.join(self.tasks)})")
        swept = set(find_domains(self.base))
        for name, overrides in self.tasks.items():
            if find_domains(overrides):
                raise ValueError(f"tasks.{name}: search domains belong in base, not in tasks "
                                 f"(at {', '.join(find_domains(overrides))})")
            clash = sorted(p for p in _leaf_paths(overrides) if p in swept or p == "task")
            if clash:
                raise ValueError(f"tasks.{name} sets {', '.join(clash)}, which base sweeps: the task would override "
                                 "every swept value")
        return self

    @model_validator(mode="after")
    def _confirm_needs_a_search(self) -> "SweepConfig":
        if self.confirm is None:
            return self
        reused = sorted(set(self.confirm.seeds) & set(self.seeds))
        if reused:
            raise ValueError(f"confirm.seeds must be fresh seeds: {reused} also in seeds {self.seeds} (a confirmation "
                             "run on a search seed repeats the run it was selected on)")
        if not find_domains(self.base):
            raise ValueError("confirm: base has no search domains ({grid: ...}, {loguniform: ...}, ...), so there is "
                             "no configuration to select; for more seeds of one configuration extend seeds instead")
        return self


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating dicts on the way."""
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with ``overrides`` applied; override keys may be dotted paths."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        target = _get_path(out, key)
        if isinstance(value, dict) and not _is_domain(value) and isinstance(target, dict):
            set_path(out, key, deep_merge(target, value))
        else:
            set_path(out, key, copy.deepcopy(value))
    return out


def _get_path(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def _is_domain(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SEARCH_DOMAINS


def find_domains(tree: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """All search domains in a nested dict, as ``{dotted.path: {kind: args}}``."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if _is_domain(value):
            found[path] = value
        elif isinstance(value, dict):
            found.update(find_domains(value, path))
    return found


def _domain_points(path: str, domain: dict[str, Any], origin: str) -> list[Any]:
    """Values of a domain to validate: every grid/choice value, or the bounds of a range."""
    kind, args = next(iter(domain.items()))
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{origin}: base.{path}: {{{kind}: ...}} needs a non-empty list, got {args!r}")
        return args
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
        raise ConfigError(f"{origin}: base.{path}: {{{kind}: [lo, hi]}} needs two numbers, got {args!r}")
    lo, hi = args
    if not lo < hi:
        raise ConfigError(f"{origin}: base.{path}: {{{kind}: [lo, hi]}} needs lo < hi, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{origin}: base.{path}: loguniform bounds must be > 0, got {args!r}")
    if kind == "randint":
        return [int(lo), int(hi) - 1]
    return [lo, hi]


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.path=value`` (value read as YAML). Raises `ConfigError` on a missing '='."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value of {key} is not valid YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override and validate a sweep YAML file, checking every trial it expands to.

    ``overrides`` are ``key.path=value`` strings; a path starting with a trial section
    (data, model, language, train, eval, seed) applies to ``base``.

    Raises:
        ConfigError: missing or malformed file, unknown keys, bad values (naming the key path).
    """
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise ConfigError(f"{origin}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: malformed YAML: {_yaml_problem(err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{origin}: cannot read sweep file ({err})") from None
    if raw is None:
        raise ConfigError(f"{origin}: sweep file is empty; it needs at least name and base.data.source")
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    for text in overrides or []:
        key, value = parse_override(text)
        if key.split(".")[0] in TrialConfig.model_fields:
            key = f"base.{key}"
        set_path(raw, key, value)
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, SweepConfig, "", origin)) from None
    sweep._origin = origin
    max_steps = max(r["config"].total_steps for r in sweep.trials)  # expands and validates every trial, once
    if sweep.scheduler.type == "asha" and sweep.scheduler.grace_period > max_steps:
        raise ConfigError(f"{origin}: scheduler.grace_period ({sweep.scheduler.grace_period}) exceeds the longest "
                          f"trial's train.steps ({max_steps}); ASHA could never compare trials")
    return sweep


def expand_trials(sweep: SweepConfig, origin: str = "sweep") -> list[dict[str, Any]]:
    """The trial table: one row per (variant, grid point, seed).

    Each row is ``{"variant": str, "seed": int, "params": {dotted: value or domain}, "config": TrialConfig}``
    where ``config`` is validated with random domains at a bound (the real value is drawn by Tune).

    Raises:
        ConfigError: a variant or grid point that does not validate, naming variant and key.
    """
    domains = find_domains(sweep.base)
    grid_paths = [p for p, d in domains.items() if next(iter(d)) == "grid"]
    random_paths = [p for p in domains if p not in grid_paths]
    grid_values = [_domain_points(p, domains[p], origin) for p in grid_paths]
    random_points = {p: _domain_points(p, domains[p], origin) for p in random_paths}
    rows = []
    for variant, overrides in sweep.variants.items():
        for combo in itertools.product(*grid_values) if grid_paths else [()]:
            grid_point = dict(zip(grid_paths, combo))
            # validate every random-domain bound, once per grid point
            n_checks = max([len(v) for v in random_points.values()] or [1])
            for i in range(n_checks):
                params = dict(grid_point)
                params.update({p: vals[min(i, len(vals) - 1)] for p, vals in random_points.items()})
                for seed in sweep.seeds:
                    resolved = resolve_trial(sweep, variant, seed, params, origin=origin)
                    if i == 0:
                        shown = dict(grid_point)
                        shown.update({p: domains[p] for p in random_paths})
                        rows.append({"variant": variant, "seed": seed, "params": shown, "config": resolved})
    return rows


#: keys of a Tune trial's config besides the search-domain key paths (`lamo_ray.sweep` param spaces)
TUNE_KEYS = ("variant", "seed", "stage", "point")


def tune_variant_and_params(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(variant, {key path: value})`` of a Tune trial's ``config``: a search trial holds ``variant``
    and one entry per search-domain key path; a confirmation trial holds them in ``point``."""
    point = config.get("point")
    if point is not None:
        return point["variant"], dict(point["params"])
    return config["variant"], {k: v for k, v in config.items() if k not in TUNE_KEYS}


def resolve_tune_config(sweep: SweepConfig, config: dict[str, Any]) -> TrialConfig:
    """The `TrialConfig` of a Tune trial's ``config`` (`tune_variant_and_params`, plus ``seed``), as
    `lamo_ray.sweep` builds the param spaces. Raises as `resolve_trial`."""
    variant, params = tune_variant_and_params(config)
    return resolve_trial(sweep, variant, config["seed"], params)


def resolve_trial(sweep: SweepConfig, variant: str, seed: int, params: dict[str, Any],
                  origin: str = "sweep") -> TrialConfig:
    """Base config + sampled params + the chosen task's settings + variant overrides + seed, validated.

    Raises:
        ConfigError: unknown variant or task, or invalid result, naming the variant, task or base and the
            key path.
    """
    if variant not in sweep.variants:
        raise ConfigError(f"{origin}: unknown variant {variant!r}; known: {', '.join(sweep.variants)}")
    raw = copy.deepcopy(sweep.base)
    for p, value in params.items():
        set_path(raw, p, value)
    task = raw.get("task")
    task_overrides: dict[str, Any] = {}
    if task is not None and not _is_domain(task):
        if not sweep.tasks or task not in sweep.tasks:
            raise ConfigError(f"{origin}: task: unknown task {task!r}; known: {', '.join(sweep.tasks or []) or 'none'}")
        task_overrides = sweep.tasks[task]
        raw = deep_merge(raw, task_overrides)
    raw = deep_merge(raw, sweep.variants[variant])
    raw["seed"] = seed
    leftover = find_domains(raw)
    if leftover:
        raise ConfigError(f"{origin}: search domains not resolved at {', '.join(leftover)} "
                          "(domains belong in base, not in variants)")
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        # name each bad key where the user wrote it: the variant if it sets that key, else base
        lines = []
        for e in err.errors():
            where = "base"
            for prefix, tree in ((f"variants.{variant}", sweep.variants[variant]), (f"tasks.{task}", task_overrides)):
                if _sets(tree, e):
                    where = prefix
                    break
            lines.append(_format_error(e, TrialConfig, where, origin))
        raise ConfigError("\n".join(lines)) from None


def _sets(tree: dict[str, Any], error: dict[str, Any]) -> bool:
    """Whether the override mapping ``tree`` sets the key a pydantic ``error`` is about (or, for a rule
    across sections, which has no location, a key its message names)."""
    loc = ".".join(str(p) for p in error["loc"])
    paths = _leaf_paths(tree)
    if any(p == loc or p.startswith(loc + ".") or loc.startswith(p + ".") for p in paths):
        return True
    return not loc and any(p in error["msg"] for p in paths)


def _leaf_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values a (possibly dotted-key) override mapping sets."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and not _is_domain(value):
            out |= _leaf_paths(value, path)
        else:
            out.add(path)
    return out
