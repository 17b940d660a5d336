"""Sweeps: Ray Tune schedules trials (variants x grid x seeds) with ASHA; each trial is a Tune
function trainable that runs a Ray Train `TorchTrainer` (the supported Ray 2.60 pattern) and
reports through ``TuneReportCallback``, or, for a 1-worker trial (``train.launcher``), runs the
training loop in its own process and reports with ``ray.tune.report``; MLflow records the sweep
and every trial.

    python -m lamo_ray.sweep SWEEP.yaml [--set key.path=value ...] [--dry-run | --rehearse [--rehearse-standin]]
                             [--resume] [--offline] [--verbose]

Data flow: sweep YAML -> `lamo_ray.config.load_sweep` -> missing inputs fetched (`lamo_ray.inputs`;
not with ``--offline``) -> preflight checks (`lamo_ray.preflight`: datasets, backbones,
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
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lamo_ray.config import ConfigError, SweepConfig, load_sweep, resolve_trial, tune_variant_and_params
from lamo_ray.preflight import (Check, PreflightError, check_resources, concurrent_trials, format_checks, local_cpus,
                                local_gpus, preflight, raise_failed, resource_plan)
from lamo_ray.preflight import check_datasets  # noqa: F401 - benchmarks/preflight_memory.py imports it from here
from lamo_ray.sweep_output import format_selection, format_summary, format_trial_table  # noqa: F401 - tests import it from here
from lamo_ray.tune_runtime import _experiment_dir, _init_ray, _param_space, _run_stage, ship_backbones

log = logging.getLogger(__name__)

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
    raise_failed(checks)
    if not (address or os.environ.get("RAY_ADDRESS")):  # a local Ray gets this machine's CPUs and GPUs
        raise_failed(check_resources(sweep, rows, local_cpus(), local_gpus()))
    uri = resolve_tracking_uri(sweep.tracking.uri)
    check_tracking(uri)
    run_name, exp_dir = _experiment_dir(sweep, resume)
    _init_ray(address, worker_logs_to_console=verbose)
    cluster = ray.cluster_resources()
    cluster_cpus = float(cluster.get("CPU", 0))
    resource_checks = check_resources(sweep, rows, cluster_cpus, float(cluster.get("GPU", 0)))
    print(format_checks(resource_checks), flush=True)
    raise_failed(resource_checks)

    experiment = sweep.tracking.experiment or sweep.name
    exp_id, parent = start_sweep_run(uri, experiment, run_name, sweep, resume=resume)
    tracking = {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "run_name": run_name,
                "train_storage": str(exp_dir.parent / f"{run_name}_train")}
    tracking["outbox"] = str(Path(tracking["train_storage"]) / "mlflow_outbox")  # MLflow writes made in an outage
    # vector datasets go to the object store once (image datasets stay lazily read from their files)
    shared = {"dataset_refs": {source: ray.put(ds) for source, ds in loaded.items()
                               if isinstance(ds, TrajectoryDataset) and len(ds.obs_shape) == 1},
              "backbone_refs": ship_backbones([r["config"] for r in rows])}
    max_concurrent = concurrent_trials(sweep, rows, cluster_cpus, float(cluster.get("GPU", 0)))
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
    print(f"MLflow runs: {runs_link(uri, exp_id)}", flush=True)
    return summary


def runs_link(uri: str, experiment_id: str) -> str:
    """Where the sweep's runs open in the MLflow UI (`lamo_ray.tracking.EXPERIMENT_RUNS_PAGE`, which skips
    MLflow 3's GenAI overview): the full URL for a tracking server, else the page under ``mlflow ui``."""
    from lamo_ray.tracking import EXPERIMENT_RUNS_PAGE

    page = EXPERIMENT_RUNS_PAGE.format(experiment_id=experiment_id)
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} (after `mlflow ui --backend-store-uri {uri} --port 5000`)"


CONFIRM_SUFFIX = "-confirm"   # Tune experiment of the confirmation stage: <sweep run name>-confirm


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


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lamo_ray.sweep",
                                description="Run a LaMo / DT sweep with Ray Tune + ASHA, tracked in MLflow.")
    p.add_argument("sweep_file", help="sweep YAML (see sweeps/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a value (YAML syntax); trial sections (data, model, ...) apply to base")
    p.add_argument("--dry-run", action="store_true", help="validate, print the trial table and check inputs; no training")
    p.add_argument("--rehearse", action="store_true",
                   help="run every trial shape for a few steps of every stage (checkpoint and resume included) on the "
                        "hardware the sweep asks for, and project the sweep's wall time and CPU/GPU-hours")
    p.add_argument("--rehearse-standin", action="store_true",
                   help="with --rehearse: stand in for missing datasets (random, same shapes) and pre-trained "
                        "backbones (randomly initialised), said in the output; never used by a real run")
    p.add_argument("--rehearse-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --rehearse: stop a shape still running after this many seconds of wall time, "
                        "whether it reports or hangs; the shapes after it still run (default 3600)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
    p.add_argument("--offline", action="store_true",
                   help="fetch nothing and make no hub request (as HF_HUB_OFFLINE=1): missing inputs are errors "
                        "naming the command that gets them")
    p.add_argument("--verbose", action="store_true",
                   help="Ray workers' output and libraries' INFO logs on the console too (default: Ray's log files)")
    return p.parse_args(argv)


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
QUIET_LOGGERS = ("absl", "mlflow", "matplotlib", "alembic", "urllib3", "filelock", "httpx", "httpx2", "httpcore", "httpcore2")


def _configure_console(verbose: bool) -> None:
    """The sweep's own INFO lines on the console; other libraries' INFO chatter (rliable's absl, MLflow's
    database set-up, matplotlib's font cache) and MLflow's download progress bars only with ``verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray says on every local start that it turned token authentication on (its default in 2.60; setting
    # RAY_AUTH_MODE=token ourselves instead broke Ray Train's worker start here): the dashboard line says it
    logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Tune warns each time trials checkpoint faster than it snapshots its experiment state (every evaluation
    # of a short continual trial does): a local file write, nothing the user can act on
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
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
    if (args.rehearse_standin or args.rehearse_timeout is not None) and not args.rehearse:
        print("error: --rehearse-standin and --rehearse-timeout go with --rehearse", file=sys.stderr)
        return 2
    if args.rehearse_timeout is not None and not args.rehearse_timeout > 0:
        print(f"error: --rehearse-timeout must be positive seconds, got {args.rehearse_timeout:g}", file=sys.stderr)
        return 2
    if args.rehearse:
        from lamo_ray.rehearsal_run import SHAPE_TIME_LIMIT_S, run_rehearsal

        return run_rehearsal(sweep, rows, address=args.address, offline=offline, standin=args.rehearse_standin,
                             verbose=args.verbose, shape_time_limit_s=args.rehearse_timeout or SHAPE_TIME_LIMIT_S)
    if args.dry_run:
        print(format_plan(plan_inputs([r["config"] for r in rows]), offline))
        checks = preflight(sweep, rows, generate=False)
        checks += check_resources(sweep, rows, local_cpus(), local_gpus()) if local else \
            [Check("resources", "CPUs", True, "checked against the cluster once Ray connects")]
        print("checks:")
        print(format_checks(checks))
        print("resources:")
        print(resource_plan(sweep, rows, local_cpus() if local else None, local_gpus() if local else None))
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
