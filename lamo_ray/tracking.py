"""MLflow tracking: one experiment per sweep, a parent run for the sweep, one child run per trial.

Layout in MLflow (replaces the LaMo reference code's wandb logging):

- experiment = sweep name (or ``tracking.experiment``)
- parent run ``<sweep>`` tagged ``lamo_ray.role=sweep``: the sweep YAML and the trial table
- child run per trial (tags ``mlflow.parentRunId``, ``ray.trial_id``, ``ray.node_id`` of its rank-0
  Train worker) with the resolved config as params, metric
  curves over training steps (``step`` = optimiser step), and artifacts: ``config.yaml``,
  ``eval/step_XXXXXXX.parquet`` (per-episode evaluation results), ``checkpoint/`` (latest).

All calls go through `mlflow.tracking.MlflowClient` with explicit run ids, so Ray workers in other
processes can log to a run without global MLflow state.

The tracking URI is ``tracking.uri`` from the sweep, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<cwd>/mlflow.db`` (MLflow 3's default store), made absolute because Ray Tune moves
trial processes into their own working directories.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from lamo_ray.config import TrialConfig, asdict_flat

log = logging.getLogger(__name__)

ROLE_TAG = "lamo_ray.role"
TRIAL_ID_TAG = "ray.trial_id"
NODE_ID_TAG = "ray.node_id"  # Ray node of the trial's rank-0 Train worker (latest attempt)
OUTCOME_TAG = "lamo_ray.outcome"


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or written. The message names the URI."""


def resolve_tracking_uri(configured: str | None = None) -> str:
    """Tracking URI: config, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    Relative ``sqlite:///`` and plain paths are made absolute (trial processes change directory).
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def _artifact_location(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts next to the database file (``mlartifacts/``)."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts")
    return None


def check_tracking(uri: str) -> None:
    """Fail fast (before any compute) when the tracking store cannot be used.

    Raises:
        TrackingError: naming the URI and the underlying error.
    """
    if uri.startswith(("http://", "https://")):
        # one quick probe instead of MLflow's minutes of retries with back-off
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"MLflow tracking server {uri!r} is unreachable: {err}") from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot track"
        raise TrackingError(f"MLflow tracking store {uri!r} is not usable: {err}") from None


def get_or_create_experiment(uri: str, name: str) -> str:
    """Experiment id for ``name``, created (artifacts beside a sqlite DB) when missing."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(uri))


