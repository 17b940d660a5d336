"""MLflow tracking: one experiment per sweep, a parent run for the sweep, one child run per trial.

Layout in MLflow (replaces the LaMo reference code's wandb logging):

- experiment = sweep name (or ``tracking.experiment``), of MLflow's kind "model training"
  (`EXPERIMENT_KIND_TAG`; its runs page in the UI: `EXPERIMENT_RUNS_PAGE`)
- parent run ``<sweep>`` tagged ``lamo_ray.role=sweep``: the sweep YAML and the trial table; its
  description (`lamo_ray.naming.sweep_description`) says what the sweep compares and where its report is
- child run per trial, named by what sets it apart (`lamo_ray.naming.trial_run_name`: ``lamo · hopper-medium ·
  sample_ratio=0.1 · seed 2``; tags ``mlflow.parentRunId``, ``ray.trial_id``, ``trial_name`` (Tune's
  name), ``ray.node_id`` of its rank-0 Train worker) with the resolved config as params, metric
  curves over training steps (``step`` = optimiser step), and artifacts: ``config.yaml``,
  ``eval/step_XXXXXXX.parquet`` (per-episode evaluation results), ``checkpoint/`` (latest).

All calls go through `mlflow.tracking.MlflowClient` with explicit run ids, so Ray workers in other
processes can log to a run without global MLflow state.

The tracking URI is ``tracking.uri`` from the sweep, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<cwd>/mlflow.db`` (MLflow 3's default store), made absolute because Ray Tune moves
trial processes into their own working directories.

Tracking outages (`RunLogger`, `MLflowTrialFinalizer`, `finish_sweep_run`): a write the tracking
store cannot take (connection refused or reset, timeout, 5xx, database unavailable) never fails
the trial or the sweep. It is appended to an outbox (`lamo_ray.outbox.Outbox`: one fsync'd
JSON-lines file per run, by default ``<storage_path>/<sweep>_train/mlflow_outbox/``) with its
original timestamps, and the next successful write to that run first sends the outbox in order.
What is still there at the end is sent with ``python -m lamo_ray.tracking replay DIR
[--tracking-uri URI]`` (idempotent: a persisted offset marks what was sent). Each write waits at
most `lamo_ray.outbox.HTTP_BUDGET` (MLflow's HTTP retries shortened for these writes only); while
the server is known to be down, writes go straight to the outbox and the server is probed every
`PROBE_INTERVAL_S` seconds. One warning per outage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from lamo_ray.config import (SCORE_METRIC, SweepConfig, TrialConfig, asdict_flat, resolve_tune_config,
                             tune_variant_and_params)
from lamo_ray.naming import sweep_description, trial_run_name
from lamo_ray.outbox import DEFAULT_OUTBOX, Outbox, outage_tolerant, replay, send_record

log = logging.getLogger(__name__)

ROLE_TAG = "lamo_ray.role"
TRIAL_ID_TAG = "ray.trial_id"
NODE_ID_TAG = "ray.node_id"  # Ray node of the trial's rank-0 Train worker (latest attempt)
PRECISION_TAG = "lamo_ray.precision"  # train.precision as resolved on the trial's device (fp32, bf16, fp16)
DEVICE_TAG = "lamo_ray.device"  # where the trial trained: the session's device type (cpu, cuda)
OUTCOME_TAG = "lamo_ray.outcome"
STOPPED_AT_TAG = "lamo_ray.stopped_at_step"    # last evaluated step of a trial the scheduler stopped
CHECKPOINT_STEP_TAG = "lamo_ray.checkpoint_step"  # step of the run's ``checkpoint/`` artifact
#: parent-run params recording what the sweep decided, read back by the report
BASELINE_PARAM, METRIC_PARAM, RUNGS_PARAM = "sweep.baseline_variant", "sweep.metric", "sweep.asha_rungs"
#: a trial's part of its sweep: "main" (a sweep without confirmation), "search" or "confirm"
STAGE_TAG = "lamo_ray.stage"
#: the stage of its work a trial is in (`RunLogger.set_phase`): the last value is where a failed trial failed
PHASE_TAG = "lamo_ray.phase"
#: a trial's peak memory, logged at its end (`peak_memory_metrics`)
PEAK_RSS_METRIC, PEAK_GPU_METRIC = "memory/peak_rss_mb", "memory/peak_gpu_mb"


def peak_memory_metrics(device) -> dict[str, float]:
    """The calling process's peak resident memory (MiB, ``getrusage``'s ``ru_maxrss``), and on a CUDA
    ``device`` the peak memory torch allocated there (MiB). A trial logs them at its end; its rollout
    actors' memory is not included (they are other processes)."""
    import resource

    out = {PEAK_RSS_METRIC: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}   # KiB on Linux
    if getattr(device, "type", None) == "cuda":
        import torch

        out[PEAK_GPU_METRIC] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
