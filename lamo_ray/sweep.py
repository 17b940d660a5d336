"""Sweeps: Ray Tune schedules trials (variants x grid x seeds) with ASHA; each trial is a Tune
function trainable that runs a Ray Train `TorchTrainer` (the supported Ray 2.60 pattern) and
reports through ``TuneReportCallback``, or, for a 1-worker trial (``train.launcher``), runs the
training loop in its own process and reports with ``ray.tune.report``; MLflow records the sweep
and every trial.

    python -m lamo_ray.sweep SWEEP.yaml [--set key.path=value ...] [--dry-run] [--resume] [--offline] [--verbose]

Data flow: sweep YAML -> `lamo_ray.config.load_sweep` -> missing inputs fetched (`lamo_ray.inputs`;
not with ``--offline``) -> preflight checks (datasets, backbones,
environments, CPUs; before any compute) -> Tune param space -> `run_trial` -> `TorchTrainer`
workers, or the trial's own process for 1 worker (`lamo_ray.train`) -> checkpoints + rollout
actors -> metrics -> ASHA and MLflow.

Locally it starts Ray itself (dashboard on 127.0.0.1:8265); under ``ray job submit`` or with
``RAY_ADDRESS`` / ``--address`` it connects to that cluster.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lamo_ray.config import (ConfigError, SweepConfig, TrialConfig, find_domains, load_sweep,
                             resolve_trial, resolve_tune_config, tune_variant_and_params)

log = logging.getLogger(__name__)

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


class PreflightError(RuntimeError):
    """A dataset, backbone, environment or resource the sweep needs is not available."""


@dataclass
class Check:
    """One preflight check. ``obtainable``: a failed check whose input is merely not on this
    machine yet (a hub dataset or backbone not downloaded; ``detail`` says how to get it), as
    opposed to a broken input (corrupt file, wrong sizes, bad path). ``--dry-run`` exits 0 when
    only obtainable inputs are missing, so paper-scale configs can be validated anywhere."""
    kind: str
    name: str
    ok: bool
    detail: str
    obtainable: bool = False


# --------------------------------------------------------------------------- preflight


def check_datasets(configs: list[TrialConfig], generate: bool) -> tuple[list[Check], dict[str, Any]]:
    """Load every dataset once (generating, when ``generate``, the ones a domain makes here on first
    use: `lamo_ray.domains.Domain.generates`); check each (source, sample_ratio, seed) keeps at
    least one trajectory. Returns checks and {source: dataset}: the `TrajectoryDataset`, or for a
    source only continual trials use a `DatasetSummary` (those trials read their tasks' data
    themselves, so the datasets are checked one at a time and never held together here)."""
    from lamo_ray import domains
    from lamo_ray.data.loading import load_dataset
    from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, DatasetSummary, subsample

    checks, loaded = [], {}
    users: dict[str, list[TrialConfig]] = {}
    for c in configs:
        for source in dict.fromkeys(c.data_sources.values()):
            users.setdefault(source, []).append(c)
    for source in sorted(users):
        domain = domains.for_dataset(source)
        maker = domain if domain is not None and domain.generates(source) else None
        try:
            ds = load_dataset(source)
        except DatasetError as err:
            if maker is not None and generate:
                print(f"dataset {source} not found: generating it now (python -m lamo_ray.collect {maker.name})",
                      flush=True)
                maker.ensure_dataset(source)
                ds = load_dataset(source)
            elif maker is not None:
                checks.append(Check("dataset", source, True,
                                    f"missing; will be generated on first run (python -m lamo_ray.collect {maker.name})"))
                continue
            else:
                checks.append(Check("dataset", source, False, str(err),
                                    obtainable=isinstance(err, DatasetNotDownloadedError)))
                continue
        checks.append(Check("dataset", source, True,
                            f"{len(ds.trajectories)} trajectories, {ds.num_transitions} transitions, "
                            f"obs {tuple(ds.obs_shape)}, act {ds.act_dim}"))
        for ratio, seed, weighting in dict.fromkeys((c.data.sample_ratio, c.seed, c.data.subsample)
                                                    for c in users[source]):
            try:
                subsample(ds, ratio, seed, weighting=weighting)
            except DatasetError as err:
                checks.append(Check("dataset", f"{source} @ data.sample_ratio={ratio}", False, str(err)))
        continual_only = all(c.continual is not None for c in users[source])
        loaded[source] = DatasetSummary.of(ds) if continual_only else ds
        del ds
    return checks, loaded


def check_backbone(name: str, pretrained: bool) -> Check:
    """Is the backbone's config (and, for pretrained, its weights) available without training?
    Resolution as in training (`lamo_ray.backbones.availability`): local dir, fetched offline
    backbone, Hugging Face cache, hub."""
    from lamo_ray.backbones import BackboneUnavailableError, availability

    label = f"{name} ({'pretrained' if pretrained else 'random init'})"
    try:
        return Check("backbone", label, True, availability(name, pretrained))
    except BackboneUnavailableError as err:
        return Check("backbone", label, False, str(err), obtainable=True)
    except Exception as err:  # noqa: BLE001 - hub/network errors of any kind
        return Check("backbone", label, False,
                     f"{name!r} is not available locally and could not be fetched ({type(err).__name__}); "
                     f"get it with `hf download {name}` where the network allows, "
                     "or set model.backbone to a local directory", obtainable=True)


def check_environments(configs: list[TrialConfig], datasets: dict[str, Any]) -> list[Check]:
    """Each (env, dataset) pair: the env exists and its flattened observation / action sizes match."""
    import numpy as np

    from lamo_ray.envs import evaluation_env_kwargs, flatten_observation, make_env

    checks, seen = [], set()
    for c, source in ((c, source) for c in configs for source in c.data_sources.values()):
        ds = datasets.get(source)
        env_id = c.eval.env_id or (ds.env_id if ds is not None else None)
        if env_id is None:
            if ds is not None:
                checks.append(Check("env", f"(for {source})", False,
                                    f"eval.env_id not set and dataset {source!r} names no environment"))
            continue
        key = (env_id, source)
        if key in seen:
            continue
        seen.add(key)
        try:
            env = make_env(env_id, **evaluation_env_kwargs(env_id, ds.env_kwargs if ds is not None
                                                            and env_id == ds.env_id else None))
            obs, _ = env.reset(seed=0)
            obs_shape = flatten_observation(env_id, obs).shape
            act = env.action_space
            act_dim = int(act.n) if hasattr(act, "n") else int(np.prod(act.shape))
            env.close()
        except Exception as err:  # noqa: BLE001
            checks.append(Check("env", env_id, False, f"eval.env_id={env_id!r} cannot be made: {err}"))
            continue
        if ds is not None and (tuple(obs_shape) != tuple(ds.obs_shape) or act_dim != ds.act_dim):
            checks.append(Check("env", env_id, False,
                                f"eval.env_id={env_id!r} has observation {tuple(obs_shape)} / action {act_dim} but "
                                f"dataset {source!r} has {tuple(ds.obs_shape)} / {ds.act_dim}"))
        else:
            checks.append(Check("env", env_id, True, f"observation {tuple(obs_shape)}, action {act_dim}"))
    return checks


def check_online(configs: list[TrialConfig], datasets: dict[str, Any]) -> list[Check]:
    """Trials with an ``online:`` section: an environment to collect in (the dataset's, or
    ``eval.env_id``) and continuous actions (the TD3 critic and ODT's tanh-Gaussian head need them).
    Whether the env can be made, with the data's sizes, is `check_environments`."""
    checks, seen = [], set()
    for c in configs:
        ds = datasets.get(c.data.source)
        if c.online is None or ds is None or (c.data.source, c.online.method) in seen:
            continue
        seen.add((c.data.source, c.online.method))
        name = f"{c.online.method} on {c.data.source}"
        if (c.eval.env_id or ds.env_id) is None:
            checks.append(Check("online", name, False, f"online: dataset {c.data.source!r} names no environment and "
                                "eval.env_id is not set, so there is no simulator to collect in"))
        elif ds.discrete_actions:
            checks.append(Check("online", name, False, f"online.method {c.online.method!r}: dataset "
                                f"{c.data.source!r} has discrete actions; online fine-tuning here (TD3 critic, "
                                "tanh-Gaussian head) needs continuous actions"))
        else:
            checks.append(Check("online", name, True, f"collects in {c.eval.env_id or ds.env_id}"))
    return checks


def check_continual(configs: list[TrialConfig], datasets: dict[str, Any]) -> list[Check]:
    """Trials with a ``continual:`` section: every task's data fit the multi-domain DT's shared
    state and action sizes (``continual.mddt``), with vector states and continuous actions. Missing
    data are `check_datasets`'s."""
    from lamo_ray.continual import target_return

    checks, seen = [], set()
    for c in configs:
        if c.continual is None:
            continue
        m = c.continual.mddt
        for task, source in c.data_sources.items():
            ds = datasets.get(source)
            key = (source, m.state_dim, m.action_dim, c.continual.target_return, task in c.continual.evaluated)
            if ds is None or key in seen:
                continue
            seen.add(key)
            s = int(ds.obs_shape[0]) if len(ds.obs_shape) == 1 else None
            target_error = None
            # the rule that needs what the data recorded; only evaluated tasks have a target
            if c.continual.target_return == "expert" and task in c.continual.evaluated:
                try:
                    target_return(ds, "expert", source)
                except ValueError as err:
                    target_error = str(err)
            if s is None or ds.discrete_actions:
                checks.append(Check("continual", f"{task}: {source}", False, f"continual: task {task!r} needs vector "
                                    f"states and continuous actions; {source!r} has {tuple(ds.obs_shape)} / "
                                    f"{'discrete' if ds.discrete_actions else 'continuous'} actions"))
            elif target_error is not None:
                checks.append(Check("continual", f"{task}: {source}", False, target_error))
            elif s > m.state_dim or ds.act_dim > m.action_dim:
                checks.append(Check("continual", f"{task}: {source}", False,
                                    f"continual.mddt: task {task!r} has state {s} / action {ds.act_dim} dimensions, "
                                    f"above continual.mddt.state_dim {m.state_dim} / action_dim {m.action_dim}"))
            else:
                checks.append(Check("continual", f"{task}: {source}", True,
                                    f"state {s} / action {ds.act_dim} in {m.state_dim} / {m.action_dim}"))
    return checks


def check_corpora(configs: list[TrialConfig]) -> list[Check]:
    """For trials with the language loss: the corpus can be read and the backbone's tokenizer loaded.
    WikiText-103 is checked in the `datasets` cache (no network request)."""
    from lamo_ray.language import WIKITEXT, WIKITEXT_REPO, CorpusError, load_tokenizer, read_corpus, wikitext_cached

    checks = []
    for corpus, backbone in sorted({(c.language.corpus, c.model.backbone) for c in configs if c.language.co_lambda > 0}):
        label = f"{corpus} (tokenizer of {backbone})"
        if corpus == WIKITEXT:
            if not wikitext_cached():
                checks.append(Check("corpus", label, False, f"language.corpus={corpus!r} is not in the `datasets` "
                                    f"cache; a sweep run without --offline downloads it ({WIKITEXT_REPO}) where "
                                    "the network allows", obtainable=True))
                continue
            detail = f"in the `datasets` cache ({WIKITEXT_REPO})"
        else:
            try:
                detail = f"{len(read_corpus(corpus)):,} characters"
            except CorpusError as err:  # a local path that is missing or empty: a broken input
                checks.append(Check("corpus", label, False, str(err)))
                continue
        try:
            load_tokenizer(backbone)
        except Exception as err:  # noqa: BLE001 - the tokenizer is fetched like the backbone
            checks.append(Check("corpus", label, False, str(err), obtainable=True))
            continue
        checks.append(Check("corpus", label, True, detail))
    return checks


def collecting_actors(cfg: TrialConfig) -> int:
    """Rollout actors a trial's online phase starts (``online.num_actors``; 0 offline). They run on CPUs
    and reserve ``eval.actor_cpus`` each, as the evaluation actors."""
    return 0 if cfg.online is None else cfg.online.num_actors


def evaluating_actors(cfg: TrialConfig) -> int:
    """Rollout actors a trial evaluates with: ``eval.num_actors``, or for a continual trial one per
    evaluated task (`lamo_ray.continual.evaluation.TaskEvaluator`, CPU only)."""
    return len(cfg.continual.evaluated) if cfg.continual is not None else cfg.eval.num_actors


def trial_cpus(sweep: SweepConfig, cfg: TrialConfig) -> float:
    """Ray CPUs one trial holds: its driver, its DDP workers and its rollout actors (evaluating and
    collecting)."""
    return (sweep.trial_cpus + cfg.train.num_workers * cfg.train.cpus_per_worker
            + (evaluating_actors(cfg) + collecting_actors(cfg)) * cfg.eval.actor_cpus)


def trial_gpus(cfg: TrialConfig) -> float:
    """Ray GPUs one trial holds: one per DDP worker with ``train.use_gpu``, plus its rollout actors' shares."""
    actors = 0 if cfg.continual is not None else cfg.eval.num_actors   # TaskEvaluator's actors are CPU only
    return cfg.train.num_workers * float(cfg.train.use_gpu) + actors * cfg.eval.gpus_per_actor


def resource_plan(sweep: SweepConfig, rows: list[dict[str, Any]], cluster_cpus: float | None,
                  cluster_gpus: float | None) -> str:
    """One line per variant with what a trial asks Ray for (CPUs, GPUs), then how many trials can run at
    once (``max_concurrent_trials``, else what the cluster's CPUs and GPUs allow; unknown without a
    cluster). For ``--dry-run``: what to provision before submitting."""
    lines, per_trial = [], []
    for variant in sweep.variants:
        cfg = next(r["config"] for r in rows if r["variant"] == variant)
        cpus, gpus = trial_cpus(sweep, cfg), trial_gpus(cfg)
        per_trial.append((cpus, gpus))
        lines.append(f"  {variant}: {cpus:g} CPUs, {gpus:g} GPUs per trial ({cfg.train.num_workers} training worker(s)"
                     f"{' on GPU' if cfg.train.use_gpu else ''}, {evaluating_actors(cfg)} rollout actor(s) x "
                     f"{cfg.eval.actor_cpus:g} CPU / {0 if cfg.continual else cfg.eval.gpus_per_actor:g} GPU"
                     + (" (one per evaluated task)" if cfg.continual else "")
                     + (f", {collecting_actors(cfg)} collecting actor(s) x {cfg.eval.actor_cpus:g} CPU"
                        if collecting_actors(cfg) else "") + ")")
    n = len(rows) * sweep.num_samples
    most_cpus = max(c for c, _ in per_trial)
    most_gpus = max(g for _, g in per_trial)
    if sweep.max_concurrent_trials:
        at_once = f"at most {sweep.max_concurrent_trials} at once (max_concurrent_trials)"
    elif cluster_cpus is None:
        at_once = "as many at once as the cluster fits"
    else:
        fits = int(cluster_cpus // most_cpus)
        if most_gpus > 0:
            fits = min(fits, int((cluster_gpus or 0) // most_gpus))
        at_once = (f"{fits} at once on {cluster_cpus:g} CPUs" + (f" / {cluster_gpus or 0:g} GPUs" if most_gpus else "")
                   + " (the largest trial's request)")
    lines.append(f"  {n} trials, {at_once}; to run all at once: {n * most_cpus:g} CPUs, {n * most_gpus:g} GPUs")
    return "\n".join(lines)


class TrialResources:
    """Tune resource request of one trial (``tune.with_resources``), from its resolved config.

    A Ray Train trial's function only waits on its `TorchTrainer`: ``trial_cpus``; the worker group
    reserves its own CPUs. An 'in_trial' trial trains in its own process: ``trial_cpus +
    cpus_per_worker`` (and a GPU with ``use_gpu``), plus one bundle per rollout actor that reserves
    CPUs or a GPU share (``eval.actor_cpus``, ``eval.gpus_per_actor``), which Tune's placement group
    holds for the actors the trial starts."""

    def __init__(self, sweep: SweepConfig):
        self.sweep = sweep

    def __call__(self, config: dict[str, Any]):
        return self.request(resolve_tune_config(self.sweep, config))

    def request(self, cfg: TrialConfig):
        """The placement group factory for the resolved trial config ``cfg``."""
        from ray.tune import PlacementGroupFactory

        if not cfg.train.in_trial:
            return PlacementGroupFactory([{"CPU": self.sweep.trial_cpus}])
        head = {"CPU": self.sweep.trial_cpus + cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})}
        actor = {k: v for k, v in (("CPU", cfg.eval.actor_cpus), ("GPU", cfg.eval.gpus_per_actor)) if v > 0}
        actors = [actor] * cfg.eval.num_actors if actor else []
        if cfg.eval.actor_cpus > 0:  # the online phase's collecting actors (CPU only)
            actors += [{"CPU": cfg.eval.actor_cpus}] * collecting_actors(cfg)
        return PlacementGroupFactory([head, *actors])


def tune_max_failures(configs: list[TrialConfig]) -> int:
    """Tune-level restarts of a failed trial: the largest ``train.max_failures`` of the 'in_trial'
    trials (-1 if any is unlimited), which have no Train worker group to restart; 0 if none."""
    values = [c.train.max_failures for c in configs if c.train.in_trial]
    return -1 if -1 in values else max(values, default=0)


def check_resources(sweep: SweepConfig, rows: list[dict[str, Any]], cluster_cpus: float,
                    cluster_gpus: float | None = None) -> list[Check]:
    """Every trial must fit the cluster, or Tune would wait for it forever. GPUs are checked when
    ``cluster_gpus`` is known; a missing GPU is ``obtainable`` (a cluster to run on, not a broken input)."""
    checks = []
    for row in rows:
        cfg = row["config"]
        need = trial_cpus(sweep, cfg)
        if need > cluster_cpus + 1e-9:
            checks.append(Check("resources", f"variant {row['variant']}", False,
                                f"a trial needs {need:g} CPUs (trial_cpus {sweep.trial_cpus:g} + train.num_workers "
                                f"{cfg.train.num_workers} x train.cpus_per_worker {cfg.train.cpus_per_worker:g} + "
                                f"(eval.num_actors + online.num_actors) x eval.actor_cpus) but the cluster has {cluster_cpus:g}; lower "
                                f"train.num_workers or train.cpus_per_worker, or use a bigger cluster (--address)"))
            break
        gpus = trial_gpus(cfg)
        if cluster_gpus is not None and gpus > cluster_gpus + 1e-9:
            checks.append(Check("resources", f"variant {row['variant']}", False,
                                f"a trial needs {gpus:g} GPUs (train.num_workers {cfg.train.num_workers} x "
                                f"train.use_gpu {str(cfg.train.use_gpu).lower()} + eval.num_actors x "
                                f"eval.gpus_per_actor) but {'this machine' if cluster_gpus == 0 else 'the cluster'} "
                                f"has {cluster_gpus:g}; run it on a GPU cluster (ray job submit / --address) or "
                                f"--set train.use_gpu=false to train on CPUs", obtainable=True))
            break
    if not checks:
        most = max(trial_cpus(sweep, r["config"]) for r in rows)
        gpus = max(trial_gpus(r["config"]) for r in rows)
        checks.append(Check("resources", "CPUs", True, f"largest trial needs {most:g} of {cluster_cpus:g} CPUs"
                            + (f" and {gpus:g} of {cluster_gpus:g} GPUs" if gpus and cluster_gpus is not None else "")))
    return checks


def local_cpus() -> float:
    """CPUs a local Ray started here would have (Ray's own count, which honours cgroup limits)."""
    try:
        from ray._private.utils import get_num_cpus

        return float(get_num_cpus(override_docker_cpu_warning=True))
    except Exception:  # noqa: BLE001 - private API; fall back to the CPUs this process may use
        return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _local_gpus() -> float:
    """CUDA GPUs a local Ray started here would have."""
    import torch

    return float(torch.cuda.device_count()) if torch.cuda.is_available() else 0.0


def check_storage(sweep: SweepConfig) -> Check:
    """``storage_path`` exists as a writable folder or can be created (checked without writing)."""
    path = Path(sweep.storage_path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        return Check("storage", str(path), False, f"storage_path={sweep.storage_path!r} exists but is not a folder")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check("storage", str(path), False,
                     f"storage_path={sweep.storage_path!r} cannot be written ({existing} is not a writable folder); "
                     "set storage_path to a folder you can write")
    return Check("storage", str(path), True, "writable" if path.exists() else f"will be created in {existing}")


def preflight(sweep: SweepConfig, rows: list[dict[str, Any]], generate: bool,
              loaded: dict[str, Any] | None = None) -> list[Check]:
    """Storage, dataset, backbone and environment checks (resources are checked against the cluster
    Ray connects to; `main` checks them against this machine first when it starts Ray itself).
    ``loaded``, if given, receives the datasets loaded on the way (`check_datasets`'s {source: dataset})."""
    configs = [r["config"] for r in rows]
    storage = check_storage(sweep)
    if not storage.ok:  # before datasets: nothing is generated for a sweep that cannot store results
        return [storage]
    checks, datasets = check_datasets(configs, generate)
    if loaded is not None:
        loaded.update(datasets)
    checks.insert(0, storage)
    for name, pretrained in sorted({(c.model.backbone, c.model.pretrained) for c in configs}):
        checks.append(check_backbone(name, pretrained))
    checks += check_environments(configs, datasets)
    checks += check_online(configs, datasets)
    checks += check_continual(configs, datasets)
    checks += check_corpora(configs)
    return checks


def _raise_failed(checks: list[Check]) -> None:
    failed = [c for c in checks if not c.ok]
    if failed:
        raise PreflightError("\n".join(f"{c.kind} {c.name}: {c.detail}" for c in failed))


# --------------------------------------------------------------------------- printing


TABLE_FIELDS = [("backbone", "model.backbone"), ("pre", "model.pretrained"), ("finetune", "model.finetune"),
                ("embed", "model.embedding"), ("co_lambda", "language.co_lambda"), ("ratio", "data.sample_ratio"),
                ("K", "data.context_length"), ("steps", "train.steps"), ("workers", "train.num_workers"),
                ("launcher", "train.resolved_launcher"), ("online", "online.method"),
                ("online_iters", "online.iterations")]


def _get(cfg: TrialConfig, dotted: str) -> Any:
    """``cfg``'s value at ``dotted``; None below an unset optional section (``online`` offline)."""
    node: Any = cfg
    for part in dotted.split("."):
        if node is None:
            return None
        node = getattr(node, part)
    return node


def format_trial_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (pandas): one line per trial with its variant, seed, key settings and the
    values (or search domains) of the swept key paths."""
    import pandas as pd

    extra = sorted({k for r in rows for k in r["params"] if k not in dict(TABLE_FIELDS).values()})
    # the online columns only for sweeps with online trials
    fields = [(h, path) for h, path in TABLE_FIELDS if any(_get(r["config"], path) is not None for r in rows)]
    table = pd.DataFrame([{"variant": r["variant"], "seed": r["seed"],
                           **{h: str(_get(r["config"], path)) for h, path in fields},
                           **{k: str(r["params"].get(k, "")) for k in extra}} for r in rows])
    return table.to_string()


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"  [{'ok' if c.ok else 'MISSING'}] {c.kind:9s} {c.name}: {c.detail}" for c in checks)


# --------------------------------------------------------------------------- trials


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """`lamo_ray.train.train_loop_per_worker`, imported in the worker: the trial driver then never
    imports torch / transformers / peft (~10 s per trial process on this machine)."""
    from lamo_ray.train import train_loop_per_worker

    train_loop_per_worker(loop_config)


def run_trial(config: dict[str, Any], sweep: SweepConfig, tracking: dict[str, str],
              dataset_refs: dict[str, Any] | None = None, backbone_refs: dict[str, Any] | None = None) -> None:
    """Tune function trainable: resolve one trial's config, open its MLflow run, and train: in this
    process (`lamo_ray.train.TuneTrialSession`) when ``train.in_trial``, else with a TorchTrainer.

    ``config`` holds ``seed``, ``stage`` and ``variant`` with one entry per search-domain key path (a
    search trial), or ``point`` = {variant, params} (a confirmation trial).
    ``dataset_refs``: {source: ObjectRef of its loaded `TrajectoryDataset`} put in Ray's object store
    once by the sweep driver; the workers read it from there (zero-copy arrays on the same node)
    instead of each loading the files again. ``backbone_refs``: {backbone name:
    `lamo_ray.backbones.ShippedBackbone`} (`ship_backbones`), the same for backbone files.
    """
    from ray import tune

    from lamo_ray.tracking import find_trial_run, log_trial_timing, start_trial_run

    started = time.time()
    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = resolve_tune_config(sweep, config)
    run_id = find_trial_run(tracking["uri"], tracking["experiment_id"], tracking["parent_run_id"], trial_id)
    if run_id is None:
        run_id = start_trial_run(tracking["uri"], tracking["experiment_id"], tracking["parent_run_id"],
                                 trial_name, tune_variant_and_params(config)[0], cfg, trial_id=trial_id,
                                 stage=config.get("stage", "main"))
    loop_config = {"trial": cfg, "mlflow_uri": tracking["uri"], "mlflow_run_id": run_id,
                   "mlflow_outbox": tracking.get("outbox"), "dataset_ref": (dataset_refs or {}).get(cfg.data.source),
                   "backbone": (backbone_refs or {}).get(cfg.model.backbone)}
    fit_started = time.time()
    if cfg.train.in_trial:
        from lamo_ray.train import TuneTrialSession, train_loop_per_worker

        # the trial's folder in Tune's storage: <storage_path>/<sweep run name>/<trial dir name>
        storage_dir = Path(tracking["train_storage"]).parent / tracking["run_name"] / Path(ctx.get_trial_dir()).name
        train_loop_per_worker(loop_config, TuneTrialSession(cfg.train.use_gpu, started, storage_dir))
    else:
        _fit_torch_trainer(cfg, loop_config, f"{tracking['run_name']}-{trial_id}", tracking["train_storage"])
    import psutil

    log_trial_timing(tracking["uri"], run_id, {"time/trial_process_age_s": started - psutil.Process().create_time(),
                                               "time/trial_driver_setup_s": fit_started - started,
                                               "time/trial_fit_s": time.time() - fit_started,
                                               "time/trial_wall_s": time.time() - started},
                     outbox_dir=tracking.get("outbox"))


def _fit_torch_trainer(cfg: TrialConfig, loop_config: dict[str, Any], name: str, storage_path: str) -> None:
    """One trial's Ray Train `TorchTrainer`: ``train.num_workers`` DDP workers, restarts from its
    checkpoints (kept in ``storage_path/name``, found again by name after ``--resume``)."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                               resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    ).fit()


def _param_space(sweep: SweepConfig, stage: str = "main") -> dict[str, Any]:
    """Tune's param space of the sweep's first (or only) stage: variants x seeds x search domains."""
    from ray import tune

    space: dict[str, Any] = {"variant": tune.grid_search(list(sweep.variants)), "seed": tune.grid_search(sweep.seeds),
                             "stage": stage}
    for path, domain in find_domains(sweep.base).items():
        kind, args = next(iter(domain.items()))
        space[path] = {"grid": tune.grid_search, "choice": tune.choice}[kind](args) if kind in ("grid", "choice") \
            else getattr(tune, kind)(*args)
    return space


def _free_port(preferred: int) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a free port the OS picks."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init_ray(address: str | None, worker_logs_to_console: bool = False) -> None:
    """Connect to ``address`` / $RAY_ADDRESS, or start a local Ray bound to 127.0.0.1.

    Worker output (trial logs, rollout actors' env warnings, Ray Train internals) goes to Ray's log
    files, whose folder is printed, unless ``worker_logs_to_console`` (``--verbose``): the console
    stays Tune's progress table, the sweep's own lines and the summary.

    A local Ray also pins its workers to its own dashboard (RAY_API_SERVER_ADDRESS): Ray Train's
    placement-group cleaner looks the cluster up through the state API, and with another Ray
    instance on the machine (a `ray start` cluster, another sweep) that lookup is ambiguous and
    finished trials' CPUs were never released (seen here: the next trials waited forever)."""
    import ray

    env_vars = {HEALTH_CHECK_ENV: os.environ.get(HEALTH_CHECK_ENV, "0.2")}
    os.environ.setdefault(HEALTH_CHECK_ENV, env_vars[HEALTH_CHECK_ENV])
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=worker_logs_to_console)
    else:
        # Train V2 needs the dashboard process (FACTS.md); bind it and the node to loopback only.
        port = _free_port(8265)
        env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # address="local": a new instance even when /tmp/ray/ray_current_cluster names a `ray start`
        # cluster (alive, or dead without `ray stop`), which ray.init() would otherwise try to join
        ctx = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                       _node_ip_address="127.0.0.1", runtime_env={"env_vars": env_vars},
                       log_to_driver=worker_logs_to_console)
    if ctx.dashboard_url:
        token = " (it asks for the Ray token: `ray get-auth-token` prints it)" \
            if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ""
        print(f"Ray dashboard: http://{ctx.dashboard_url}{token}", flush=True)
    else:
        print("Ray dashboard: not running", flush=True)
    session_dir = (ctx.address_info or {}).get("session_dir")
    if session_dir and not worker_logs_to_console:
        print(f"worker logs: {Path(session_dir) / 'logs'} (--verbose shows them here)", flush=True)


def _experiment_dir(sweep: SweepConfig, resume: bool) -> tuple[str, Path]:
    """(run name, Tune experiment dir). An existing name is never overwritten: without --resume
    the run gets a timestamped name beside it."""
    root = Path(sweep.storage_path).expanduser().resolve()
    path = root / sweep.name
    if resume:
        if not path.exists():
            raise PreflightError(f"--resume: no sweep {sweep.name!r} at {path}")
        return sweep.name, path
    if path.exists():
        name = f"{sweep.name}_{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"sweep {sweep.name!r} already has results at {path}; this run is {name!r} "
              "(pass --resume to continue the existing one)", flush=True)
        return name, root / name
    return sweep.name, path


