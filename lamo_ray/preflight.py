"""The sweep's preflight: before any compute, is everything a sweep needs available? Storage,
datasets (each loaded once, generated where a domain makes it), backbones, environments, online and
continual fit, language corpora, and the CPUs / GPUs each trial asks Ray for (its resource request,
`TrialResources`, and the plan `--dry-run` prints).

`lamo_ray.sweep` runs `preflight` and `check_resources` before it starts Ray (and ``--dry-run`` prints
them); every check is a `Check`, and a failed one stops the sweep with `PreflightError`.
"""

from __future__ import annotations

import math

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamo_ray.config import SweepConfig, TrialConfig, resolve_tune_config


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
    """Rollout actors a trial's online phase starts (``online.num_actors``; 0 offline). They reserve
    ``eval.actor_cpus`` and ``eval.gpus_per_actor`` each, as the evaluation actors."""
    return 0 if cfg.online is None else cfg.online.num_actors


def evaluating_actors(cfg: TrialConfig) -> int:
    """Rollout actors a trial evaluates with, as many as it starts (`lamo_ray.rollout_pool.actors_for`):
    ``eval.num_actors``, at most one per chunk of ``envs_per_actor`` episodes (`lamo_ray.evaluate.Evaluator`)
    or, for a continual trial, one per evaluated task (`lamo_ray.continual.evaluation.TaskEvaluator`)."""
    from lamo_ray.rollout_pool import actors_for

    e = cfg.eval
    if cfg.continual is not None:
        return actors_for(e.num_actors, len(cfg.continual.evaluated))
    if not e.target_returns:
        return e.num_actors
    return actors_for(e.num_actors, math.ceil(len(e.target_returns) * e.episodes / e.envs_per_actor))


def trial_cpus(sweep: SweepConfig, cfg: TrialConfig) -> float:
    """Ray CPUs one trial holds: its driver, its DDP workers and its rollout actors (evaluating and
    collecting)."""
    return (sweep.trial_cpus + cfg.train.num_workers * cfg.train.cpus_per_worker
            + (evaluating_actors(cfg) + collecting_actors(cfg)) * cfg.eval.actor_cpus)


def trial_gpus(cfg: TrialConfig) -> float:
    """Ray GPUs one trial holds: one per DDP worker with ``train.use_gpu``, plus its rollout actors' shares
    (evaluating and collecting)."""
    return (cfg.train.num_workers * float(cfg.train.use_gpu)
            + (evaluating_actors(cfg) + collecting_actors(cfg)) * cfg.eval.gpus_per_actor)


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
                     f"{cfg.eval.actor_cpus:g} CPU / {cfg.eval.gpus_per_actor:g} GPU"
                     + (" (evaluated tasks shared between them)" if cfg.continual else "")
                     + (f", {collecting_actors(cfg)} collecting actor(s) x {cfg.eval.actor_cpus:g} CPU / "
                        f"{cfg.eval.gpus_per_actor:g} GPU" if collecting_actors(cfg) else "") + ")")
    n = len(rows) * sweep.num_samples
    most_cpus = max(c for c, _ in per_trial)
    most_gpus = max(g for _, g in per_trial)
    if sweep.max_concurrent_trials:
        at_once = f"at most {sweep.max_concurrent_trials} at once (max_concurrent_trials)"
    elif cluster_cpus is None:
        at_once = "as many at once as the cluster fits"
    else:
        fits = concurrent_trials(sweep, rows, cluster_cpus, cluster_gpus)
        at_once = (f"{fits} at once on {cluster_cpus:g} CPUs" + (f" / {cluster_gpus or 0:g} GPUs" if most_gpus else "")
                   + " (the largest trial's request)")
    lines.append(f"  {n} trials, {at_once}; to run all at once: {n * most_cpus:g} CPUs, {n * most_gpus:g} GPUs")
    return "\n".join(lines)


def concurrent_trials(sweep: SweepConfig, rows: list[dict[str, Any]], cluster_cpus: float,
                      cluster_gpus: float | None) -> int:
    """How many of the sweep's trials run at once: ``max_concurrent_trials`` if set, else as many of the
    largest trial's request (CPUs, and GPUs when it asks for any) as the cluster holds, at least 1. The
    sweep driver caps Tune with it; ``--dry-run`` and ``--rehearse`` plan with it."""
    if sweep.max_concurrent_trials:
        return sweep.max_concurrent_trials
    configs = [r["config"] for r in rows]
    fits = int(cluster_cpus // max(trial_cpus(sweep, c) for c in configs))
    most_gpus = max(trial_gpus(c) for c in configs)
    if most_gpus > 0:
        fits = min(fits, int((cluster_gpus or 0) // most_gpus))
    return max(1, fits)


class TrialResources:
    """Tune resource request of one trial (``tune.with_resources``), from its resolved config.

    A Ray Train trial's function only waits on its `TorchTrainer`: ``trial_cpus``; the worker group
    reserves its own CPUs. An 'in_trial' trial trains in its own process: ``trial_cpus +
    cpus_per_worker`` (and a GPU with ``use_gpu``). Either adds one bundle per rollout actor that reserves
    CPUs or a GPU share (``eval.actor_cpus``, ``eval.gpus_per_actor``), which Tune's placement group
    holds for the actors the trial starts (a Ray Train worker starts them there:
    `lamo_ray.rollout_pool.place_actors_in`)."""

    def __init__(self, sweep: SweepConfig):
        self.sweep = sweep

    def __call__(self, config: dict[str, Any]):
        return self.request(resolve_tune_config(self.sweep, config))

    def request(self, cfg: TrialConfig):
        """The placement group factory for the resolved trial config ``cfg``."""
        from ray.tune import PlacementGroupFactory

        head: dict[str, float] = {"CPU": self.sweep.trial_cpus}
        if cfg.train.in_trial:
            head = {"CPU": self.sweep.trial_cpus + cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})}
        actor = {k: v for k, v in (("CPU", cfg.eval.actor_cpus), ("GPU", cfg.eval.gpus_per_actor)) if v > 0}
        # the evaluating actors, then the online phase's collecting actors, each its bundle
        actors = [actor] * (evaluating_actors(cfg) + collecting_actors(cfg)) if actor else []
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


def local_gpus() -> float:
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


def raise_failed(checks: list[Check]) -> None:
    failed = [c for c in checks if not c.ok]
    if failed:
        raise PreflightError("\n".join(f"{c.kind} {c.name}: {c.detail}" for c in failed))


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"  [{'ok' if c.ok else 'MISSING'}] {c.kind:9s} {c.name}: {c.detail}" for c in checks)
