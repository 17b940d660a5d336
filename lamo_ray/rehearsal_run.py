"""The rehearsal's driver (``python -m lamo_ray.sweep SWEEP.yaml --rehearse``; what it runs, measures and
projects: `lamo_ray.rehearse`): inputs (real, or stand-ins with ``--rehearse-standin``), one Tune
experiment running every shape one after another through `lamo_ray.tune_runtime.run_trial`, each shape's
outcome and measurements read back from MLflow, the projection, and a ``rehearsal`` run in the sweep's
MLflow experiment holding it all. `run_rehearsal` returns the exit code: 0 only if every shape passed.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lamo_ray.config import SweepConfig, TrialConfig
from lamo_ray.rehearse import (STAGE, Measured, Shape, as_json, format_duration, measure, project, rehearsal_config,
                               trial_seconds, trial_shapes)

log = logging.getLogger(__name__)

STANDIN_TRAJECTORIES = 4        # random trajectories of a stand-in dataset, at least (see standin_dataset)
IMAGE_STANDIN_STEPS = 512       # the longest stand-in trajectory with image observations
SHAPE_TIME_LIMIT_S = 3600.0     # default --rehearse-timeout: a shape still reporting after this is stopped


def standin_dataset(cfg: TrialConfig, source: str, trajectories: int = STANDIN_TRAJECTORIES,
                    env_id: str | None = None, length: int | None = None):
    """A stand-in for the missing dataset ``source`` of a trial ``cfg``: ``trajectories`` trajectories of
    ``length`` steps (default ``data.max_ep_len``; at most `IMAGE_STANDIN_STEPS` for images) whose
    observations have the evaluation env's shape and dtype (the state the model sees:
    `lamo_ray.envs.flatten_observation`), actions its action space's (uniform in its bounds, or uniform
    indices), rewards uniform in [0, 1). ``env_id``: that env (default ``eval.env_id``; a continual task's
    comes from its domain, `continual_standin`). Random numbers: only for a rehearsal's step times, never
    for a score (its reference scores are the env's known ones, else 0 and 1).

    Raises:
        ValueError: no ``env_id`` and ``eval.env_id`` is not set (without the data, nothing else says
            which env it is).
    """
    import gymnasium as gym

    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset
    from lamo_ray.envs import evaluation_env_kwargs, flatten_observation, make_env, reference_scores_for

    env_id = env_id or cfg.eval.env_id
    if env_id is None:
        raise ValueError(f"no stand-in for {source!r}: eval.env_id is not set, so its shapes are unknown")
    env = make_env(env_id, **evaluation_env_kwargs(env_id, None))
    try:
        obs, _ = env.reset(seed=0)
        first = np.asarray(flatten_observation(env_id, obs))
        space = env.action_space
    finally:
        env.close()
    rng = np.random.default_rng(0)
    images = first.dtype == np.uint8 and first.ndim >= 2
    n = trajectories
    # image trajectories (Atari: 28 KB a step) at most IMAGE_STANDIN_STEPS long, so that enough of them for a
    # small sample ratio fit in memory; a training step samples context_length steps, not whole episodes
    length = length or cfg.data.max_ep_len
    length = min(length, IMAGE_STANDIN_STEPS) if images else length
    discrete = isinstance(space, gym.spaces.Discrete)
    trajectories = []
    for _ in range(n):
        if first.dtype == np.uint8:
            observations = rng.integers(0, 256, (length, *first.shape), dtype=np.uint8)
        else:
            observations = rng.standard_normal((length, *first.shape)).astype(first.dtype)
        if discrete:
            actions = rng.integers(0, space.n, length).astype(np.int64)
        else:
            low, high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
            actions = rng.uniform(low, high, (length, *space.shape)).astype(np.float32)
        trajectories.append(Trajectory(observations, actions, rng.random(length).astype(np.float32), False))
    refs = reference_scores_for(env_id) or (0.0, 1.0)
    return TrajectoryDataset(trajectories, tuple(first.shape), int(space.n) if discrete else int(np.prod(space.shape)),
                             discrete, refs[0], refs[1], env_id, f"stand-in for {source}",
                             max_episode_steps=length)


def continual_standin(cfg: TrialConfig, source: str, trajectories: int = STANDIN_TRAJECTORIES):
    """A stand-in for the missing dataset ``source`` of a continual trial ``cfg`` (a task's data, e.g. one
    of L2M's ``.npz`` files not downloaded yet): `standin_dataset` on the task's env (``MetaWorld/<task>-v3``,
    ``DMControl/<task>-v0``), its episodes as long as the domain's (Meta-World 200, DMControl 1000 steps).

    Raises:
        ValueError: ``source`` is a ``continual.pretrain_datasets`` entry (its env is not known without it).
    """
    from lamo_ray.domains import dmcontrol, metaworld
    from lamo_ray.domains.tasks import episode_steps, task_domain

    task = next(t for t, s in cfg.data_sources.items() if s == source)
    if task == source:
        raise ValueError(f"no stand-in for continual.pretrain_datasets entry {source!r}: its env is unknown "
                         "without the data")
    domain = task_domain(task)
    env_id = metaworld.env_id(task) if domain == "metaworld" else dmcontrol.env_id(task)
    return standin_dataset(cfg, source, trajectories, env_id=env_id, length=episode_steps(domain))


STANDIN_CORPUS_WORDS = 400_000   # words of a stand-in text corpus (a few hundred 1024-token blocks)


def standin_corpus(path: Path) -> Path:
    """A stand-in text corpus at ``path``: `STANDIN_CORPUS_WORDS` words drawn from a fixed vocabulary
    (seeded), in sentences and paragraphs, for the language loss's step times only."""
    rng = np.random.default_rng(0)
    vocabulary = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
                  "but have an they you were her she there one all we their been has would when what if so no "
                  "who will more out up into time can only other new some could these two may first then do "
                  "any like my now over such our man me even most made after also did many before must through "
                  "river city music model data energy history season station language system theory").split()
    words = rng.choice(vocabulary, STANDIN_CORPUS_WORDS)
    sentences = [" ".join(words[i:i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    text = "\n\n".join(" ".join(sentences[i:i + 8]) for i in range(0, len(sentences), 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


def _inputs(sweep: SweepConfig, rows: list[dict[str, Any]], offline: bool, standin: bool, standin_dir: Path,
            say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Fetch and check the inputs as a run would; with ``standin``, stand-ins for the missing ones
    (``standin_dir``: where a stand-in corpus is written, beside the sweep's results so every node of a
    cluster with shared storage reads it). Returns ({source: dataset (real or stand-in)}, the rehearsal's
    stand-ins for `lamo_ray.rehearse.rehearsal_config` ({"standin_backbones": [...], "standin_corpora":
    {corpus: path}}), problems left)."""
    from lamo_ray.inputs import fetch_inputs, plan_inputs
    from lamo_ray.language import WIKITEXT, load_tokenizer
    from lamo_ray.preflight import check_backbone, format_checks, preflight

    fetch_inputs(plan_inputs([r["config"] for r in rows]), offline, say=say)
    loaded: dict[str, Any] = {}
    checks = preflight(sweep, rows, generate=True, loaded=loaded)
    say("inputs:\n" + format_checks(checks))
    problems, backbones, corpora = [], [], {}
    for c in (c for c in checks if not c.ok):
        users = [r["config"] for r in rows]
        if c.kind == "dataset" and standin and c.name in {s for cfg in users for s in cfg.data_sources.values()}:
            readers = [u for u in users if c.name in u.data_sources.values()]
            cfg = readers[0]
            # enough trajectories that every sample ratio using it keeps one (subsample keeps int(n x ratio))
            count = max(STANDIN_TRAJECTORIES, math.ceil(1 / min(u.data.sample_ratio for u in readers)))
            try:
                loaded[c.name] = (continual_standin(cfg, c.name, count) if cfg.continual is not None
                                  else standin_dataset(cfg, c.name, count))
            except ValueError as err:
                problems.append(str(err))
                continue
            ds = loaded[c.name]
            first = ds.trajectories[0]
            say(f"STAND-IN dataset for {c.name}: {len(ds.trajectories)} random trajectories of {first.length} steps, "
                f"obs {ds.obs_shape} {first.observations.dtype}, act {ds.act_dim} (for this rehearsal's step times "
                "only; no real run reads it)")
        elif c.kind == "backbone" and standin and c.name.endswith("(pretrained)"):
            name = c.name.rsplit(" (", 1)[0]
            if check_backbone(name, pretrained=False).ok:
                backbones.append(name)
                say(f"STAND-IN backbone for {name}: its architecture randomly initialised (model.pretrained false "
                    "in this rehearsal only)")
            else:
                problems.append(f"backbone {c.name}: {c.detail}")
        elif c.kind == "corpus" and standin and c.name.startswith(f"{WIKITEXT} "):
            backbone = c.name.split("(tokenizer of ", 1)[1].rstrip(")")
            try:
                load_tokenizer(backbone)
            except Exception as err:  # noqa: BLE001 - as check_corpora: the tokenizer is fetched like the backbone
                problems.append(f"{c.kind} {c.name}: the tokenizer is needed even with a stand-in corpus: {err}")
                continue
            corpora[WIKITEXT] = str(standin_corpus(standin_dir / "corpus.txt"))
            say(f"STAND-IN corpus for {WIKITEXT}: {STANDIN_CORPUS_WORDS:,} random words at {corpora[WIKITEXT]} "
                "(language.corpus in this rehearsal only)")
        else:
            problems.append(f"{c.kind} {c.name}: {c.detail}")
    return loaded, {"standin_backbones": backbones, "standin_corpora": corpora}, problems


def episode_limit(cfg: TrialConfig) -> int | None:
    """The evaluation's episode cap: ``eval.max_episode_steps``, else the env's own time limit (its spec)."""
    if cfg.continual is not None:
        return None
    if cfg.eval.max_episode_steps:
        return cfg.eval.max_episode_steps
    import gymnasium as gym

    from lamo_ray.envs import make_env

    env_id = cfg.eval.env_id
    if env_id is None:
        return None
    try:
        env = make_env(env_id)
    except Exception as err:  # noqa: BLE001 - the trial ran on it; without a spec the projection is unscaled
        log.warning("no episode cap for %s: %s", env_id, err)
        return None
    try:
        spec = env.spec or gym.spec(env_id)
        return spec.max_episode_steps
    finally:
        env.close()


def _run_of(runs: list, variant: str, cfg: TrialConfig):
    """The MLflow run of the rehearsal trial of ``variant`` with config ``cfg``: the one whose params are
    that config's (`lamo_ray.tracking.start_trial_run` logs every key); None if it has none."""
    from lamo_ray.config import asdict_flat

    want = {k: str(v)[:6000] for k, v in asdict_flat(cfg).items()}
    for run in runs:
        params = run.data.params
        if params.get("variant") == variant and all(params.get(k) == v for k, v in want.items()):
            return run
    return None


def _shape_result(client, run, shape: Shape, cfg: TrialConfig, error: str | None) -> dict[str, Any]:
    """One shape's outcome (passed / failed, the stage it failed in, the error) and measurements."""
    from lamo_ray.tracking import OUTCOME_TAG, PHASE_TAG

    if run is None:
        return {"passed": False, "stage": "before its MLflow run", "error": error or "no MLflow run", "measured": None}
    tags = run.data.tags
    failed = error is not None or tags.get(OUTCOME_TAG) == "failed"
    result: dict[str, Any] = {"passed": not failed, "run_id": run.info.run_id, "stage": tags.get(PHASE_TAG, "setup"),
                              "error": (error or tags.get("lamo_ray.error", ""))[-600:] if failed else None}
    if failed and "RehearsalInterrupt" in (result["error"] or ""):   # every restart stopped as a fresh trial
        result.update(stage="resume from checkpoint",
                      error="each restart of the trial found no checkpoint it could read and started over "
                            "(its worker log says why: 'skipping checkpoint ...')")
    measured = measure(client, run.info.run_id, cfg)
    measured.episode_limit = episode_limit(cfg)
    result["resumed_from_step"] = measured.resumed_from_step
    if cfg.continual is None and not failed and result["resumed_from_step"] is None:
        result.update(passed=False, stage="resume from checkpoint", error="the trial never resumed from its checkpoint")
    result["measured"] = measured
    return result


def _format_shape(shape: Shape, r: dict[str, Any]) -> str:
    m: Measured | None = r.get("measured")
    head = f"  [{'PASS' if r['passed'] else 'FAIL'}] {shape.name} ({len(shape.rows)} trials)"
    if not r["passed"]:
        return f"{head}: failed in stage {r['stage']!r}: {r['error'].strip().splitlines()[-1] if r['error'] else ''}"
    parts = []
    for label, value in (("offline/pre-training step", m.step_s), ("continual stage step", m.stage_step_s),
                         ("online update", m.update_s), ("collected transition", m.transition_s),
                         ("evaluation", m.eval_s), ("setup", m.setup_s)):
        if value is not None:
            parts.append(f"{label} {value:.3g} s")
    memory = f"peak RSS {m.peak_rss_mb / 1024:.2f} GiB" if m.peak_rss_mb else "peak RSS not logged"
    if m.peak_gpu_mb:
        memory += f", peak GPU {m.peak_gpu_mb / 1024:.2f} GiB"
    return f"{head}: {', '.join(parts)} (medians over {m.timed_steps} timed steps); {memory}"


def _point_key(point: dict[str, Any]) -> tuple[Any, str]:
    return point.get("variant"), repr(point.get("params"))


def _run_shapes(shapes: list[Shape], run_stage: Callable[[dict[str, Any], str, Any], Any], name: str,
                limit_s: float, say: Callable[[str], None]) -> dict[tuple[Any, str], str]:
    """Run every shape's trial, one after another, each within ``limit_s`` seconds of wall time
    (`lamo_ray.time_limit.TrialTimeLimit`, which also stops a shape that never reports). A shape past
    its limit ends the Tune experiment it ran in; the shapes that had not started run in the next one
    (``<name>-part2``, ...). ``run_stage(param_space, experiment name, time limit)`` runs one experiment
    and returns Tune's ``ResultGrid``. Returns {(variant, repr(params)): error} of the shapes that
    failed or ran out of time."""
    from ray import tune

    from lamo_ray.time_limit import TrialTimeLimit

    pending = [{"variant": s.variant, "params": s.params} for s in shapes]
    errors: dict[tuple[Any, str], str] = {}
    part = 1
    while pending:
        limit = TrialTimeLimit(limit_s)
        space = {"point": tune.grid_search(pending), "seed": shapes[0].rows[0]["seed"], "stage": STAGE}
        grid = run_stage(space, name if part == 1 else f"{name}-part{part}", limit)
        for result in grid:
            if result.error is not None:
                point = (result.config or {}).get("point") or {}
                errors[_point_key(point)] = f"{type(result.error).__name__}: {result.error}"
        for config, seconds in limit.timed_out.values():
            errors[_point_key(config["point"])] = (
                f"TimeoutError: still running after {seconds:.0f} s, past the limit of {limit_s:g} s per shape "
                "(--rehearse-timeout); stopped")
        started = {_point_key(c["point"]) for c in limit.started.values()}
        left = [p for p in pending if _point_key(p) not in started]
        if limit.timed_out and left:
            say(f"a shape ran past --rehearse-timeout {limit_s:g} s and was stopped; the {len(left)} shape(s) not "
                "started yet run next")
        if len(left) == len(pending):   # nothing started (Tune ended without running a trial): do not loop
            for point in left:
                errors.setdefault(_point_key(point), "never started")
            break
        pending, part = left, part + 1
    return errors


def run_rehearsal(sweep: SweepConfig, rows: list[dict[str, Any]], address: str | None = None, offline: bool = False,
                  standin: bool = False, verbose: bool = False, shape_time_limit_s: float = SHAPE_TIME_LIMIT_S,
                  say: Callable[[str], None] = print) -> int:
    """Rehearse the sweep (`lamo_ray.rehearse`); returns the exit code: 0 if every shape passed, 1 if one
    failed, 2 if inputs are missing (and not stood in for) or the cluster cannot hold a trial."""
    import ray
    from mlflow.tracking import MlflowClient

    from lamo_ray.preflight import check_resources, concurrent_trials, local_cpus, local_gpus
    from lamo_ray.tracking import (NOTE_TAG, ROLE_TAG, RunLogger, check_tracking, get_or_create_experiment,
                                   resolve_tracking_uri)
    from lamo_ray.tune_runtime import _experiment_dir, _init_ray, _run_stage, ship_backbones

    shapes = trial_shapes(sweep, rows)
    say(f"rehearsal of {sweep.name!r}: {len(shapes)} trial shape(s) standing for {len(rows) * sweep.num_samples} "
        "trials, one after another, a few steps of every stage each:")
    for s in shapes:
        say(f"  {s.name}: {len(s.rows)} trial(s)")
    run_name, exp_dir = _experiment_dir(sweep, resume=False)
    name = f"{run_name}-rehearsal-{time.strftime('%Y%m%d-%H%M%S')}"
    loaded, standins, problems = _inputs(sweep, rows, offline, standin, exp_dir.parent / f"{name}_standin", say)
    if problems:
        say("error: the rehearsal needs these inputs (--rehearse-standin stands in for missing datasets and "
            "pre-trained backbones):\n" + "\n".join(f"  {p}" for p in problems))
        return 2
    local = not address and not os.environ.get("RAY_ADDRESS")
    if local:
        failed = [c for c in check_resources(sweep, rows, local_cpus(), local_gpus()) if not c.ok]
        if failed:
            say("error: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
            return 2
    uri = resolve_tracking_uri(sweep.tracking.uri)
    check_tracking(uri)
    _init_ray(address, worker_logs_to_console=verbose)
    cluster = ray.cluster_resources()
    concurrency = concurrent_trials(sweep, rows, float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0)))
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(uri, sweep.tracking.experiment or sweep.name)
    parent = client.create_run(exp_id, run_name=name, tags={
        ROLE_TAG: STAGE, NOTE_TAG: f"Rehearsal of sweep `{sweep.name}`: {len(shapes)} trial shapes, a few steps of "
                                   "every stage each, and the sweep's projected cost (`rehearsal.json`)."}).info.run_id
    tracking = {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "run_name": name,
                "train_storage": str(exp_dir.parent / f"{name}_train"),
                "rehearsal": standins}
    tracking["outbox"] = str(Path(tracking["train_storage"]) / "mlflow_outbox")
    shrunk = [{"config": rehearsal_config(s.config, **standins)} for s in shapes]
    shared = {"dataset_refs": {source: ray.put(ds) for source, ds in loaded.items() if hasattr(ds, "trajectories")},
              "backbone_refs": ship_backbones([r["config"] for r in shrunk])}
    say("each shape's trial stops once on purpose after its first checkpoint (RehearsalInterrupt in Tune's output "
        "below) and is restarted from it: the resume path of a real run")
    t0 = time.time()
    errors = _run_shapes(shapes, lambda space, part, limit: _run_stage(
        sweep, shrunk, tracking, shared, part, exp_dir.parent / part, False, 1, space, "fifo", time_limit=limit),
        name, shape_time_limit_s, say)
    results, measured = {}, {}
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10_000)
    for shape, row in zip(shapes, shrunk):
        r = _shape_result(client, _run_of(runs, shape.variant, row["config"]), shape, row["config"],
                          errors.get(_point_key({"variant": shape.variant, "params": shape.params})))
        results[shape.name] = r
        if r["passed"]:
            measured[shape.name] = r["measured"]
    say(f"\nrehearsal: {sum(r['passed'] for r in results.values())} of {len(shapes)} shape(s) passed in "
        f"{format_duration(time.time() - t0)}:")
    for shape in shapes:
        say(_format_shape(shape, results[shape.name]))
    projection = None
    if len(measured) == len(shapes):
        try:
            projection = project(sweep, shapes, measured, concurrency)
        except ValueError as err:
            say(f"no projection: {err}")
    if projection is not None:
        say(f"projection (every trial to its end: an upper bound under ASHA): {projection.trials} trials, "
            f"{projection.concurrency} at once -> wall {format_duration(projection.wall_s)}, "
            f"{projection.cpu_hours:.1f} CPU-hours, {projection.gpu_hours:.1f} GPU-hours")
        for shape in shapes:
            stages = trial_seconds(shape.config, measured[shape.name])
            say(f"  one {shape.name} trial: {format_duration(sum(stages.values()))} ("
                + ", ".join(f"{k} {format_duration(v)}" for k, v in stages.items() if v > 0) + ")")
    logger = RunLogger(uri, parent, outbox_dir=tracking["outbox"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rehearsal.json"
        path.write_text(as_json(shapes, results, projection))
        logger.log_artifact(path)
    if projection is not None:
        logger.log_metrics({"projection/wall_h": projection.wall_s / 3600, "projection/trials": projection.trials,
                            "projection/cpu_hours": projection.cpu_hours, "projection/gpu_hours": projection.gpu_hours},
                           step=0)
    passed = all(r["passed"] for r in results.values())
    logger.finish("FINISHED" if passed else "FAILED")
    say(f"rehearsal run in MLflow: {parent} (experiment {sweep.tracking.experiment or sweep.name}, rehearsal.json)")
    return 0 if passed else 1


__all__ = ["SHAPE_TIME_LIMIT_S", "STANDIN_TRAJECTORIES", "continual_standin", "run_rehearsal", "standin_dataset"]