def ship_backbones(configs: list[TrialConfig]) -> dict[str, Any]:
    """Put each backbone's files (config, weights, tokenizer: what the trials read) into Ray's object
    store once: {name: `lamo_ray.backbones.ShippedBackbone`}. Train workers on any node load them from
    there (`lamo_ray.backbones.receive`), so only this machine needs the files."""
    from lamo_ray.backbones import ship
    from lamo_ray.inputs import backbone_parts, format_bytes

    shipped = {}
    for name, parts in sorted(backbone_parts(configs).items()):
        item = ship(name, parts)
        if item is not None:
            shipped[name] = item
            print(f"backbone {name}: {', '.join(parts)} ({format_bytes(item.total_bytes)}) in Ray's object store "
                  "for the workers on every node", flush=True)
    return shipped


def run_sweep(sweep: SweepConfig, rows: list[dict[str, Any]], address: str | None = None,
              resume: bool = False, verbose: bool = False, offline: bool = False) -> list[dict[str, Any]]:
    """Run the sweep to completion; returns one summary row per trial. ``verbose``: Ray workers'
    output on the console too (else only in Ray's log files). Missing inputs are fetched first
    (`lamo_ray.inputs`) unless ``offline``."""
    import ray
    from ray import tune

    from lamo_ray.data.trajectories import TrajectoryDataset
    from lamo_ray.inputs import fetch_inputs, plan_inputs
    from lamo_ray.report import ReportError, generate_report
    from lamo_ray.tracking import check_tracking, finish_sweep_run, resolve_tracking_uri, start_sweep_run, trial_outcomes

    fetch_inputs(plan_inputs([r["config"] for r in rows]), offline)
    loaded: dict[str, Any] = {}
    checks = preflight(sweep, rows, generate=True, loaded=loaded)
    print(format_checks(checks), flush=True)
    _raise_failed(checks)
    if not (address or os.environ.get("RAY_ADDRESS")):  # a local Ray gets this machine's CPUs and GPUs
        _raise_failed(check_resources(sweep, rows, local_cpus(), _local_gpus()))
    uri = resolve_tracking_uri(sweep.tracking.uri)
    check_tracking(uri)
    run_name, exp_dir = _experiment_dir(sweep, resume)
    _init_ray(address, worker_logs_to_console=verbose)
    cluster = ray.cluster_resources()
    cluster_cpus = float(cluster.get("CPU", 0))
    resource_checks = check_resources(sweep, rows, cluster_cpus, float(cluster.get("GPU", 0)))
    print(format_checks(resource_checks), flush=True)
    _raise_failed(resource_checks)

    experiment = sweep.tracking.experiment or sweep.name
    exp_id, parent = start_sweep_run(uri, experiment, run_name, sweep, resume=resume)
    tracking = {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "run_name": run_name,
                "train_storage": str(exp_dir.parent / f"{run_name}_train")}
    tracking["outbox"] = str(Path(tracking["train_storage"]) / "mlflow_outbox")  # MLflow writes made in an outage
    # vector datasets go to the object store once (image datasets stay lazily read from their files)
    shared = {"dataset_refs": {source: ray.put(ds) for source, ds in loaded.items()
                               if isinstance(ds, TrajectoryDataset) and len(ds.obs_shape) == 1},
              "backbone_refs": ship_backbones([r["config"] for r in rows])}
    max_concurrent = sweep.max_concurrent_trials or max(1, int(cluster_cpus // max(
        trial_cpus(sweep, r["config"]) for r in rows)))
    stage = "search" if sweep.confirm else "main"
    t0 = time.time()
    results = _run_stage(sweep, rows, tracking, shared, run_name, exp_dir, resume, max_concurrent,
                         _param_space(sweep, stage), scheduler_type=sweep.scheduler.type)
    tune_results = list(results)
    num_errors = results.num_errors
    if sweep.confirm:
        selection = select_configurations(sweep, tune_results)
        _log_selection(uri, parent, selection, tracking["outbox"])
        print(format_selection(selection), flush=True)
        confirm_name = f"{run_name}{CONFIRM_SUFFIX}"
        confirm_dir = exp_dir.parent / confirm_name
        confirm_rows = [dict(r, seed=seed) for r in selection for seed in sweep.confirm.seeds]
        space = {"point": tune.grid_search([{"variant": r["variant"], "params": r["params"]} for r in selection]),
                 "seed": tune.grid_search(sweep.confirm.seeds), "stage": "confirm"}
        confirmed = _run_stage(sweep, [{"config": resolve_trial(sweep, r["variant"], r["seed"], r["params"])}
                                       for r in confirm_rows],
                               dict(tracking, run_name=confirm_name), shared, confirm_name, confirm_dir,
                               resume and confirm_dir.exists(), max_concurrent, space, scheduler_type="fifo")
        tune_results += list(confirmed)
        num_errors += confirmed.num_errors
    # from MLflow, not the finalizer's memory: after --resume it also holds the trials finished
    # before the driver stopped; trials that never opened an MLflow run come from Tune's results
    summary = trial_outcomes(uri, exp_id, parent, outbox_dir=tracking["outbox"])
    seen = {row["trial"] for row in summary}
    for result in tune_results:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id not in seen and result.error is not None:
            config = result.config or {}
            summary.append({"trial": trial_id, "stage": config.get("stage", "main"),
                            "variant": tune_variant_and_params(config)[0] if config else None,
                            "seed": config.get("seed"), "outcome": "failed", "step": None,
                            "normalized_score": None, "mlflow_run_id": None})
    finish_sweep_run(uri, parent, summary, time.time() - t0, num_errors=num_errors, outbox_dir=tracking["outbox"])
    try:
        report = generate_report(uri, experiment, exp_dir / "report", parent_run_id=parent)
        print("\nWhat the data support:\n" + "\n".join(f"  {line}" for line in report.findings), flush=True)
        print(f"report: {report.path} (also in MLflow, run {parent}, artifacts report/)", flush=True)
    except ReportError as err:  # the sweep's results are safe in MLflow; say why there is no report
        print(f"no report: {err}", file=sys.stderr, flush=True)
    return summary