def start_sweep_run(uri: str, experiment: str, sweep_name: str, sweep_yaml: str,
                    trial_rows: list[dict[str, Any]], resume: bool = False) -> tuple[str, str]:
    """Create the sweep's parent run; log the sweep YAML and trial table. Returns (experiment_id, run_id).

    With ``resume``, the latest parent run of that name is reopened instead (no duplicate runs)."""
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(uri, experiment)
    if resume:
        existing = client.search_runs(
            [exp_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep' and attributes.run_name = '{sweep_name}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if existing:
            client.update_run(existing[0].info.run_id, status="RUNNING")
            return exp_id, existing[0].info.run_id
    run = client.create_run(exp_id, run_name=sweep_name, tags={ROLE_TAG: "sweep"})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sweep.yaml").write_text(sweep_yaml)
        client.log_artifact(run.info.run_id, str(Path(tmp) / "sweep.yaml"))
        table = [{"variant": r["variant"], "seed": r["seed"], **{k: str(v) for k, v in r["params"].items()}}
                 for r in trial_rows]
        (Path(tmp) / "trials.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
        client.log_artifact(run.info.run_id, str(Path(tmp) / "trials.yaml"))
    client.log_param(run.info.run_id, "num_trials", len(trial_rows))
    return exp_id, run.info.run_id


def start_trial_run(uri: str, experiment_id: str, parent_run_id: str | None, trial_name: str,
                    variant: str, cfg: TrialConfig, trial_id: str = "") -> str:
    """Create a trial's child run with the resolved config as params and ``config.yaml``. Returns its run id."""
    client = MlflowClient(uri)
    tags = {ROLE_TAG: "trial", "variant": variant, "trial_name": trial_name, TRIAL_ID_TAG: trial_id,
            "seed": str(cfg.seed)}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=trial_name, tags=tags)
    params = [Param(k, str(v)[:6000]) for k, v in asdict_flat(cfg).items()]
    params.append(Param("variant", variant))
    client.log_batch(run.info.run_id, params=params)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        client.log_artifact(run.info.run_id, str(path))
    return run.info.run_id


class RunLogger:
    """Log metrics and artifacts to one existing run (used by the rank-0 Ray Train worker).

    Args:
        uri: tracking URI.
        run_id: the trial's MLflow run.
    """

    def __init__(self, uri: str, run_id: str):
        self.client = MlflowClient(uri)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log numeric metrics at training ``step`` (non-numeric values are skipped)."""
        import time

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run terminated: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=RunStatus.to_string(RunStatus.from_string(status)))


def trial_runs(uri: str, experiment: str) -> list[mlflow.entities.Run]:
    """All trial runs of a sweep experiment (for reports and tests)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
                              max_results=10_000)


def find_trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The existing run of a Tune trial under this sweep run (a restarted or resumed trial reuses it)."""
    runs = MlflowClient(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=1)
    return runs[0].info.run_id if runs else None


class MLflowTrialFinalizer(Callback):
    """Tune callback in the sweep driver: closes each trial's MLflow run when Tune is done with it.

    On completion (ran all steps, or stopped by the scheduler) it logs the trial's latest checkpoint
    as the ``checkpoint/`` artifact, tags ``lamo_ray.outcome`` = ``completed`` or
    ``stopped_by_scheduler`` (with ``lamo_ray.stopped_at_step``) and marks the run FINISHED;
    on error it tags ``failed`` with the error and marks the run FAILED.
    """

    def __init__(self, uri: str):
        self.uri = uri

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        run_id = result.get("mlflow_run_id")
        finished = result.get("step") is not None and result.get("step") >= result.get("steps_total", float("inf"))
        outcome = "completed" if finished else "stopped_by_scheduler"
        if not run_id:
            return
        logger = RunLogger(self.uri, run_id)
        ckpt = result.get(CHECKPOINT_PATH_KEY)
        if ckpt and Path(ckpt).is_dir():
            logger.log_artifacts(ckpt, "checkpoint")
        tags = {OUTCOME_TAG: outcome}
        if not finished:
            tags["lamo_ray.stopped_at_step"] = result.get("step")
        logger.set_tags(tags)
        logger.finish("FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if run_id is None:
            run_id = self._lookup(trial.trial_id)
        if run_id:
            logger = RunLogger(self.uri, run_id)
            error = getattr(trial, "error_file", None)
            text = Path(error).read_text(errors="replace") if error and Path(error).is_file() else ""
            logger.set_tags({OUTCOME_TAG: "failed", "lamo_ray.error_file": error or "",
                             "lamo_ray.error": text[-1000:]})
            logger.finish("FAILED")

    def _lookup(self, trial_id: str) -> str | None:
        runs = MlflowClient(self.uri).search_runs(
            [e.experiment_id for e in MlflowClient(self.uri).search_experiments()],
            filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}'", max_results=1)
        return runs[0].info.run_id if runs else None


def trial_outcomes(uri: str, experiment_id: str, parent_run_id: str) -> list[dict[str, Any]]:
    """One row per trial run under the sweep's parent run, read back from MLflow, so a resumed
    sweep (``--resume``) also lists the trials finished before the driver stopped.

    Row keys: ``trial`` (Ray trial id), ``variant``, ``seed``, ``outcome`` (``completed``,
    ``stopped_by_scheduler``, ``failed``, or ``unfinished`` when no outcome was tagged), ``step``
    (last evaluated training step), ``normalized_score`` (the latest evaluation's), ``mlflow_run_id``.
    """
    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        tags = run.data.tags
        if tags.get(ROLE_TAG) != "trial":
            continue
        history = client.get_metric_history(run.info.run_id, "normalized_score")
        last = max(history, key=lambda m: (m.step, m.timestamp)) if history else None
        seed = tags.get("seed")
        rows.append({"trial": tags.get(TRIAL_ID_TAG), "variant": tags.get("variant"),
                     "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else seed,
                     "outcome": tags.get(OUTCOME_TAG, "unfinished"), "step": last.step if last else None,
                     "normalized_score": last.value if last else None, "mlflow_run_id": run.info.run_id})
    return rows


def finish_sweep_run(uri: str, run_id: str, summary: list[dict[str, Any]], wall_s: float, num_errors: int) -> None:
    """Log the per-trial outcome table and wall time on the sweep's parent run and close it."""
    logger = RunLogger(uri, run_id)
    counts: dict[str, int] = {}
    for row in summary:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    logger.log_metrics({"sweep/wall_time_s": wall_s, **{f"sweep/trials_{k}": v for k, v in counts.items()}}, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial_outcomes.yaml"
        path.write_text(yaml.safe_dump(summary, sort_keys=False))
        logger.log_artifact(path)
    logger.finish("FAILED" if summary and num_errors == len(summary) else "FINISHED")