SELECTION_FILE = "confirm_selection.yaml"   # parent-run artifact: the configurations the search picked
#: Experiment tag by which the MLflow UI tells a model-training experiment from a GenAI one (which
#: opens on an overview of traces, "No data available" here, instead of its runs). `EXPERIMENT_KIND` is
#: the value the UI itself writes for model training (its JS enum ``CUSTOM_MODEL_DEVELOPMENT``, set with
#: ``setExperimentTag``); MLflow has no Python constant for either. Caveat, seen in a browser with MLflow
#: 3.17.2: its UI takes the kind from the sidebar's "GenAI / Model training" switch instead (URL
#: parameter ``workflowType``, else the browser's saved choice, GenAI by default) and ignores this tag,
#: so a fresh browser still opens ``#/experiments/<id>`` on the GenAI overview; `EXPERIMENT_RUNS_PAGE`
#: is a link that opens on the runs whatever the switch says.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: the MLflow UI's page of an experiment's runs (path after the server's address), in the "Model
#: training" view even in a browser that never chose it (MLflow 3.17: ``workflowType`` in the URL wins)
EXPERIMENT_RUNS_PAGE = "#/experiments/{experiment_id}/runs?workflowType=machine_learning"
#: MLflow's run description (shown, as Markdown, on the run's page): the parent run's says what the sweep compares
NOTE_TAG = "mlflow.note.content"


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
    """Experiment id for ``name``, created (artifacts beside a sqlite DB) when missing.

    The experiment is marked as model training (`EXPERIMENT_KIND_TAG` = `EXPERIMENT_KIND`), as the
    MLflow UI marks one, for UIs that open such an experiment on its runs table rather than on an
    empty GenAI traces overview (MLflow 3.17.2's follows its own view switch instead: see
    `EXPERIMENT_KIND_TAG`). An existing experiment without that tag (e.g. made by an older version of
    this module) gets it too; a kind already set, by the user in the UI or otherwise, is left as it is."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=_artifact_location(uri),
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def start_sweep_run(uri: str, experiment: str, run_name: str, sweep: SweepConfig,
                    resume: bool = False) -> tuple[str, str]:
    """Create the sweep's parent run ``run_name``: the sweep YAML (``sweep.yaml``), its trial table
    (``trials.yaml``) and, as params, what the report must not recompute: the baseline variant
    (`BASELINE_PARAM`), the scheduler's metric (`METRIC_PARAM`) and ASHA's rungs in steps
    (`RUNGS_PARAM`, comma-separated, empty for FIFO); its description (`lamo_ray.naming.sweep_description`) says
    what the sweep compares. Returns (experiment_id, run_id).

    With ``resume``, the latest parent run of that name is reopened instead (no duplicate runs)."""
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(uri, experiment)
    if resume:
        existing = client.search_runs(
            [exp_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep' and attributes.run_name = '{run_name}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if existing:
            client.update_run(existing[0].info.run_id, status="RUNNING")
            return exp_id, existing[0].info.run_id
    run = client.create_run(exp_id, run_name=run_name,
                            tags={ROLE_TAG: "sweep", NOTE_TAG: sweep_description(sweep, run_name)})
    rows = sweep.trials
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(), sort_keys=False))
        client.log_artifact(run.info.run_id, str(Path(tmp) / "sweep.yaml"))
        table = [{"variant": r["variant"], "seed": r["seed"], **{k: str(v) for k, v in r["params"].items()}}
                 for r in rows]
        (Path(tmp) / "trials.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
        client.log_artifact(run.info.run_id, str(Path(tmp) / "trials.yaml"))
    rungs = sweep.scheduler.rungs(max(r["config"].total_steps for r in rows))
    client.log_batch(run.info.run_id, params=[
        Param("num_trials", str(len(rows) * sweep.num_samples)), Param(BASELINE_PARAM, sweep.report_baseline),
        Param(METRIC_PARAM, sweep.scheduler.metric), Param(RUNGS_PARAM, ",".join(map(str, rungs)))])
    return exp_id, run.info.run_id


#: how the trial trained: ``in_trial`` (in its Tune trial process) or ``ray_train`` (a TorchTrainer)
LAUNCHER_TAG = "lamo_ray.launcher"


def start_trial_run(uri: str, experiment_id: str, parent_run_id: str | None, trial_name: str,
                    variant: str, cfg: TrialConfig, trial_id: str = "", stage: str = "main",
                    run_name: str | None = None) -> str:
    """Create a trial's child run with the resolved config as params and ``config.yaml``, tagged with
    its ``stage`` (`STAGE_TAG`) and Tune's ``trial_name``. ``run_name``: its name in MLflow, the
    sweep's `lamo_ray.naming.trial_run_name` (default: ``trial_name``). Returns its run id."""
    client = MlflowClient(uri)
    tags = {ROLE_TAG: "trial", "variant": variant, "trial_name": trial_name, TRIAL_ID_TAG: trial_id,
            "seed": str(cfg.seed), LAUNCHER_TAG: cfg.train.resolved_launcher, STAGE_TAG: stage}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name or trial_name, tags=tags)
    params = [Param(k, str(v)[:6000]) for k, v in asdict_flat(cfg).items()]
    params.append(Param("variant", variant))
    client.log_batch(run.info.run_id, params=params)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        client.log_artifact(run.info.run_id, str(path))
    return run.info.run_id