CONFIRM_SUFFIX = "-confirm"   # Tune experiment of the confirmation stage: <sweep run name>-confirm


def _run_stage(sweep: SweepConfig, rows: list[dict[str, Any]], tracking: dict[str, str], shared: dict[str, Any],
               name: str, exp_dir: Path, resume: bool, max_concurrent: int, param_space: dict[str, Any],
               scheduler_type: str):
    """One Tune experiment ``name`` of the sweep (its search, or its confirmation stage) over
    ``param_space``; ``rows`` hold the `TrialConfig` of every trial it runs (for Tune's retry budget);
    ``shared``: `run_trial`'s ``dataset_refs`` and ``backbone_refs``. Returns Tune's ``ResultGrid``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from lamo_ray.tracking import MLflowTrialFinalizer

    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=sweep, tracking=tracking,
                                                         **shared),
                                    TrialResources(sweep))
    if resume:
        # Tune restores its own RunConfig (with the MLflowTrialFinalizer it was given) from tuner.pkl;
        # finished trials stay finished, unfinished and errored ones restart, and run_trial finds
        # their MLflow runs by trial id and their Train checkpoints by run name (no duplicates).
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True).fit()
    if scheduler_type == "asha":
        scheduler = ASHAScheduler(time_attr="step", max_t=max(r["config"].total_steps for r in rows),
                                  grace_period=sweep.scheduler.grace_period,
                                  reduction_factor=sweep.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    finalizer = MLflowTrialFinalizer(tracking["uri"], outbox_dir=tracking["outbox"],
                                     experiment_id=tracking["experiment_id"],
                                     parent_run_id=tracking["parent_run_id"], sweep=sweep)
    # 'in_trial' trials: Tune restarts a failed one from its last checkpoint and keeps 2 checkpoints
    # (Ray Train does both for its own trials)
    run_config = tune.RunConfig(name=name, storage_path=str(exp_dir.parent), callbacks=[finalizer],
                                failure_config=tune.FailureConfig(
                                    max_failures=tune_max_failures([r["config"] for r in rows])),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=sweep.scheduler.metric, mode=sweep.scheduler.mode, scheduler=scheduler,
                                    num_samples=sweep.num_samples if "point" not in param_space else 1,
                                    max_concurrent_trials=max_concurrent,
                                    # an ended trial's process (torch, the model code imported) trains
                                    # the next 'in_trial' trial with the same resource request
                                    reuse_actors=True),
        run_config=run_config,
    ).fit()


def select_configurations(sweep: SweepConfig, results: list[Any]) -> list[dict[str, Any]]:
    """The ``confirm.top_k`` best configurations of each variant from the search's Tune results.

    A configuration is a variant with values for the search domains; its search trials (one per
    search seed) are ranked by the furthest training step reached (what ASHA let run longest), then
    by the mean of the last reported ``scheduler.metric`` (``scheduler.mode``). Trials that reported
    nothing (failed before their first evaluation) do not count.

    Returns:
        ``[{"variant", "params": {key path: value}, "rank" (1 = best of its variant), "search_step",
        "search_score", "search_seeds"}]``, variants in sweep order.

    Raises:
        PreflightError: a variant has no search trial that reported a result.
    """
    sign = 1.0 if sweep.scheduler.mode == "max" else -1.0
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        metrics, config = result.metrics or {}, result.config or {}
        if "step" not in metrics or sweep.scheduler.metric not in metrics:
            continue
        variant, params = tune_variant_and_params(config)
        group = groups.setdefault((variant, yaml.safe_dump(params, sort_keys=True)),
                                  {"variant": variant, "params": params, "steps": [], "scores": [], "seeds": []})
        group["steps"].append(float(metrics["step"]))
        group["scores"].append(float(metrics[sweep.scheduler.metric]))
        group["seeds"].append(config.get("seed"))
    selection = []
    for variant in sweep.variants:
        candidates = [g for (v, _), g in groups.items() if v == variant]
        if not candidates:
            raise PreflightError(f"confirm: no search trial of variant {variant!r} reported a result, so there is "
                                 "nothing to confirm (see the failed trials above)")
        for g in candidates:
            g["search_step"] = float(np.mean(g["steps"]))
            finite = [x for x in g["scores"] if math.isfinite(x)]
            g["search_score"] = float(np.mean(finite)) if finite else float("nan")
        candidates.sort(key=lambda g: (-g["search_step"], -sign * g["search_score"]
                                       if math.isfinite(g["search_score"]) else math.inf))
        for rank, g in enumerate(candidates[:sweep.confirm.top_k], start=1):
            selection.append({"variant": variant, "params": g["params"], "rank": rank,
                              "search_step": g["search_step"], "search_score": g["search_score"],
                              "search_seeds": sorted(g["seeds"])})
    return selection


def _log_selection(uri: str, parent_run_id: str, selection: list[dict[str, Any]], outbox: str) -> None:
    """The search's picks as the parent run's `lamo_ray.tracking.SELECTION_FILE` artifact."""
    import tempfile

    from lamo_ray.tracking import SELECTION_FILE, RunLogger

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SELECTION_FILE
        path.write_text(yaml.safe_dump(selection, sort_keys=False))
        RunLogger(uri, parent_run_id, outbox_dir=outbox).log_artifact(path)


def format_selection(selection: list[dict[str, Any]]) -> str:
    """The configurations the search picked, one line each, for the console."""
    lines = ["confirmation: re-running the search's best configurations with fresh seeds, every trial to the end"]
    for r in selection:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"  {r['variant']} #{r['rank']}: {params} (search: step {r['search_step']:g}, "
                     f"score {r['search_score']:.2f} over seeds {r['search_seeds']})")
    return "\n".join(lines)


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The closing per-trial table: stage, variant, seed, outcome, last evaluated step and its
    normalized score with the 95% CI over that evaluation's episodes."""
    import pandas as pd

    def ci(row: dict[str, Any]) -> str:
        low, high = row.get("ci_low"), row.get("ci_high")
        if low is None or high is None or math.isnan(low) or math.isnan(high):
            return "-"
        return f"[{low:.1f}, {high:.1f}]"

    table = pd.DataFrame([{"trial": r.get("trial"), "stage": r.get("stage", "main"), "variant": r.get("variant"),
                           "seed": r.get("seed"), "outcome": r.get("outcome"),
                           "step": "-" if r.get("step") is None else int(r["step"]),
                           "last score": "-" if r.get("normalized_score") is None else f"{r['normalized_score']:.1f}",
                           "95% CI (episodes)": ci(r)} for r in summary])
    return table.to_string(index=False) if len(table) else "(no trials)"


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lamo_ray.sweep",
                                description="Run a LaMo / DT sweep with Ray Tune + ASHA, tracked in MLflow.")
    p.add_argument("sweep_file", help="sweep YAML (see sweeps/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a value (YAML syntax); trial sections (data, model, ...) apply to base")
    p.add_argument("--dry-run", action="store_true", help="validate, print the trial table and check inputs; no training")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
    p.add_argument("--offline", action="store_true",
                   help="fetch nothing and make no hub request (as HF_HUB_OFFLINE=1): missing inputs are errors "
                        "naming the command that gets them")
    p.add_argument("--verbose", action="store_true",
                   help="Ray workers' output and libraries' INFO logs on the console too (default: Ray's log files)")
    return p.parse_args(argv)


