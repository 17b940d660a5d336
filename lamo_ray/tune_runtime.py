"""The sweep's Tune side (`lamo_ray.sweep` runs a sweep with it, `lamo_ray.rehearse` a rehearsal): the
trial function every trial runs (`run_trial`: its config, its MLflow run, training in its own process or
a Ray Train `TorchTrainer`), Tune's param space and scheduler, one Tune experiment of trials
(`run_stage`), the local Ray start with its dashboard (`init_ray`) and where the sweep's results go
(`experiment_dir`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from lamo_ray.config import SweepConfig, TrialConfig, find_domains, resolve_tune_config, tune_variant_and_params
from lamo_ray.preflight import PreflightError, TrialResources, tune_max_failures

log = logging.getLogger(__name__)

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


# --------------------------------------------------------------------------- trials


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """`lamo_ray.train.train_loop_per_worker`, imported in the worker: the trial driver then never
    imports torch / transformers / peft (~10 s per trial process on this machine)."""
    from lamo_ray.rollout_pool import place_actors_in
    from lamo_ray.train import train_loop_per_worker

    place_actors_in(loop_config.get("actor_placement_group"))   # the trial's rollout-actor bundles
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
    ``tracking["rehearsal"]`` (``--rehearse``): the trial runs its shape's `lamo_ray.rehearse.rehearsal_config`
    (with its stand-ins: ``{"standin_backbones": [...], "standin_corpora": {...}}``) and stops once after its first
    checkpoint, to be restarted from it (`lamo_ray.sessions.InterruptAfterFirstCheckpoint`).
    """
    from ray import tune

    from lamo_ray.naming import trial_run_name
    from lamo_ray.tracking import find_trial_run, log_trial_timing, start_trial_run

    started = time.time()
    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = resolve_tune_config(sweep, config)
    rehearsal = tracking.get("rehearsal")   # a rehearsal (lamo_ray.rehearse): the shape's config, fewer steps
    if rehearsal is not None:
        from lamo_ray.rehearse import rehearsal_config

        cfg = rehearsal_config(cfg, **rehearsal)
    run_id = find_trial_run(tracking["uri"], tracking["experiment_id"], tracking["parent_run_id"], trial_id)
    if run_id is None:
        variant, params = tune_variant_and_params(config)
        stage = config.get("stage", "main")
        run_id = start_trial_run(tracking["uri"], tracking["experiment_id"], tracking["parent_run_id"],
                                 trial_name, variant, cfg, trial_id=trial_id, stage=stage,
                                 run_name=trial_run_name(variant, params, cfg.seed, stage))
    loop_config = {"trial": cfg, "mlflow_uri": tracking["uri"], "mlflow_run_id": run_id,
                   "mlflow_outbox": tracking.get("outbox"), "dataset_ref": (dataset_refs or {}).get(cfg.data.source),
                   "backbone": (backbone_refs or {}).get(cfg.model.backbone),
                   "interrupt_after_first_checkpoint": rehearsal is not None}
    if cfg.continual is not None:   # a continual trial reads every task's source: those in the object store
        refs = dataset_refs or {}
        loop_config["dataset_refs"] = {s: refs[s] for s in cfg.data_sources.values() if s in refs}
    fit_started = time.time()
    if cfg.train.in_trial:
        from lamo_ray.sessions import TuneTrialSession
        from lamo_ray.train import train_loop_per_worker

        # the trial's folder in Tune's storage: <storage_path>/<sweep run name>/<trial dir name>
        storage_dir = Path(tracking["train_storage"]).parent / tracking["run_name"] / Path(ctx.get_trial_dir()).name
        train_loop_per_worker(loop_config, TuneTrialSession(cfg.train.use_gpu, started, storage_dir,
                                                            trial_id=ctx.get_trial_id()))
    else:   # the workers start the rollout actors in the bundles this trial's Tune group holds for them
        import ray.util

        loop_config["actor_placement_group"] = ray.util.get_current_placement_group()
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


DASHBOARD_ATTEMPTS = 3
#: held (flock) from a local Ray's port probe until its ray.init returned with the dashboard bound
START_LOCK = "lamo_ray-local-ray-start.lock"


