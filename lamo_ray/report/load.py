"""The report's reading of a sweep from MLflow (`lamo_ray.report`): the sweep's parent run
(`find_sweep_run`), one `TrialResult` per trial run (`load_trial`: config params, outcome, score curve
with its CIs, LaMo's final score, a continual trial's Continual World metrics), a single seed's
per-episode scores (`episode_scores`) and the search's selection; the names of the params, metrics and
artifacts read, and the trial outcomes.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lamo_ray.config import SCORE_METRIC
from lamo_ray.tracking import OUTCOME_TAG, ROLE_TAG, SELECTION_FILE, STAGE_TAG, STOPPED_AT_TAG

log = logging.getLogger(__name__)

FINAL_WINDOW = 0.2            # docs/references/lamo.md "Evaluation": the last 20k of 100k steps
TARGET_SCORE = re.compile(rf"^eval/target_(?P<target>.+)/{SCORE_METRIC}$")
RATIO_PARAM = "data.sample_ratio"
STEPS_PARAM = "train.steps"
ONLINE_PARAMS = ("online.iterations", "online.updates_per_iteration")
COMPLETED, STOPPED, FAILED, RUNNING, UNFINISHED = "completed", "stopped_by_scheduler", "failed", "running", "unfinished"
AVERAGE_SUCCESS = "continual/average_success"   # `lamo_ray.continual.trial`: Continual World's metrics of a trial
FORGETTING = "continual/forgetting"
MATRIX_ARTIFACT = "continual/success_matrix.json"
CONTINUAL_PARAM = "continual.method"
SUCCESS_RULE_PARAM = "continual.success_rule"
AUC_METRIC = re.compile(r"^continual/auc/(?P<task>.+)$")
TASK_SUCCESS = re.compile(r"^eval/(?P<task>.+)/success_rate$")   # a continual trial's per-task success (0-1)
CRITIC_METRICS = ("online/critic_loss", "online/q1_mean")        # `lamo_ray.online.learner`, per online iteration
OFFLINE, ONLINE, CONTINUAL = "offline", "online", "continual"    # trial kinds (`TrialResult.kind`)


class ReportError(RuntimeError):
    """The experiment, its parent sweep run or its trials cannot be found. The message names them."""


# --------------------------------------------------------------------------- per-trial results


@dataclass
class TrialResult:
    """One trial as the report sees it.

    ``variant`` is the sweep variant; ``setting`` holds the values of any other swept key paths
    (besides ``data.sample_ratio`` and the seed), so trials differing only by seed share an arm.
    ``curve`` is the ``normalized_score`` history as [(step, score x100)], ascending steps, and
    ``curve_ci`` its 95% CI over each evaluation's episodes. ``stage``: "main", "search" or "confirm".
    """

    run_id: str
    name: str
    variant: str
    setting: tuple[tuple[str, str], ...]
    seed: int
    sample_ratio: float
    steps: int
    outcome: str
    last_step: int | None
    stopped_at_step: int | None = None
    final_score: float | None = None
    best_target: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    curve_ci: dict[int, tuple[float, float]] = field(default_factory=dict)   # step -> 95% CI over episodes
    stage: str = "main"
    offline_steps: int | None = None           # train.steps of a trial with an online phase, else None
    transitions: dict[int, float] = field(default_factory=dict)   # step -> online/transitions collected by then
    average_success: float | None = None      # a continual trial: Continual World's metrics at its end (x100)
    forgetting: float | None = None
    success_matrix: dict[str, Any] | None = None   # its continual/success_matrix.json
    continual: bool = False                   # a trial config with continual: (`TrialConfig.continual`)
    continual_method: str | None = None
    success_rule: str | None = None           # continual.success_rule of the trial (None: not logged)
    auc: dict[str, float] = field(default_factory=dict)   # task -> mean success over its own stage (0-1)
    task_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # task -> [(step, success 0-1)]
    stage_starts: list[tuple[int, str]] = field(default_factory=list)  # (first step, task trained) per stage
    critic: dict[str, dict[int, float]] = field(default_factory=dict)  # CRITIC_METRICS key -> {step: value}

    @property
    def label(self) -> str:
        return arm_label(self.variant, self.setting)

    @property
    def kind(self) -> str:
        """`CONTINUAL` (a ``continual:`` section), `ONLINE` (an online phase after the offline steps) or
        `OFFLINE`: what the report draws for it."""
        if self.continual:
            return CONTINUAL
        return ONLINE if self.offline_steps is not None else OFFLINE


def arm_label(variant: str, setting: tuple[tuple[str, str], ...]) -> str:
    """Variant name, with the other swept values when there are any: ``lamo (train.lr=0.001)``."""
    if not setting:
        return variant
    return f"{variant} ({', '.join(f'{k}={v}' for k, v in setting)})"


def _steps_run(t: TrialResult) -> int:
    return t.stopped_at_step if t.stopped_at_step is not None else (t.last_step or 0)


def metric_by_step(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """A metric's history as {step: value}; a step logged twice (a restarted trial) keeps the latest value."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in history}