# --------------------------------------------------------------------------- tracking outages

#: While a tracking server is down, writes go straight to the outbox; every this many seconds the
#: next write probes ``<uri>/health`` (2 s timeout) and, if it answers, sends the outbox and itself.
PROBE_INTERVAL_S = 30.0
_down_until: dict[str, float] = {}  # tracking URI -> monotonic time of the next probe (this process)


def _reachable(uri: str) -> bool:
    """False while ``uri`` is known to be down and not due for a probe (or the probe fails)."""
    due = _down_until.get(uri)
    if due is None:
        return True
    if time.monotonic() < due:
        return False
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2) as resp:
                resp.read()
        except OSError:
            _down_until[uri] = time.monotonic() + PROBE_INTERVAL_S
            return False
    return True  # try the real write; it marks the server down again if it fails


class RunLogger:
    """Log metrics, params, tags, artifacts and the final status to one existing run (used by the
    rank-0 Ray Train worker, the sweep driver's finalizer and `finish_sweep_run`).

    A tracking outage never raises: the write goes to the `Outbox` in ``outbox_dir`` and is sent
    before the next write that gets through (see the module docstring). A write the store rejects
    outright (e.g. the run was deleted) still raises.

    Args:
        uri: tracking URI.
        run_id: the run to write to.
        outbox_dir: the outbox directory (default `DEFAULT_OUTBOX`).
    """

    def __init__(self, uri: str, run_id: str, outbox_dir: str | Path | None = None):
        self.client = MlflowClient(uri)
        self.uri = uri
        self.run_id = run_id
        self.outbox = Outbox(outbox_dir or DEFAULT_OUTBOX)
        self.phase: str | None = None

    def set_phase(self, phase: str) -> None:
        """Tag the stage the trial is in (`PHASE_TAG`), when it changes: a failed trial's run then says
        where it failed (``online iteration 3``, ``stage 2 (window-close): start``), as
        ``--rehearse`` reports it."""
        if phase != self.phase:
            self.set_tags({PHASE_TAG: phase})
            self.phase = phase

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log numeric metrics at training ``step`` (non-numeric values are skipped)."""
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            self._write({"kind": "metrics", "step": int(step), "values": values})

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (values as strings, cut to MLflow's 6000 characters)."""
        self._write({"kind": "params", "values": {k: str(v)[:6000] for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (values as strings)."""
        self._write({"kind": "tags", "values": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload the file ``path`` into the run's ``artifact_path`` folder (default: the root)."""
        self._write({"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path,
                     "is_dir": False})

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        """Upload the contents of ``directory`` into the run's ``artifact_path`` folder (default: the root)."""
        self._write({"kind": "artifact", "path": str(Path(directory).resolve()), "artifact_path": artifact_path,
                     "is_dir": True})

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run terminated: FINISHED, FAILED or KILLED."""
        self._write({"kind": "status", "status": RunStatus.to_string(RunStatus.from_string(status))})

    def _send(self, record: dict[str, Any]) -> None:
        send_record(self.client, record, self.outbox.directory)

    def _write(self, fields: dict[str, Any]) -> None:
        record = {**fields, "uri": self.uri, "run_id": self.run_id, "timestamp": int(time.time() * 1000)}
        if _reachable(self.uri):
            with outage_tolerant() as outage:
                flushed = self.outbox.flush(self.run_id, self._send)
                self._send(record)
                if _down_until.pop(self.uri, None) is not None or flushed:
                    log.warning("MLflow tracking at %s is reachable again; sent %d queued record(s) of run %s",
                                self.uri, flushed, self.run_id)
                return
            if self.uri not in _down_until:
                log.warning("MLflow tracking at %s is unreachable (%s); training continues and what cannot be "
                            "logged waits in %s, sent when the server is back (or: python -m lamo_ray.tracking "
                            "replay %s)", self.uri, outage.detail, self.outbox.directory, self.outbox.directory)
            _down_until[self.uri] = time.monotonic() + PROBE_INTERVAL_S
        self.outbox.append(record)


def trial_runs(uri: str, experiment: str) -> list[mlflow.entities.Run]:
    """All trial runs of a sweep experiment (for reports and tests)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
                              max_results=10_000)


def log_trial_timing(uri: str, run_id: str, seconds: dict[str, float], outbox_dir: str | Path | None = None) -> None:
    """Log a trial driver's wall-clock phases (``time/trial_*_s``, seconds) to the trial's run at
    step 0 (read by benchmarks/overhead.py B7, beside the workers' ``time/setup/*`` and
    ``train/time_s`` / ``eval/time_s``)."""
    RunLogger(uri, run_id, outbox_dir=outbox_dir).log_metrics(seconds, step=0)


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
    that Tune received as the ``checkpoint/`` artifact (its step in ``lamo_ray.checkpoint_step``),
    tags ``lamo_ray.outcome`` = ``completed`` or ``stopped_by_scheduler`` (with
    ``lamo_ray.stopped_at_step``) and marks the run FINISHED; on error it tags ``failed`` with the
    error and marks the run FAILED; a trial that failed before its run was created (seen when Tune
    started it on a node as that node was lost) gets a run created here (with ``experiment_id``,
    ``parent_run_id`` and ``sweep``, the `SweepConfig`), so MLflow and the sweep's outcome table
    list every trial Tune ran. Through `RunLogger`: during a tracking outage these writes wait in
    the outbox ``outbox_dir``.

    Train workers report asynchronously: a worker keeps training while Tune decides, so a trial
    that ASHA stops at a rung may already have evaluated (and logged to MLflow) at the next
    evaluation step, or even finished, before the stop reaches it (seen with 10-step evaluation
    intervals). The outcome and ``stopped_at_step`` therefore count the last evaluation the run
    logged, not only the last result Tune saw; ``lamo_ray.checkpoint_step`` then says which of
    those evaluations the checkpoint artifact is from. A worker that logs after this callback ran
    (it is stopped right after) can still add one evaluation past ``stopped_at_step``.
    """

    def __init__(self, uri: str, outbox_dir: str | Path | None = None, experiment_id: str | None = None,
                 parent_run_id: str | None = None, sweep: Any = None):
        self.uri = uri
        self.outbox_dir = outbox_dir
        # for a trial that fails before `run_trial` created its run (e.g. started on a node as it was lost)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep = sweep

    def _logger(self, run_id: str) -> RunLogger:
        # getattr: a finalizer unpickled from an older sweep's tuner.pkl (--resume) has no outbox_dir
        return RunLogger(self.uri, run_id, getattr(self, "outbox_dir", None))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        run_id = result.get("mlflow_run_id")
        if not run_id:
            return
        steps_total = result.get("steps_total", float("inf"))
        last_step = result.get("step")
        if last_step is None or last_step < steps_total:  # the workers may have got further than Tune saw
            last_step = max((s for s in (last_step, self._last_logged_eval_step(run_id)) if s is not None),
                            default=None)
        finished = last_step is not None and last_step >= steps_total
        outcome = "completed" if finished else "stopped_by_scheduler"
        logger = self._logger(run_id)
        tags: dict[str, Any] = {OUTCOME_TAG: outcome}
        # a Ray Train trial's checkpoint path comes in its result; an 'in_trial' trial's is Tune's own
        ckpt = result.get(CHECKPOINT_PATH_KEY) or getattr(getattr(trial, "checkpoint", None), "path", None)
        if ckpt and Path(ckpt).is_dir():
            logger.log_artifacts(ckpt, "checkpoint")
            tags[CHECKPOINT_STEP_TAG] = result.get("step")
        if not finished:
            tags[STOPPED_AT_TAG] = last_step
        logger.set_tags(tags)
        logger.finish("FINISHED")

    def _last_logged_eval_step(self, run_id: str) -> int | None:
        """The highest step at which the run logged ``normalized_score``; None if none or MLflow is down."""
        if _reachable(self.uri):
            with outage_tolerant():
                last = _last_evaluation(MlflowClient(self.uri), run_id)
                return last.step if last else None
        return None

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if run_id is None:
            run_id = self._lookup(trial.trial_id)
        if run_id is None:
            run_id = self._create_run(trial)
        if run_id:
            logger = self._logger(run_id)
            error = getattr(trial, "error_file", None)
            text = Path(error).read_text(errors="replace") if error and Path(error).is_file() else ""
            logger.set_tags({OUTCOME_TAG: "failed", "lamo_ray.error_file": error or "",
                             "lamo_ray.error": text[-1000:]})
            logger.finish("FAILED")

    def _create_run(self, trial) -> str | None:
        """A run for a failed trial that has none; None without the sweep's ids or while MLflow is down."""
        sweep = getattr(self, "sweep", None)  # a finalizer unpickled from an older sweep has no sweep
        if sweep is None or not getattr(self, "experiment_id", None) or not _reachable(self.uri):
            return None
        cfg = resolve_tune_config(sweep, trial.config)
        variant, params = tune_variant_and_params(trial.config)
        stage = trial.config.get("stage", "main")
        with outage_tolerant(f"MLflow tracking at {self.uri} is unreachable: failed trial {trial.trial_id} "
                             "gets no run"):
            return start_trial_run(self.uri, self.experiment_id, self.parent_run_id, str(trial), variant, cfg,
                                   trial_id=trial.trial_id, stage=stage,
                                   run_name=trial_run_name(variant, params, cfg.seed, stage))
        return None

    def _lookup(self, trial_id: str) -> str | None:
        """The run of a Tune trial in any experiment; None if there is none or MLflow is down."""
        with outage_tolerant(f"MLflow tracking at {self.uri} is unreachable: the run of failed trial {trial_id} "
                             "cannot be found and stays RUNNING"):
            client = MlflowClient(self.uri)
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                      filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}'", max_results=1)
            return runs[0].info.run_id if runs else None
        return None


def trial_outcomes(uri: str, experiment_id: str, parent_run_id: str,
                   outbox_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per trial run under the sweep's parent run, read back from MLflow, so a resumed
    sweep (``--resume``) also lists the trials finished before the driver stopped.

    Row keys: ``trial`` (Ray trial id), ``stage``, ``variant``, ``seed``, ``outcome`` (``completed``,
    ``stopped_by_scheduler``, ``failed``, or ``unfinished`` when no outcome was tagged), ``step``
    (last evaluated training step), ``normalized_score`` (the latest evaluation's) with ``ci_low`` /
    ``ci_high`` (its 95% CI over that evaluation's episodes, None if not logged), ``mlflow_run_id``.

    Raises:
        TrackingError: the tracking store is unreachable; the message says how to recover what
            waits in ``outbox_dir``.
    """
    with outage_tolerant(http_budget=False) as outage:  # the sweep's outcome table needs this read
        return _trial_outcomes(uri, experiment_id, parent_run_id)
    outbox = outbox_dir or DEFAULT_OUTBOX
    raise TrackingError(f"MLflow tracking store {uri!r} is unreachable at the end of the sweep "
                        f"({outage.detail}); the trials' results that could not be logged wait in {outbox}: "
                        f"once it is back, run `python -m lamo_ray.tracking replay {outbox}` and then "
                        "`python -m lamo_ray.report SWEEP_NAME` for the report")


def _last_evaluation(client: MlflowClient, run_id: str) -> Metric | None:
    """The run's latest ``normalized_score`` (highest step, then newest), or None before any evaluation."""
    return max(client.get_metric_history(run_id, SCORE_METRIC), key=lambda m: (m.step, m.timestamp), default=None)


def _trial_outcomes(uri: str, experiment_id: str, parent_run_id: str) -> list[dict[str, Any]]:
    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        tags = run.data.tags
        if tags.get(ROLE_TAG) != "trial":
            continue
        last = _last_evaluation(client, run.info.run_id)
        ci = [next((m.value for m in sorted(client.get_metric_history(run.info.run_id, f"{SCORE_METRIC}_ci_{side}"),
                                            key=lambda m: m.timestamp, reverse=True) if m.step == last.step), None)
              if last else None for side in ("low", "high")]
        seed = tags.get("seed")
        rows.append({"trial": tags.get(TRIAL_ID_TAG), "stage": tags.get(STAGE_TAG, "main"), "variant": tags.get("variant"),
                     "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else seed,
                     "outcome": tags.get(OUTCOME_TAG, "unfinished"), "step": last.step if last else None,
                     "normalized_score": last.value if last else None,
                     "ci_low": ci[0], "ci_high": ci[1], "mlflow_run_id": run.info.run_id})
    return rows


def finish_sweep_run(uri: str, run_id: str, summary: list[dict[str, Any]], wall_s: float, num_errors: int,
                     outbox_dir: str | Path | None = None) -> None:
    """Log the per-trial outcome table and wall time on the sweep's parent run and close it. If the
    tracking server is up, also send what other runs left in the outbox (e.g. a trial that failed
    during an outage and wrote nothing after it); warn with the replay command if anything is left."""
    logger = RunLogger(uri, run_id, outbox_dir)
    counts: dict[str, int] = {}
    for row in summary:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    logger.log_metrics({"sweep/wall_time_s": wall_s, **{f"sweep/trials_{k}": v for k, v in counts.items()}}, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial_outcomes.yaml"
        path.write_text(yaml.safe_dump(summary, sort_keys=False))
        logger.log_artifact(path)
    logger.finish("FAILED" if summary and num_errors == len(summary) else "FINISHED")
    if _reachable(uri):
        replay(logger.outbox.directory)
    pending = logger.outbox.pending()
    if pending:
        log.warning("MLflow outbox %s still holds %d record(s) of %d run(s) that could not be logged; send them "
                    "with `python -m lamo_ray.tracking replay %s` once %s is reachable", logger.outbox.directory,
                    sum(pending.values()), len(pending), logger.outbox.directory, uri)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m lamo_ray.tracking replay OUTBOX [--tracking-uri URI]`` (`lamo_ray.outbox.replay`).
    Returns the exit code: 0 everything sent, 1 records left (server still unreachable), 2 no outbox."""
    p = argparse.ArgumentParser(prog="python -m lamo_ray.tracking",
                                description="Tracking utilities: send MLflow writes kept in an outbox during an outage.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="send an outbox's records to MLflow (idempotent: sent records are not resent)")
    r.add_argument("outbox", help="outbox directory (e.g. <storage_path>/<sweep>_train/mlflow_outbox) or one .jsonl file")
    r.add_argument("--tracking-uri", help="send here instead of each record's own tracking URI")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not Path(args.outbox).exists():
        print(f"error: no outbox at {args.outbox}", file=sys.stderr)
        return 2
    sent, left = replay(args.outbox, args.tracking_uri)
    print(f"replayed {sent} record(s); {sum(left.values())} left" + (f" ({len(left)} run(s))" if left else ""))
    rejected = sorted(Path(args.outbox if Path(args.outbox).is_dir() else Path(args.outbox).parent)
                      .glob("*.rejected.jsonl"))
    if rejected:
        print("rejected by MLflow (kept for inspection): " + ", ".join(str(f) for f in rejected))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