@contextlib.contextmanager
def _start_lock():
    """This machine's lamo_ray local-Ray start lock (`START_LOCK` in the temp folder, an exclusive flock):
    two sweeps started at once start their Rays one after the other, so the second probes its ports after
    the first bound them (before: both probed 8265, the second's dashboard failed to bind, and Ray took
    ~60 s to say so before the retry). Released when the holder exits, however it ends. Without flock
    (not POSIX) or with the file not writable (another user's), no lock: the retry still covers a race."""
    try:
        import fcntl
        handle = open(Path(tempfile.gettempdir()) / START_LOCK, "a")
    except (ImportError, OSError) as err:
        log.debug("no local Ray start lock: %s", err)
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _init_local_ray(ray, env_vars: dict[str, str], worker_logs_to_console: bool):
    """A new local Ray on 127.0.0.1 with its dashboard (Train V2 needs the dashboard process) on 8265 if free,
    else on a port the OS picks. Sweeps on one machine start their Rays one at a time (`_start_lock`). The
    port is probed, then Ray binds it: another program can take it in between (seen, before the lock, from
    another sweep: "Failed to find a valid port for dashboard after 0 retries ... 8265: address already in
    use"), so a dashboard that fails to bind is retried on a fresh free port, up to `DASHBOARD_ATTEMPTS`
    times. ``address="local"``: a new instance even when /tmp/ray/ray_current_cluster names a `ray start`
    cluster (alive, or dead without `ray stop`), which ray.init() would otherwise join.

    Raises:
        the last ray.init error, when every attempt failed or the failure is not the dashboard's port."""
    with _start_lock():
        return _init_local_ray_unlocked(ray, env_vars, worker_logs_to_console)


def _init_local_ray_unlocked(ray, env_vars: dict[str, str], worker_logs_to_console: bool):
    preferred = 8265
    for attempt in range(1, DASHBOARD_ATTEMPTS + 1):
        port = _free_port(preferred)
        env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        try:
            return ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                            _node_ip_address="127.0.0.1", runtime_env={"env_vars": env_vars},
                            log_to_driver=worker_logs_to_console)
        except Exception as err:   # noqa: BLE001 - Ray raises a bare Exception for the dashboard
            message = str(err).lower()
            if attempt == DASHBOARD_ATTEMPTS or "dashboard" not in message:
                raise
            log.warning("Ray's dashboard could not bind port %d (%s); retrying on another free port (attempt %d of %d)",
                        port, str(err).splitlines()[0][:200], attempt + 1, DASHBOARD_ATTEMPTS)
            ray.shutdown()
            preferred = 0   # the OS picks a free one


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
        ctx = _init_local_ray(ray, env_vars, worker_logs_to_console)
    if ctx.dashboard_url:
        # a new local Ray turns token authentication on when RAY_AUTH_MODE is unset (Ray 2.60, the pinned one)
        mode = os.environ.get("RAY_AUTH_MODE", "" if address else "token").lower()
        token = " (it asks for the Ray token: `ray get-auth-token` prints it)" if mode == "token" else ""
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


def tune_scheduler(sweep: SweepConfig, rows: list[dict[str, Any]], scheduler_type: str):
    """The Tune scheduler of a stage: 'asha' is Ray's ASHA on the trials' reported ``step`` (training
    steps, then online updates), one bracket, milestones ``scheduler.grace_period x reduction_factor^k``
    up to the longest trial's total steps (`lamo_ray.config.SchedulerConfig.rungs`); 'fifo' runs every
    trial to its end. Tune gives it ``scheduler.metric`` / ``mode`` (`tune.TuneConfig`)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if scheduler_type == "asha":
        return ASHAScheduler(time_attr="step", max_t=max(r["config"].total_steps for r in rows),
                             grace_period=sweep.scheduler.grace_period,
                             reduction_factor=sweep.scheduler.reduction_factor)
    return FIFOScheduler()


def _run_stage(sweep: SweepConfig, rows: list[dict[str, Any]], tracking: dict[str, str], shared: dict[str, Any],
               name: str, exp_dir: Path, resume: bool, max_concurrent: int, param_space: dict[str, Any],
               scheduler_type: str, time_limit=None):
    """One Tune experiment ``name`` of the sweep (its search, or its confirmation stage, or a rehearsal) over
    ``param_space``; ``rows`` hold the `TrialConfig` of every trial it runs (for Tune's retry budget);
    ``shared``: `run_trial`'s ``dataset_refs`` and ``backbone_refs``; ``time_limit``: a
    `lamo_ray.time_limit.TrialTimeLimit` (a rehearsal's limit per shape), the experiment's stopper and
    one of its callbacks. Returns Tune's ``ResultGrid``."""
    from ray import tune

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
    scheduler = tune_scheduler(sweep, rows, scheduler_type)
    finalizer = MLflowTrialFinalizer(tracking["uri"], outbox_dir=tracking["outbox"],
                                     experiment_id=tracking["experiment_id"],
                                     parent_run_id=tracking["parent_run_id"], sweep=sweep)
    # 'in_trial' trials: Tune restarts a failed one from its last checkpoint and keeps 2 checkpoints
    # (Ray Train does both for its own trials)
    run_config = tune.RunConfig(name=name, storage_path=str(exp_dir.parent),
                                callbacks=[finalizer] + ([time_limit] if time_limit is not None else []),
                                failure_config=tune.FailureConfig(
                                    max_failures=tune_max_failures([r["config"] for r in rows])),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1,
                                stop=time_limit)
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