def final_score(target_scores: dict[str, dict[int, float]], steps: int,
                window: float = FINAL_WINDOW) -> tuple[float, str] | None:
    """LaMo's reported number for one trial (docs/references/lamo.md "Evaluation").

    Args:
        target_scores: ``{target T: {step: eval/target_T/normalized_score}}``.
        steps: the trial's configured ``train.steps``.
        window: fraction of training at the end whose evaluations are averaged (0.2: steps > 0.8 * steps).

    Returns:
        ``(score, best target)``: the highest, over targets, of the mean of the evaluations at
        steps in ``(steps * (1 - window), steps]``; None if no target has an evaluation there.
    """
    start = steps * (1.0 - window)
    means = {}
    for target, by_step in target_scores.items():
        values = [v for s, v in by_step.items() if start < s <= steps and not math.isnan(v)]
        if values:
            means[target] = float(np.mean(values))
    if not means:
        return None
    best = max(means, key=means.get)
    return means[best], best


def _continual_tasks(params: dict[str, str]) -> list[str]:
    """The ``continual.tasks`` sequence of a trial's MLflow params (logged as a Python list's text)."""
    raw = params.get("continual.tasks")
    if raw in (None, "None"):
        return []
    try:
        tasks = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    return [str(t) for t in tasks] if isinstance(tasks, (list, tuple)) else []


def planned_steps(params: dict[str, str]) -> int:
    """A trial's last step from its MLflow params (`TrialConfig.total_steps`): ``train.steps``, plus
    ``online.iterations x online.updates_per_iteration`` for a trial with an online phase (so the
    final-score window of an online trial is the last 20% of its online updates), plus ``len(continual.tasks)
    x continual.steps_per_task`` for a continual trial."""
    steps = int(params[STEPS_PARAM])
    if all(params.get(p) not in (None, "None") for p in ONLINE_PARAMS):
        steps += int(params[ONLINE_PARAMS[0]]) * int(params[ONLINE_PARAMS[1]])
    if params.get("continual.steps_per_task") not in (None, "None"):
        steps += len(_continual_tasks(params)) * int(params["continual.steps_per_task"])
    return steps


def stage_starts(params: dict[str, str]) -> list[tuple[int, str]]:
    """``[(first global step, task)]`` of a continual trial's stages, after its ``train.steps`` of
    multi-task pre-training (`lamo_ray.continual.runner`: one global step count over both)."""
    if params.get("continual.steps_per_task") in (None, "None"):
        return []
    first, per_task = int(params[STEPS_PARAM]), int(params["continual.steps_per_task"])
    return [(first + i * per_task, task) for i, task in enumerate(_continual_tasks(params))]


def _outcome(run: Run, last_step: int | None, steps: int) -> str:
    """The trial's outcome tag; without one: running (MLflow RUNNING), failed (FAILED/KILLED), else
    completed if its last evaluation reached ``train.steps`` (unfinished if not)."""
    tag = run.data.tags.get(OUTCOME_TAG)
    if tag:
        return tag
    if run.info.status in ("RUNNING", "SCHEDULED"):
        return RUNNING
    if run.info.status in ("FAILED", "KILLED"):
        return FAILED
    return COMPLETED if last_step is not None and last_step >= steps else UNFINISHED