QUIET_LOGGERS = ("absl", "mlflow", "matplotlib", "alembic", "urllib3", "filelock", "httpx", "httpx2", "httpcore", "httpcore2")


def _configure_console(verbose: bool) -> None:
    """The sweep's own INFO lines on the console; other libraries' INFO chatter (rliable's absl, MLflow's
    database set-up, matplotlib's font cache) and MLflow's download progress bars only with ``verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its loggers' level at import


def main(argv: list[str] | None = None) -> int:
    from lamo_ray.inputs import format_plan, go_offline, offline_requested, plan_inputs

    args = _parse(argv)
    _configure_console(args.verbose)
    if args.offline:
        go_offline()
    offline = offline_requested()
    try:
        sweep = load_sweep(args.sweep_file, args.overrides)
        rows = sweep.trials
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"sweep {sweep.name!r}: {len(rows) * sweep.num_samples} trials "
          f"({len(sweep.variants)} variants x {len(rows) // (len(sweep.variants) * len(sweep.seeds))} grid points "
          f"x {len(sweep.seeds)} seeds{f' x {sweep.num_samples} samples' if sweep.num_samples > 1 else ''})"
          + (f", scheduled by {sweep.scheduler.type.upper()}" + (" (the search)" if sweep.confirm else "")))
    print(format_trial_table(rows), flush=True)
    if sweep.confirm:
        n = sweep.confirm.top_k * len(sweep.variants) * len(sweep.confirm.seeds)
        print(f"then the confirmation: the best {sweep.confirm.top_k} configuration(s) of each of the "
              f"{len(sweep.variants)} variant(s) x seeds {sweep.confirm.seeds} = up to {n} trials, every one to its "
              "train.steps (FIFO); the report scores arms only from these", flush=True)
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    if args.dry_run:
        print(format_plan(plan_inputs([r["config"] for r in rows]), offline))
        checks = preflight(sweep, rows, generate=False)
        checks += check_resources(sweep, rows, local_cpus(), _local_gpus()) if local else \
            [Check("resources", "CPUs", True, "checked against the cluster once Ray connects")]
        print("checks:")
        print(format_checks(checks))
        print("resources:")
        print(resource_plan(sweep, rows, local_cpus() if local else None, _local_gpus() if local else None))
        missing = [c for c in checks if not c.ok]
        broken = [c for c in missing if not c.obtainable]
        print(f"dry run: config valid, {len(rows)} trials; {len(missing)} input(s) unavailable"
              + (f" ({len(missing) - len(broken)} to download or fetch, as listed)" if missing else ""))
        if broken:  # a broken input fails the dry run; a not-yet-downloaded one only fails a real run
            print("error: " + "\n".join(f"{c.kind} {c.name}: {c.detail}" for c in broken), file=sys.stderr)
        return 2 if broken else 0
    try:
        summary = run_sweep(sweep, rows, address=args.address, resume=args.resume, verbose=args.verbose,
                            offline=offline)
    except PreflightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from lamo_ray.tracking import TrackingError

        if isinstance(err, TrackingError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    print(format_summary(summary))
    return 0 if any(s["outcome"] != "failed" for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