def load_trial(client: MlflowClient, run: Run, swept_paths: list[str]) -> TrialResult:
    """Read one trial run: config params, outcome, curve and (completed trials only) final score."""
    params, tags = run.data.params, run.data.tags
    steps = planned_steps(params)
    curve = metric_by_step(client, run.info.run_id, SCORE_METRIC)
    low = metric_by_step(client, run.info.run_id, f"{SCORE_METRIC}_ci_low")
    high = metric_by_step(client, run.info.run_id, f"{SCORE_METRIC}_ci_high")
    last_step = max(curve) if curve else None
    trial = TrialResult(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id,
        variant=tags.get("variant") or params.get("variant", "?"),
        setting=tuple((p, params.get(p, "?")) for p in swept_paths),
        seed=int(tags.get("seed", params.get("seed", 0))), sample_ratio=float(params[RATIO_PARAM]),
        steps=steps, outcome=_outcome(run, last_step, steps), last_step=last_step,
        curve=sorted(curve.items()), stage=tags.get(STAGE_TAG, "main"),
        curve_ci={s: (low[s], high[s]) for s in curve if s in low and s in high
                  and not (math.isnan(low[s]) or math.isnan(high[s]))})
    if all(params.get(p) not in (None, "None") for p in ONLINE_PARAMS):  # an online phase after the offline steps
        trial.offline_steps = int(params[STEPS_PARAM])
        trial.transitions = metric_by_step(client, run.info.run_id, "online/transitions")
    if tags.get(STOPPED_AT_TAG):
        trial.stopped_at_step = int(float(tags[STOPPED_AT_TAG]))
    trial.continual = params.get(CONTINUAL_PARAM) not in (None, "None")
    if trial.continual:
        trial.stage_starts = stage_starts(params)
        trial.task_curves = {m["task"]: sorted(metric_by_step(client, run.info.run_id, key).items())
                             for key in run.data.metrics if (m := TASK_SUCCESS.match(key))}
    if trial.offline_steps is not None:
        trial.critic = {key: metric_by_step(client, run.info.run_id, key) for key in CRITIC_METRICS
                        if key in run.data.metrics}
    trial.continual_method = params.get(CONTINUAL_PARAM) if trial.continual else None
    trial.success_rule = params.get(SUCCESS_RULE_PARAM) if trial.continual else None
    trial.auc = {m["task"]: v for key, v in run.data.metrics.items() if (m := AUC_METRIC.match(key))}
    if AVERAGE_SUCCESS in run.data.metrics:   # a continual trial: scored by its average success at the end
        trial.average_success = 100.0 * run.data.metrics[AVERAGE_SUCCESS]
        if FORGETTING in run.data.metrics:
            trial.forgetting = 100.0 * run.data.metrics[FORGETTING]
        if trial.outcome == COMPLETED:
            trial.final_score, trial.best_target = trial.average_success, "average success"
    elif trial.outcome == COMPLETED:
        targets = {m["target"]: metric_by_step(client, run.info.run_id, key)
                   for key in run.data.metrics if (m := TARGET_SCORE.match(key))}
        scored = final_score(targets, steps)
        if scored is None:
            log.warning("trial %s completed but has no (non-NaN) evaluation in its last %d%% of steps",
                        trial.name, FINAL_WINDOW * 100)
        else:
            trial.final_score, trial.best_target = scored
    return trial


def find_sweep_run(client: MlflowClient, experiment: str, parent_run_id: str | None = None) -> Run:
    """The sweep's parent run: ``parent_run_id`` (then ``experiment`` is not used), else the latest run
    tagged ``lamo_ray.role=sweep`` in the experiment named (or numbered) ``experiment``.

    Raises:
        ReportError: no such run, no such experiment, or no sweep run in it.
    """
    if parent_run_id:
        try:
            return client.get_run(parent_run_id)
        except MlflowException as err:
            raise ReportError(f"no MLflow run {parent_run_id!r}: {err.message}") from None
    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():
        exp = client.get_experiment(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ReportError(f"no MLflow experiment {experiment!r}; known: {', '.join(names) or 'none'}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportError(f"experiment {experiment!r} has no sweep run (tag {ROLE_TAG}=sweep)")
    return runs[0]


def _download_text(client: MlflowClient, run_id: str, name: str, tmp: Path) -> str:
    return Path(client.download_artifacts(run_id, name, str(tmp))).read_text()


def _read_selection(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """The configurations the search picked (`lamo_ray.tracking.SELECTION_FILE` on the parent run); [] if absent."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return yaml.safe_load(_download_text(client, run_id, SELECTION_FILE, Path(tmp))) or []
    except (MlflowException, OSError) as err:
        log.warning("no %s on run %s (%s)", SELECTION_FILE, run_id, err)
        return []


def episode_scores(client: MlflowClient, trial: TrialResult, window: float = FINAL_WINDOW) -> np.ndarray | None:
    """Per-episode normalized scores behind a single seed's final score: for each evaluation episode
    (env seed) the mean over the final window's evaluations at the best target (their mean is the
    final score). From the run's ``eval/step_*.parquet`` tables; None when they are missing or older
    than the ``normalized_score`` column."""
    import pandas as pd

    if trial.best_target is None:
        return None
    start = trial.steps * (1.0 - window)
    frames = []
    try:
        artifacts = client.list_artifacts(trial.run_id, "eval")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for art in artifacts:
                step = int(re.sub(r"\D", "", Path(art.path).stem) or -1)
                if start < step <= trial.steps:
                    frames.append(pd.read_parquet(client.download_artifacts(trial.run_id, art.path, tmp)))
    except (MlflowException, OSError, ValueError) as err:
        log.warning("trial %s: evaluation tables unreadable (%s)", trial.name, err)
        return None
    if not frames:
        return None
    table = pd.concat(frames)
    if SCORE_METRIC not in table:
        return None
    table = table[table["target_return"].map(lambda t: f"{t:g}") == trial.best_target]
    return table.groupby("seed")[SCORE_METRIC].mean().to_numpy(dtype=float) if len(table) else None
