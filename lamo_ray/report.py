"""Sweep report: final scores by LaMo's protocol, ablation tables with bootstrap CIs, figures, best config.

    python -m lamo_ray.report SWEEP_NAME_OR_MLFLOW_EXPERIMENT [--out DIR] [--tracking-uri URI]
                              [--parent-run-id ID] [--baseline VARIANT] [--reps N]

Reads one sweep from MLflow (layout in `lamo_ray.tracking`: the parent run tagged
``lamo_ray.role=sweep`` with its ``sweep.yaml``, one child run per trial), writes into ``--out``:

- ``report.md`` and ``report.html`` (self-contained: figures embedded as base64 PNG),
- ``score_vs_sample_ratio.png`` (LaMo Fig. 1 style), ``learning_curves.png``, ``online_curves.png`` (trials with an online phase), ``asha.png``,
- ``success_matrix.png`` (continual trials: a success-matrix heatmap per variant),
- ``final_scores.csv`` (one row per trial), ``best_config.yaml`` (a sweep file with only the best
  variant at its best sample ratio, ready for ``python -m lamo_ray.sweep``),

and logs them as artifacts ``report/`` of the sweep's parent run.

Protocol (REFERENCE.md "Evaluation"): a trial's *final score* is the mean of its evaluations in the
last 20% of its configured ``train.steps`` (LaMo: the last 20k of 100k steps, i.e. the evaluations
at steps > 80k), taken at the best target return, the target whose such mean is highest. Only trials
that ran to completion get one: trials ASHA stopped are listed with their rung, failed and still
running trials are listed as such. Scores are D4RL-normalised x100, as logged by `lamo_ray.evaluate`.

A continual trial (``continual:``, `lamo_ray.continual.trial`) is scored by Continual World's average
success after its last stage, x100; the report adds its forgetting per arm with CIs, the forgetting
difference from the baseline, and the success matrices.

Which trials score the arms: in a sweep with a confirmation stage (``confirm:``), only the
confirmation trials (every seed trained to the end); the search (ASHA) is shown on its own, since
an ASHA arm is a mean over the seeds that survived and the best of many searched configurations is
biased upward by its selection. Otherwise all trials. An arm with a stopped, failed or unfinished
trial is listed as "n of m seeds" and gets no interval and no comparison.

Statistics are stated, never implied (`lamo_ray.intervals`): every score comes with its 95% CI;
each variant is compared with the baseline variant (DT by default) by the difference of their mean
final scores with Welch's 95% CI over seeds (over evaluation episodes when each arm has one seed,
which then says that it covers evaluation noise only), and one sentence says whether the data
support a difference. Per arm also the interquartile mean (IQM) with its 95% stratified-bootstrap
CI (Agarwal et al. 2021, ``rliable``), and the probability of improvement where both arms have at
least 2 seeds. Learning curves draw the 95% CI as a band: over seeds, or over the episodes of each
evaluation for a single seed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import html
import json
import logging
import math
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lamo_ray.config import (DEFAULT_BASELINE, SCORE_METRIC, ConfigError, SweepConfig, expand_trials, find_domains,
                             set_path)
from lamo_ray.intervals import Comparison, compare, mean_ci
from lamo_ray.tracking import (BASELINE_PARAM, OUTCOME_TAG, ROLE_TAG, RUNGS_PARAM, SELECTION_FILE, STAGE_TAG,
                               STOPPED_AT_TAG, resolve_tracking_uri)

log = logging.getLogger(__name__)

FINAL_WINDOW = 0.2            # REFERENCE.md "Evaluation": the last 20k of 100k steps
TARGET_SCORE = re.compile(rf"^eval/target_(?P<target>.+)/{SCORE_METRIC}$")
BOOTSTRAP_REPS = 2000         # bootstrap replicates per CI (rliable's default 50000 is slow and unneeded for a few seeds)
RATIO_PARAM = "data.sample_ratio"
STEPS_PARAM = "train.steps"
ONLINE_PARAMS = ("online.iterations", "online.updates_per_iteration")
COMPLETED, STOPPED, FAILED, RUNNING, UNFINISHED = "completed", "stopped_by_scheduler", "failed", "running", "unfinished"
NO_CI = "single seed: no CI"
AVERAGE_SUCCESS = "continual/average_success"   # `lamo_ray.continual.trial`: Continual World's metrics of a trial
FORGETTING = "continual/forgetting"
MATRIX_ARTIFACT = "continual/success_matrix.json"
CONTINUAL_PARAM = "continual.method"
SUCCESS_RULE_PARAM = "continual.success_rule"
AUC_METRIC = re.compile(r"^continual/auc/(?P<task>.+)$")
REFERENCE_METHOD = "single"   # forward transfer's single-task reference (`lamo_ray.continual.runner`)


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

    @property
    def label(self) -> str:
        return arm_label(self.variant, self.setting)


def arm_label(variant: str, setting: tuple[tuple[str, str], ...]) -> str:
    """Variant name, with the other swept values when there are any: ``lamo (train.lr=0.001)``."""
    if not setting:
        return variant
    return f"{variant} ({', '.join(f'{k}={v}' for k, v in setting)})"


def metric_by_step(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """A metric's history as {step: value}; a step logged twice (a restarted trial) keeps the latest value."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in history}


def final_score(target_scores: dict[str, dict[int, float]], steps: int,
                window: float = FINAL_WINDOW) -> tuple[float, str] | None:
    """LaMo's reported number for one trial (REFERENCE.md "Evaluation").

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


def rung_of(stopped_at_step: int, rungs: list[int]) -> int | None:
    """1-based rung at which ASHA stopped a trial: the highest milestone <= the step it stopped at."""
    passed = [i for i, milestone in enumerate(rungs, start=1) if milestone <= stopped_at_step]
    return passed[-1] if passed else None


def planned_steps(params: dict[str, str]) -> int:
    """A trial's last step from its MLflow params: ``train.steps``, plus ``online.iterations x
    online.updates_per_iteration`` for a trial with an online phase (`TrialConfig.total_steps`), so the
    final-score window of an online trial is the last 20% of its online updates."""
    steps = int(params[STEPS_PARAM])
    if all(params.get(p) not in (None, "None") for p in ONLINE_PARAMS):
        steps += int(params[ONLINE_PARAMS[0]]) * int(params[ONLINE_PARAMS[1]])
    return steps


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
    if steps != int(params[STEPS_PARAM]):  # an online phase after the offline steps
        trial.offline_steps = int(params[STEPS_PARAM])
        trial.transitions = metric_by_step(client, run.info.run_id, "online/transitions")
    if tags.get(STOPPED_AT_TAG):
        trial.stopped_at_step = int(float(tags[STOPPED_AT_TAG]))
    trial.continual = params.get(CONTINUAL_PARAM) not in (None, "None")
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


# --------------------------------------------------------------------------- aggregates (rliable)


@functools.cache
def bootstrap_library() -> tuple[Any, str]:
    """``(rliable.library, "")``, or ``(None, reason)`` when it cannot be imported.

    rliable's bootstraps come from ``arch``; rliable 1.2 accepts only arch < 8, and arch 7.x fails at
    import under pandas >= 3 (TypeError in ``arch.univariate.base``). Without it the report gives
    point estimates and says the CIs are unavailable (none are invented).
    """
    try:
        from rliable import library
    except Exception as err:  # noqa: BLE001 - arch raises TypeError at import under pandas 3
        return None, f"{type(err).__name__}: {err}"
    return library, ""


CI_UNAVAILABLE = "CI unavailable (see note)"


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """rliable's bootstraps draw from numpy's global RNG: seed it for reproducible CIs, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass
class ArmStats:
    """Final scores of one (label, sample ratio) across seeds. CIs are (low, high), or None when the arm
    is incomplete or has fewer than 2 scored seeds.

    ``planned``: the arm's trials (m); ``n``: those with a final score. An arm with ``n < planned``
    (a trial stopped, failed or unfinished) is incomplete: its mean is over the seeds that finished,
    so it gets no interval and no comparison."""

    label: str
    sample_ratio: float
    scores: np.ndarray                  # (n,) final scores x100 of completed trials
    counts: dict[str, int]              # outcome -> number of trials
    mean: float | None = None
    iqm: float | None = None
    mean_ci: tuple[float, float] | None = None
    iqm_ci: tuple[float, float] | None = None

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def planned(self) -> int:
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        return self.n == self.planned and self.n > 0

    @property
    def seeds_text(self) -> str:
        """"3" for a complete arm, "2 of 3 seeds" for an incomplete one."""
        return str(self.n) if self.complete else f"{self.n} of {self.planned} seeds"


def _mean_and_iqm(scores: np.ndarray) -> np.ndarray:
    """(mean, IQM) of a (num_runs, num_tasks) score matrix, as rliable's ``get_interval_estimates`` wants."""
    from rliable import metrics

    return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])


def arm_stats(trials: list[TrialResult], reps: int = BOOTSTRAP_REPS, seed: int = 0) -> list[ArmStats]:
    """Mean with its 95% Student-t CI and IQM with its 95% stratified-bootstrap CI (rliable) per
    (label, sample ratio).

    Only completed trials with a final score count; other outcomes are counted in ``counts``. No CI
    when the arm is incomplete, has fewer than 2 scored seeds or `bootstrap_library` is unavailable
    (IQM). ``reps`` bootstrap replicates, seeded by ``seed``.
    """
    library, _ = bootstrap_library()
    groups: dict[tuple[str, float], list[TrialResult]] = defaultdict(list)
    for t in trials:
        groups[(t.label, t.sample_ratio)].append(t)
    out = []
    for (label, ratio), members in sorted(groups.items()):
        scores = np.array([t.final_score for t in members if t.final_score is not None], dtype=float)
        stats = ArmStats(label, ratio, scores, dict(Counter(t.outcome for t in members)))
        if stats.n:
            stats.mean, stats.iqm = (float(v) for v in _mean_and_iqm(scores[:, None]))
        if stats.n >= 2 and stats.complete:
            stats.mean_ci = mean_ci(scores)[1]
            if library is not None:
                with _numpy_seed(seed):
                    _, ci = library.get_interval_estimates({label: scores[:, None]}, _mean_and_iqm, reps=reps)
                stats.iqm_ci = (float(ci[label][0, 1]), float(ci[label][1, 1]))
        out.append(stats)
    return out


# --------------------------------------------------------------------------- continual trials


@dataclass
class ContinualArm:
    """Continual World's metrics of one (label, sample ratio) across seeds (x100; CIs as `ArmStats`:
    None for an incomplete arm or fewer than 2 seeds). ``matrix``: the success matrices' mean over seeds,
    ``(len(tasks), len(stages))``, None without matrices or when the seeds' layouts differ."""

    label: str
    sample_ratio: float
    planned: int
    average_success: np.ndarray          # (n,) per completed seed
    forgetting: np.ndarray               # (n,)
    forward_transfer: np.ndarray | None = None   # (n,) x100, when a reference exists (not for the reference)
    tasks: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    matrix: np.ndarray | None = None
    success_rules: tuple[str, ...] = ()  # the continual.success_rule values its trials logged ("not logged" if none)

    @property
    def n(self) -> int:
        return len(self.average_success)

    @property
    def complete(self) -> bool:
        return self.n == self.planned and self.n > 0

    def ci(self, values: np.ndarray) -> tuple[float | None, tuple[float, float] | None]:
        if not len(values):
            return None, None
        mean, ci = mean_ci(values)
        return mean, ci if self.complete else None


def reference_aucs(trials: list[TrialResult]) -> dict[tuple[tuple[tuple[str, str], ...], float], dict[str, float]]:
    """Forward transfer's references: per (other swept values, sample ratio), each task's stage AUC
    averaged over the completed trials of method ``single`` (every task trained alone from the
    pre-trained weights)."""
    groups: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        if t.continual_method == REFERENCE_METHOD and t.outcome == COMPLETED:
            for task, auc in t.auc.items():
                groups[(t.setting, t.sample_ratio)][task].append(auc)
    return {key: {task: float(np.mean(v)) for task, v in by_task.items()} for key, by_task in groups.items()}


def trial_forward_transfer(trial: TrialResult, reference: dict[str, float]) -> float | None:
    """Continual World's forward transfer of one trial, x100: the mean over its tasks of
    `lamo_ray.continual.metrics.normalized_transfer` against ``reference``; None without a reference
    for each task or when every reference AUC is 1."""
    from lamo_ray.continual.metrics import normalized_transfer

    if not trial.auc or any(task not in reference for task in trial.auc):
        return None
    values = [normalized_transfer(auc, reference[task]) for task, auc in trial.auc.items()]
    values = [v for v in values if not math.isnan(v)]
    return 100.0 * float(np.mean(values)) if values else None


def continual_arms(trials: list[TrialResult]) -> list[ContinualArm]:
    """One `ContinualArm` per (label, sample ratio) of the continual trials (those that logged
    ``continual/average_success``, or are continual by their params and did not finish). Forward
    transfer where the sweep has ``single`` trials at the same swept values (`reference_aucs`)."""
    references = reference_aucs(trials)
    groups: dict[tuple[str, float], list[TrialResult]] = defaultdict(list)
    for t in trials:
        if t.average_success is not None or t.success_matrix is not None or t.continual:
            groups[(t.label, t.sample_ratio)].append(t)
    arms = []
    for (label, ratio), members in sorted(groups.items()):
        done = [t for t in members if t.outcome == COMPLETED and t.average_success is not None
                and t.forgetting is not None]
        arm = ContinualArm(label, ratio, len(members), np.array([t.average_success for t in done]),
                           np.array([t.forgetting for t in done]),
                           success_rules=tuple(sorted({t.success_rule or "not logged" for t in members})))
        reference = references.get((members[0].setting, ratio))
        if reference is not None and members[0].continual_method != REFERENCE_METHOD:
            transfer = [trial_forward_transfer(t, reference) for t in done]
            if transfer and all(v is not None for v in transfer):
                arm.forward_transfer = np.array(transfer)
        matrices = [t.success_matrix for t in done if t.success_matrix is not None]
        layouts = {(tuple(m["tasks"]), tuple(m["stages"])) for m in matrices}
        if matrices and len(layouts) == 1:
            arm.tasks, arm.stages = list(matrices[0]["tasks"]), list(matrices[0]["stages"])
            arm.matrix = np.mean([np.asarray(m["success"], dtype=float) for m in matrices], axis=0)
        arms.append(arm)
    return arms


@dataclass(frozen=True)
class ForgettingComparison:
    """Forgetting of ``comparison.label`` minus the baseline's (x100; lower = forgets less)."""

    sample_ratio: float
    comparison: Comparison

    @property
    def verdict(self) -> str:
        return {"higher": "forgets more", "lower": "forgets less"}.get(self.comparison.verdict,
                                                                       self.comparison.verdict)

    def sentence(self) -> str:
        c = self.comparison
        sizes = f"({c.n} vs {c.n_baseline} seeds)"
        if c.ci is None:
            return (f"Forgetting, {c.label} vs {c.baseline} at sample ratio {self.sample_ratio:g}: difference "
                    f"{c.difference:+.1f} from {sizes}: too few to give a confidence interval, so no conclusion.")
        if c.verdict == "no spread":
            return (f"Forgetting, {c.label} vs {c.baseline} at sample ratio {self.sample_ratio:g}: difference "
                    f"{c.difference:+.1f} {sizes}, but every seed of both gave the same forgetting, so there is no "
                    "spread to build a confidence interval on: no conclusion.")
        ci = f"difference {c.difference:+.1f}, 95% CI [{c.ci[0]:+.1f}, {c.ci[1]:+.1f}] {sizes}"
        if c.verdict == "not distinguishable":
            return (f"Forgetting at sample ratio {self.sample_ratio:g}: {c.label} and {c.baseline} are not "
                    f"distinguishable here: {ci}.")
        return f"Forgetting at sample ratio {self.sample_ratio:g}: {c.label} {self.verdict} than {c.baseline} here: {ci}."


def compare_forgetting(arms: list[ContinualArm], trials: list[TrialResult],
                       baseline_variant: str) -> list[ForgettingComparison]:
    """Each complete continual arm vs the baseline variant's complete arm at the same sample ratio (and
    other swept values: `_baseline_arm`): Welch's 95% CI of the difference in mean forgetting over seeds."""
    return [ForgettingComparison(ratio, compare(arm.label, base.label, arm.forgetting, base.forgetting))
            for ratio, arm, base in baseline_pairs(arms, trials, baseline_variant)]


def plot_success_matrices(arms: list[ContinualArm], path: Path) -> Path:
    """One heatmap per continual arm: success (0-1) of each evaluated task (rows) at the end of each stage
    (columns, named by the stage's task), mean over the arm's completed seeds, each cell annotated."""
    shown = [a for a in arms if a.matrix is not None]
    cols = max(min(len(shown), 3), 1)
    rows = max(math.ceil(len(shown) / cols), 1)
    width = max(len(a.stages) for a in shown) if shown else 1
    height = max(len(a.tasks) for a in shown) if shown else 1
    fig = Figure(figsize=(cols * (1.6 + 0.55 * width), rows * (1.2 + 0.4 * height)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    if not shown:
        _empty(axes[0], "no completed continual trial with a success matrix")
    image = None
    for ax, arm in zip(axes, shown):
        image = ax.imshow(arm.matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(arm.matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(arm.stages)))
        ax.set_xticklabels([f"{j + 1}:{s}" for j, s in enumerate(arm.stages)], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(arm.tasks)))
        ax.set_yticklabels(arm.tasks, fontsize=7)
        ax.set_title(f"{arm.label} (ratio {arm.sample_ratio:g}, n={arm.n})", fontsize=9)
    for ax in axes[len(shown):] if shown else []:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(shown)]), shrink=0.8, label="success rate")
    fig.suptitle("Success matrix: task (row) after stage (column), mean over seeds", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- comparisons


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


def _baseline_arm(complete: dict[tuple[str, float], ArmStats], variant_of: dict[str, str], baseline_variant: str,
                  same_setting: str, ratio: float) -> ArmStats | None:
    """The baseline's complete arm at ``ratio``: the one with the same other swept values
    (``same_setting``) if it exists, else the baseline's only arm there (a confirmation stage confirms
    each variant at its own best configuration); None otherwise."""
    if (same_setting, ratio) in complete:
        return complete[(same_setting, ratio)]
    arms = [a for (label, r), a in complete.items() if r == ratio and variant_of[label] == baseline_variant]
    return arms[0] if len(arms) == 1 else None


def baseline_pairs(arms: list[Any], trials: list[TrialResult], baseline_variant: str) -> Iterator[tuple[float, Any, Any]]:
    """``(sample_ratio, arm, baseline arm)`` for every complete non-baseline arm (`ArmStats` or
    `ContinualArm`) that has a complete baseline arm (`_baseline_arm`), in label and ratio order."""
    setting_of = {t.label: t.setting for t in trials}
    variant_of = {t.label: t.variant for t in trials}
    complete = {(a.label, a.sample_ratio): a for a in arms if a.complete}
    for (label, ratio), arm in sorted(complete.items()):
        if variant_of[label] == baseline_variant:
            continue
        base = _baseline_arm(complete, variant_of, baseline_variant, arm_label(baseline_variant, setting_of[label]),
                             ratio)
        if base is not None:
            yield ratio, arm, base


def compare_with_baseline(stats: list[ArmStats], trials: list[TrialResult], baseline_variant: str,
                          episodes: Any = None) -> list[tuple[float, Comparison]]:
    """Every complete non-baseline arm vs the complete baseline arm at the same sample ratio (and other
    swept values, or the baseline's only arm there: `_baseline_arm`): `lamo_ray.intervals.compare`
    of their final scores over seeds; when each arm has
    one seed, over the evaluation episodes (``episodes(trial) -> array or None``, `episode_scores`).
    Returns ``[(sample_ratio, Comparison)]``; incomplete arms are left out (the report says why)."""
    out = []
    for ratio, arm, base in baseline_pairs(stats, trials, baseline_variant):
        label, base_label = arm.label, base.label
        if arm.n == 1 and base.n == 1 and episodes is not None:
            pick = lambda lab: next(t for t in trials if t.label == lab and t.sample_ratio == ratio  # noqa: E731
                                    and t.final_score is not None)
            x, y = episodes(pick(label)), episodes(pick(base_label))
            if x is not None and y is not None:
                out.append((ratio, compare(label, base_label, x, y, unit="episodes")))
                continue
        out.append((ratio, compare(label, base_label, arm.scores, base.scores)))
    return out


@dataclass
class Improvement:
    """P(X > Y): a run of ``label`` beats a run of the baseline (Mann-Whitney U / (n_x n_y), rliable).

    ``sample_ratio`` None is the average over the sample ratios both have (rliable's average over tasks).
    """

    label: str
    baseline: str
    sample_ratio: float | None
    probability: float
    ci: tuple[float, float] | None
    note: str = ""


def probability_of_improvement(stats: list[ArmStats], trials: list[TrialResult], baseline_variant: str,
                               reps: int = BOOTSTRAP_REPS, seed: int = 0) -> list[Improvement]:
    """Probability of improvement of every non-baseline label over the baseline (same other swept
    values), per sample ratio and averaged over the ratios, for complete arms with at least 2 seeds on
    both sides (from one seed it would be 0 or 1: no finding).

    CIs: 95% stratified independent bootstrap (rliable) when both sides have >= 2 seeds; for the
    average, only when each side has the same number of seeds at every ratio (rliable needs a
    (runs x ratios) matrix).
    """
    setting_of = {t.label: t.setting for t in trials}
    by_arm = {(s.label, s.sample_ratio): s.scores for s in stats if s.complete and s.n >= 2}
    out = []
    for label in sorted({s.label for s in stats}):
        base = arm_label(baseline_variant, setting_of[label])
        if label == base:
            continue
        ratios = sorted(r for (lab, r) in by_arm if lab == label and (base, r) in by_arm)
        for ratio in ratios:
            x, y = by_arm[(label, ratio)][:, None], by_arm[(base, ratio)][:, None]
            out.append(_improvement(label, base, ratio, [x], [y], reps, seed))
        if len(ratios) > 1:
            xs = [by_arm[(label, r)][:, None] for r in ratios]
            ys = [by_arm[(base, r)][:, None] for r in ratios]
            out.append(_improvement(label, base, None, xs, ys, reps, seed))
    return out


def _improvement(label: str, base: str, ratio: float | None, xs: list[np.ndarray], ys: list[np.ndarray],
                 reps: int, seed: int) -> Improvement:
    """One probability of improvement over the columns (sample ratios) ``xs`` vs ``ys``, each (n, 1)."""
    from rliable import metrics

    library, _ = bootstrap_library()
    point = float(np.mean([metrics.probability_of_improvement(x, y) for x, y in zip(xs, ys)]))
    if min(len(a) for a in xs + ys) < 2:
        return Improvement(label, base, ratio, point, None, NO_CI)
    if len({len(x) for x in xs}) > 1 or len({len(y) for y in ys}) > 1:
        return Improvement(label, base, ratio, point, None, "no CI: unequal seeds across sample ratios")
    if library is None:
        return Improvement(label, base, ratio, point, None, CI_UNAVAILABLE)
    with _numpy_seed(seed):
        _, ci = library.get_interval_estimates({"poi": [np.hstack(xs), np.hstack(ys)]},
                                               metrics.probability_of_improvement, reps=reps)
    return Improvement(label, base, ratio, point, tuple(float(v) for v in np.ravel(ci["poi"])))


@dataclass
class AshaSummary:
    """Which trials ASHA stopped and the compute that saved, in trial-steps (one optimiser step of one trial)."""

    rungs: list[int]
    stopped: int
    saved_steps: int
    total_steps: int

    @property
    def saved_share(self) -> float:
        return self.saved_steps / self.total_steps if self.total_steps else 0.0


def asha_summary(trials: list[TrialResult], rungs: list[int]) -> AshaSummary:
    """Compute saved = steps not run by stopped trials, against running every trial to its ``train.steps``;
    ``rungs``: ASHA's milestones as the sweep recorded them ([] for FIFO)."""
    stopped = [t for t in trials if t.outcome == STOPPED]
    saved = sum(t.steps - _steps_run(t) for t in stopped)
    return AshaSummary(rungs, len(stopped), saved, sum(t.steps for t in trials))


def _steps_run(t: TrialResult) -> int:
    return t.stopped_at_step if t.stopped_at_step is not None else (t.last_step or 0)


# --------------------------------------------------------------------------- best config


def best_arm(stats: list[ArmStats]) -> ArmStats | None:
    """The complete (label, sample ratio) with the highest mean final score; None before any arm is complete."""
    scored = [s for s in stats if s.mean is not None and s.complete]
    return max(scored, key=lambda s: s.mean) if scored else None


def best_versus_runner_up(stats: list[ArmStats], best: ArmStats) -> Comparison | None:
    """`compare` of the best arm with the next best complete arm (None when there is no other): whether
    the best config is a finding or a pick inside the noise."""
    others = sorted((s for s in stats if s.mean is not None and s.complete and s is not best),
                    key=lambda s: s.mean, reverse=True)
    if not others:
        return None
    runner = others[0]
    return compare(f"{best.label} @ {best.sample_ratio:g}", f"{runner.label} @ {runner.sample_ratio:g}",
                   best.scores, runner.scores)


def best_config_yaml(sweep_yaml: str, best: ArmStats, trials: list[TrialResult]) -> str:
    """A sweep file with only the best variant, its sample ratio and other swept values fixed.

    Built from the parent run's ``sweep.yaml`` (the validated sweep as run); the seeds stay.

    Raises:
        ConfigError, pydantic.ValidationError: the result does not validate (checked like a sweep file).
    """
    raw = yaml.safe_load(sweep_yaml)
    sweep_name = raw["name"]
    member = next(t for t in trials if t.label == best.label)
    raw["name"] = f"{raw['name']}-best"
    raw["variants"] = {member.variant: raw["variants"][member.variant]}
    if raw.get("confirm"):  # the configuration is chosen: its seeds are the confirmation's, nothing to search
        raw["seeds"] = raw.pop("confirm")["seeds"]
        raw["scheduler"] = {**raw.get("scheduler", {}), "type": "fifo"}
    raw.pop("confirm", None)
    set_path(raw["base"], RATIO_PARAM, best.sample_ratio)
    for path, value in member.setting:
        set_path(raw["base"], path, yaml.safe_load(value))
    expand_trials(SweepConfig.model_validate(raw), origin="best_config.yaml")  # validates every trial
    header = (f"# Best config of sweep {sweep_name!r}: {best.label} at "
              f"{RATIO_PARAM}={best.sample_ratio:g} (mean final score {best.mean:.2f} over {best.n} seed(s)).\n"
              f"# Re-run: python -m lamo_ray.sweep best_config.yaml\n")
    return header + yaml.safe_dump(raw, sort_keys=False)


# --------------------------------------------------------------------------- figures


def _colors(labels: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _ratio_axis(ax, ratios: list[float]) -> None:
    """Log x when the sample ratios span a decade or more (LaMo's 0.005 ... 0.1); ticks at the ratios."""
    if len(ratios) > 1 and max(ratios) / min(ratios) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(ratios)
    ax.set_xticklabels([f"{r:g}" for r in ratios])
    ax.minorticks_off()


def plot_score_vs_ratio(stats: list[ArmStats], path: Path, colors: dict[str, Any]) -> Path:
    """Final score (mean over seeds, x100) versus sample ratio, one line per variant with its 95% CI band
    (LaMo Fig. 1 style; an error bar when only one ratio has a CI). Arms with one seed or incomplete
    arms (no CI): hollow markers, annotated with their seeds ("n=3", "2 of 3 seeds")."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    scored = [s for s in stats if s.mean is not None]
    if not scored:
        _empty(ax, "no completed trials yet")
    for label in colors:
        arm = sorted((s for s in scored if s.label == label), key=lambda s: s.sample_ratio)
        if not arm:
            continue
        x = np.array([s.sample_ratio for s in arm])
        y = np.array([s.mean for s in arm])
        ax.plot(x, y, "-", color=colors[label], label=label, lw=2)
        for s in arm:
            ax.plot(s.sample_ratio, s.mean, "o", color=colors[label], mfc=colors[label] if s.mean_ci else "white",
                    ms=7, mew=1.5)
            ax.annotate(f"n={s.n}" if s.complete else s.seeds_text, (s.sample_ratio, s.mean),
                        textcoords="offset points", xytext=(5, 5), fontsize=7, color=colors[label])
        with_ci = [s for s in arm if s.mean_ci is not None]
        if len(with_ci) > 1:
            ax.fill_between([s.sample_ratio for s in with_ci], [s.mean_ci[0] for s in with_ci],
                            [s.mean_ci[1] for s in with_ci], color=colors[label], alpha=0.2, lw=0)
        for s in with_ci if len(with_ci) == 1 else []:
            ax.errorbar(s.sample_ratio, s.mean, yerr=[[s.mean - s.mean_ci[0]], [s.mean_ci[1] - s.mean]],
                        color=colors[label], capsize=4)
    if scored:
        _ratio_axis(ax, sorted({s.sample_ratio for s in scored}))
        ax.margins(x=0.1)
        ax.legend(title="variant", fontsize=8)
        ax.grid(alpha=0.3)
    ax.set_xlabel("sample ratio (fraction of trajectories kept)")
    ax.set_ylabel("normalized score (final, x100)")
    ax.set_title("Final score vs sample ratio: mean over seeds, 95% bootstrap CI", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_learning_curves(trials: list[TrialResult], path: Path, colors: dict[str, Any]) -> Path:
    """``normalized_score`` (best target per evaluation, x100) over training steps, one panel per
    sample ratio: per variant the mean over its completed and running seeds with its 95% CI as a band
    (Student-t over seeds; for a single seed, over that evaluation's episodes); trials ASHA stopped as
    thin dashed lines ending in x; the final-score window shaded grey."""
    ratios = sorted({t.sample_ratio for t in trials})
    fig = Figure(figsize=(4.6 * max(len(ratios), 1), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(ratios), 1), sharey=True, squeeze=False)[0])
    if not ratios:
        _empty(axes[0], "no trials")
    for ax, ratio in zip(axes, ratios):
        here = [t for t in trials if t.sample_ratio == ratio]
        steps = max(t.steps for t in here)
        ax.axvspan(steps * (1 - FINAL_WINDOW), steps, color="0.85", lw=0,
                   label=f"final-score window (last {FINAL_WINDOW:.0%})")
        for label in colors:
            runs = [t for t in here if t.label == label and t.curve]
            full = [t for t in runs if t.outcome in (COMPLETED, RUNNING, UNFINISHED)]
            if full:
                grid = sorted({s for t in full for s, _ in t.curve})
                values = np.full((len(full), len(grid)), np.nan)
                for i, t in enumerate(full):
                    for s, v in t.curve:
                        values[i, grid.index(s)] = v
                with np.errstate(all="ignore"):
                    mean = np.nanmean(values, axis=0)
                ax.plot(grid, mean, color=colors[label], lw=2, label=f"{label} (n={len(full)})")
                band = _curve_band(full, grid, values)
                if band is not None:
                    ax.fill_between(grid, band[0], band[1], color=colors[label], alpha=0.2, lw=0)
            for t in (t for t in runs if t.outcome == STOPPED):
                s, v = zip(*t.curve)
                ax.plot(s, v, "--", color=colors[label], lw=1, alpha=0.7)
                ax.plot(s[-1], v[-1], "x", color=colors[label], ms=7, mew=2)
        if any(t.outcome == STOPPED for t in here):
            ax.plot([], [], "--x", color="0.3", label="stopped by ASHA")
        ax.legend(fontsize=7, loc="best")
        ax.set_title(f"sample ratio {ratio:g}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_xlim(0, steps)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("normalized score (best target, x100)")
    fig.suptitle("Learning curves: mean over seeds\nband = 95% CI (over seeds; over episodes for one seed)",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_online_curves(trials: list[TrialResult], path: Path, colors: dict[str, Any]) -> Path | None:
    """For trials with an online phase: ``normalized_score`` over online transitions collected (0 = the
    evaluation at the end of the offline steps), per variant the mean over its seeds with its 95% CI
    band (Student-t over seeds; over episodes for one seed), as the ODT-TD3 paper plots score vs
    environment steps. None when no trial has an online phase."""
    online = [t for t in trials if t.offline_steps is not None and t.curve
              and t.outcome in (COMPLETED, RUNNING, UNFINISHED)]
    if not online:
        return None
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for label in colors:
        runs = [t for t in online if t.label == label]
        if not runs:
            continue
        grid = sorted({s for t in runs for s, _ in t.curve if s >= t.offline_steps})
        values = np.full((len(runs), len(grid)), np.nan)
        xs = np.full((len(runs), len(grid)), np.nan)
        for i, t in enumerate(runs):
            for s, v in t.curve:
                if s in grid:
                    values[i, grid.index(s)] = v
                    xs[i, grid.index(s)] = 0.0 if s <= t.offline_steps else t.transitions.get(s, np.nan)
        with np.errstate(all="ignore"):
            mean, x = np.nanmean(values, axis=0), np.nanmean(xs, axis=0)
        ax.plot(x, mean, "-o", ms=3, color=colors[label], lw=2, label=f"{label} (n={len(runs)})")
        band = _curve_band(runs, grid, values)
        if band is not None:
            ax.fill_between(x, band[0], band[1], color=colors[label], alpha=0.2, lw=0)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("online transitions collected")
    ax.set_ylabel("normalized score (best target, x100)")
    ax.grid(alpha=0.3)
    fig.suptitle("Online fine-tuning: mean over seeds\nband = 95% CI (over seeds; over episodes for one seed)",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def _curve_band(runs: list[TrialResult], grid: list[int], values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) per grid step: Student-t over the seeds evaluated there (>= 2), else the single
    seed's CI over its episodes; NaN where neither exists. None when no step has one."""
    low, high = np.full(len(grid), np.nan), np.full(len(grid), np.nan)
    for j, step in enumerate(grid):
        column = values[:, j][~np.isnan(values[:, j])]
        if column.size >= 2:
            ci = mean_ci(column)[1]
        elif column.size == 1:
            ci = next((t.curve_ci.get(step) for t in runs if step in t.curve_ci), None) if len(runs) == 1 else None
        else:
            ci = None
        if ci is not None:
            low[j], high[j] = ci
    return (low, high) if not np.isnan(low).all() else None


OUTCOME_COLORS = {COMPLETED: "tab:green", STOPPED: "tab:orange", FAILED: "tab:red", RUNNING: "tab:blue",
                  UNFINISHED: "tab:gray"}


def plot_asha(trials: list[TrialResult], asha: AshaSummary, path: Path) -> Path:
    """One bar per trial: steps run, coloured by outcome, over a grey outline of its ``train.steps``;
    hatched for the steps ASHA saved; dotted lines at the rung milestones."""
    ordered = sorted(trials, key=lambda t: (t.label, t.sample_ratio, t.seed))
    fig = Figure(figsize=(7.5, 1.2 + 0.32 * max(len(ordered), 1)), layout="constrained")
    ax = fig.subplots()
    for i, t in enumerate(ordered):
        run = _steps_run(t)
        ax.barh(i, t.steps, color="0.95", edgecolor="0.7", height=0.7, lw=0.5)
        ax.barh(i, run, color=OUTCOME_COLORS.get(t.outcome, "tab:gray"), height=0.7)
        if t.outcome == STOPPED:
            ax.barh(i, t.steps - run, left=run, color="none", edgecolor="tab:orange", hatch="///", height=0.7,
                    lw=0.5)
    for k, milestone in enumerate(asha.rungs, start=1):
        ax.axvline(milestone, color="0.3", ls=":", lw=1)
        ax.text(milestone, 1.0, f"rung {k}", transform=ax.get_xaxis_transform(), fontsize=7, va="bottom",
                ha="center", color="0.3")
    if not ordered:
        _empty(ax, "no trials yet")
    else:
        ax.set_ylim(len(ordered) - 0.5, -0.5)   # first trial on top
    ax.set_yticks(range(len(ordered)))
    ax.set_yticklabels([f"{t.label} | ratio {t.sample_ratio:g} | seed {t.seed}" for t in ordered], fontsize=7)
    ax.set_xlabel("training steps")
    from matplotlib.patches import Patch

    present = [o for o in OUTCOME_COLORS if any(t.outcome == o for t in ordered)]
    handles = [Patch(color=OUTCOME_COLORS[o], label="stopped by ASHA" if o == STOPPED else o) for o in present]
    handles.append(Patch(facecolor="0.95", edgecolor="0.7", label="train.steps (planned)"))
    if asha.stopped:
        handles.append(Patch(facecolor="none", edgecolor="tab:orange", hatch="///", label="saved by ASHA"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"ASHA: {asha.stopped} of {len(ordered)} trials stopped; saved {asha.saved_steps:,} of "
                 f"{asha.total_steps:,} trial-steps ({asha.saved_share:.0%})", fontsize=10, pad=14)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- documents


@dataclass
class Section:
    """A piece of the report, rendered to Markdown and HTML alike: text, table, figure or code."""

    kind: str                     # "heading" | "text" | "table" | "figure" | "code"
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci: tuple[float, float] | None, arm: ArmStats | None = None) -> str:
    if ci is not None:
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]"
    if arm is None:
        return "-"
    if not arm.complete:
        return "none: incomplete arm"
    return NO_CI if arm.n == 1 else CI_UNAVAILABLE


def _trial_status(t: TrialResult, asha: AshaSummary) -> str:
    if t.outcome == STOPPED:
        rung = rung_of(t.stopped_at_step or 0, asha.rungs)
        return f"stopped at step {_steps_run(t)}" + (f" (rung {rung})" if rung else "")
    if t.outcome == RUNNING:
        return f"running (step {t.last_step or 0} of {t.steps})"
    return t.outcome


@dataclass
class ReportContent:
    """Everything `build_sections` renders (computed by `generate_report`)."""

    sweep_name: str
    parent: Run
    trials: list[TrialResult]                 # every trial run of the sweep
    scored: list[TrialResult]                 # the trials the arms are scored from
    search: list[TrialResult]                 # the search stage's trials (empty without confirm)
    stats: list[ArmStats]
    comparisons: list[tuple[float, Comparison]]
    improvements: list[Improvement]
    asha: AshaSummary
    figures: dict[str, Path]
    best: ArmStats | None
    best_check: Comparison | None
    best_yaml: str | None
    selection: list[dict[str, Any]]
    notes: list[str]
    baseline: str
    continual: list[ContinualArm] = field(default_factory=list)
    forgetting: list[ForgettingComparison] = field(default_factory=list)


def supported_findings(content: ReportContent) -> list[str]:
    """The report's conclusions in words: one sentence per comparison with the baseline, and why an
    arm is not compared (incomplete, or no baseline at its sample ratio)."""
    lines = []
    for ratio, c in content.comparisons:
        lines.append(f"Sample ratio {ratio:g}: {c.sentence()}")
    lines += [f.sentence() for f in content.forgetting]
    for arm in content.stats:
        if not arm.complete and arm.planned:
            why = (", ".join(f"{v} {k}" for k, v in sorted(arm.counts.items()) if k != COMPLETED)
                   or f"{arm.counts.get(COMPLETED, 0)} completed without a normalized score: no reference scores "
                      "for the env, or no evaluation")
            lines.append(f"{arm.label} at sample ratio {arm.sample_ratio:g} has {arm.seeds_text} scored ({why}): "
                         "its mean is over the seeds that finished, so it is not compared.")
    if not content.comparisons and content.stats and not any(c for c in lines):
        lines.append(f"No comparison: no complete arm has a complete baseline ({content.baseline!r}) arm at its "
                     "sample ratio.")
    return lines


def build_sections(content: ReportContent) -> list[Section]:
    """The report's content, in order: what the data support, the tables, figures, the search, trials,
    best config."""
    c = content
    counts = Counter(t.outcome for t in c.trials)
    sec = [Section("heading", f"Sweep report: {c.sweep_name}"),
           Section("text", f"Parent MLflow run `{c.parent.info.run_id}` ({c.parent.info.status}); generated "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Trials: {len(c.trials)}"
                           + (f" ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})." if c.trials else "."))]
    if c.search:
        sec.append(Section("text", f"Search, then confirm: the arms below are scored from the {len(c.scored)} "
                                   "confirmation trials only (the search's best configurations, trained again with "
                                   f"fresh seeds, none stopped); the {len(c.search)} search trials are in \"Search\"."))
    findings = supported_findings(c)
    if findings:
        sec += [Section("heading", "What the data support")] + [Section("text", line) for line in findings]
    sec.append(Section("text", "Final score (LaMo protocol, REFERENCE.md \"Evaluation\"): mean of the evaluations in "
                               f"the last {FINAL_WINDOW:.0%} of the trial's train.steps (plus its online updates, for a "
                               "trial with an online phase) at the best target return (the "
                               "target with the highest such mean); normalized score x100. Only completed trials have "
                               "one. Per arm: mean with its 95% Student-t CI over seeds, IQM with its 95% "
                               "stratified-bootstrap CI (rliable). Comparisons: difference of means with Welch's 95% "
                               "CI; a difference is supported when its CI excludes 0. No correction for multiple "
                               "comparisons."
                               + (" A continual trial's final score is instead its average success after the last "
                                  "stage, x100 (\"Continual learning\" below)." if c.continual else "")))
    sec += [Section("text", f"**Note:** {n}") for n in c.notes]
    sec += [Section("heading", "Final score per variant and sample ratio"),
            Section("table", headers=["variant", "sample ratio", "seeds", "mean", "mean 95% CI", "IQM", "IQM 95% CI",
                                      "not scored"],
                    rows=[[s.label, f"{s.sample_ratio:g}", s.seeds_text, _fmt(s.mean), _fmt_ci(s.mean_ci, s),
                           _fmt(s.iqm), _fmt_ci(s.iqm_ci, s),
                           ", ".join(f"{v} {k}" for k, v in sorted(s.counts.items()) if k != COMPLETED) or "-"]
                          for s in c.stats])]
    if c.comparisons:
        sec += [Section("heading", f"Comparison with {c.baseline}"),
                Section("table", headers=["variant", "baseline", "sample ratio", "difference", "95% CI", "over",
                                          "the data say"],
                        rows=[[cmp.label, cmp.baseline, f"{ratio:g}", f"{cmp.difference:+.2f}",
                               "-" if cmp.ci is None else f"[{cmp.ci[0]:+.2f}, {cmp.ci[1]:+.2f}]",
                               f"{cmp.n} vs {cmp.n_baseline} {cmp.unit}", cmp.verdict]
                              for ratio, cmp in c.comparisons])]
    if c.improvements:
        sec += [Section("heading", "Probability of improvement over the baseline"),
                Section("text", "P(X > Y): the chance that a seed of the variant scores above a seed of the baseline "
                                "(rliable; 0.5 = no difference); arms with at least 2 seeds on both sides."),
                Section("table", headers=["variant", "baseline", "sample ratio", "P(variant > baseline)", "95% CI"],
                        rows=[[i.label, i.baseline, "all (average)" if i.sample_ratio is None else f"{i.sample_ratio:g}",
                               f"{i.probability:.3f}", i.note or _fmt_ci(i.ci)] for i in c.improvements])]
    if c.continual:
        sec += continual_sections(c)
    sec += [Section("figure", "Final score vs sample ratio", path=c.figures["score"]),
            Section("figure", "Learning curves", path=c.figures["curves"])]
    if "online" in c.figures:
        sec.append(Section("figure", "Online fine-tuning: score vs online transitions", path=c.figures["online"]))
    if c.search:
        sec += [Section("heading", "Search"),
                Section("text", "The search's configurations, ranked per variant by the furthest step reached, then "
                                "the last evaluation's score; these scores are not estimates of the arms (selection "
                                "and early stopping bias them upward). Picked for confirmation:"),
                Section("table", headers=["variant", "rank", "configuration", "search step", "search score",
                                          "search seeds"],
                        rows=[[r["variant"], str(r["rank"]),
                               ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in r["params"].items()),
                               f"{r['search_step']:g}", _fmt(r["search_score"]), str(r["search_seeds"])]
                              for r in c.selection])]
    if c.asha.rungs:
        sec += [Section("heading", "ASHA"),
                Section("text", (f"Rung milestones (steps): {', '.join(map(str, c.asha.rungs))}. {c.asha.stopped} "
                                 f"trial(s) stopped; compute saved: {c.asha.saved_steps:,} of {c.asha.total_steps:,} "
                                 f"trial-steps ({c.asha.saved_share:.0%}) compared with running every trial to its "
                                 "train.steps.")),
                Section("figure", "ASHA: steps run per trial", path=c.figures["asha"])]
    sec += [Section("heading", "Trials"),
            Section("table", headers=["trial", "stage", "variant", "sample ratio", "seed", "status", "final score",
                                      "best target", "last eval score", "last eval 95% CI", "MLflow run"],
                    rows=[[t.name, t.stage, t.label, f"{t.sample_ratio:g}", str(t.seed), _trial_status(t, c.asha),
                           _fmt(t.final_score), t.best_target or "-", _fmt(t.curve[-1][1] if t.curve else None),
                           _fmt_ci(t.curve_ci.get(t.curve[-1][0])) if t.curve else "-", t.run_id]
                          for t in sorted(c.trials, key=lambda t: (t.stage != "search", t.label, t.sample_ratio,
                                                                    t.seed))]),
            Section("heading", "Best config")]
    if c.best is None:
        sec.append(Section("text", "No complete arm yet: no best config."))
    else:
        text = (f"{c.best.label} at sample ratio {c.best.sample_ratio:g}: mean final score {c.best.mean:.2f} "
                f"{_fmt_ci(c.best.mean_ci, c.best)} over {c.best.n} seed(s), the highest mean. Saved as "
                "`best_config.yaml`.")
        if c.best_check is not None:
            text += (" It is a finding only if it beats the runner-up: " + c.best_check.sentence()
                     if c.best_check.verdict != "higher" else " " + c.best_check.sentence())
        sec.append(Section("text", text))
        if c.best_yaml:
            sec.append(Section("code", c.best_yaml))
    return sec


def success_rule_sentence(rules: list[str]) -> str:
    """What the continual success rates count, from the rules the trials logged (``continual.success_rule``)."""
    from lamo_ray.continual import SUCCESS_RULE_MEANING as SUCCESS_RULES

    if len(rules) == 1 and rules[0] in SUCCESS_RULES:
        return f"An episode is a success by `continual.success_rule: {rules[0]}`: {SUCCESS_RULES[rules[0]]}."
    if len(rules) == 1:
        return ("The trials did not log `continual.success_rule` (runs before it existed counted a success at any "
                "step): the success rule of these numbers is not recorded.")
    return ("The arms were scored by different success rules (`continual.success_rule`, the column 'success rule': "
            + "; ".join(f"{r}: {SUCCESS_RULES.get(r, 'not recorded')}" for r in rules)
            + "): their success rates are not comparable across rules.")


def continual_sections(c: ReportContent) -> list[Section]:
    """The continual trials' part of the report: definitions, per-arm table, forgetting comparisons,
    success-matrix heatmaps."""
    rows = []
    for a in c.continual:
        (success, success_ci), (forget, forget_ci) = a.ci(a.average_success), a.ci(a.forgetting)
        why = "none: incomplete arm" if not a.complete else NO_CI
        row = [a.label, f"{a.sample_ratio:g}", str(a.n) if a.complete else f"{a.n} of {a.planned} seeds",
               _fmt(success), _fmt_ci(success_ci) if success_ci else why,
               _fmt(forget), _fmt_ci(forget_ci) if forget_ci else why]
        if a.forward_transfer is not None:
            transfer, transfer_ci = a.ci(a.forward_transfer)
            row += [_fmt(transfer), _fmt_ci(transfer_ci) if transfer_ci else why]
        else:
            row += ["reference" if any(t.label == a.label and t.continual_method == REFERENCE_METHOD
                                       for t in c.trials) else "-", "-"]
        rows.append(row)
    rules = sorted({r for a in c.continual for r in a.success_rules})
    if len(rules) > 1:      # arms scored by different rules: each row says its own
        for a, row in zip(c.continual, rows):
            row.insert(3, ", ".join(a.success_rules))
    sec = [Section("heading", "Continual learning (Continual World metrics)"),
           Section("text", success_rule_sentence(rules)),
           Section("text", "Success matrix: the success rate of each evaluated task (rows) at the end of each stage "
                           "(columns). Average success: the mean over the sequence's tasks after the last stage (the "
                           "final score of a continual trial, x100). Forgetting: per task, its success at the end of "
                           "its own stage minus its success at the end of the sequence, averaged over the sequence's "
                           "tasks (the last task's is 0 by construction), x100; lower is better (Continual World's "
                           "definitions, `lamo_ray.continual.metrics`). Per arm: mean with its 95% Student-t CI over "
                           "seeds; forgetting is compared with the baseline by Welch's 95% CI of the difference. Forward "
                           "transfer (x100): per task (AUC - AUC_ref) / (1 - AUC_ref), AUC its mean success over its "
                           "own stage and AUC_ref the same for the `single` variant (each task trained alone from the "
                           "pre-trained weights, mean over its seeds), averaged over the tasks; only where the sweep "
                           "has a `single` variant."),
           Section("table", headers=["variant", "sample ratio", "seeds", *(["success rule"] if len(rules) > 1 else []),
                                     "average success", "95% CI", "forgetting", "95% CI", "forward transfer", "95% CI"],
                   rows=rows)]
    if c.forgetting:
        sec.append(Section("table", headers=["variant", "baseline", "sample ratio", "forgetting difference", "95% CI",
                                             "over", "the data say"],
                           rows=[[f.comparison.label, f.comparison.baseline, f"{f.sample_ratio:g}",
                                  f"{f.comparison.difference:+.2f}",
                                  "-" if f.comparison.ci is None
                                  else f"[{f.comparison.ci[0]:+.2f}, {f.comparison.ci[1]:+.2f}]",
                                  f"{f.comparison.n} vs {f.comparison.n_baseline} seeds", f.verdict]
                                 for f in c.forgetting]))
    sec.append(Section("figure", "Success matrix per variant", path=c.figures["matrix"]))
    return sec


def render_markdown(sections: list[Section]) -> str:
    """Markdown with figures linked by file name (they sit beside report.md)."""
    out = []
    for s in sections:
        if s.kind == "heading":
            out.append(("# " if not out else "## ") + s.text)
        elif s.kind == "text":
            out.append(s.text)
        elif s.kind == "table":
            cells = [[c.replace("|", "\\|") for c in row] for row in [s.headers] + s.rows]
            out.append("\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(s.headers)]
                                 + ["| " + " | ".join(r) + " |" for r in cells[1:]]))
        elif s.kind == "figure":
            out.append(f"![{s.text}]({s.path.name})")
        elif s.kind == "code":
            out.append(f"```yaml\n{s.text}```")
    return "\n\n".join(out) + "\n"


def render_html(sections: list[Section]) -> str:
    """One self-contained HTML page: figures embedded as base64 PNG, no external files."""
    body = []
    for s in sections:
        text = html.escape(s.text)
        if s.kind == "heading":
            body.append(f"<h{1 if not body else 2}>{text}</h{1 if not body else 2}>")
        elif s.kind == "text":
            text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`(.+?)`", r"<code>\1</code>", text))
            body.append(f"<p>{text}</p>")
        elif s.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in s.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in s.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif s.kind == "figure":
            data = base64.b64encode(s.path.read_bytes()).decode()
            body.append(f'<figure><img alt="{text}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{text}</figcaption></figure>")
        elif s.kind == "code":
            body.append(f"<pre>{text}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
             "th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}")
    title = html.escape(sections[0].text if sections else "Sweep report")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_scores_csv(trials: list[TrialResult], path: Path) -> Path:
    """One row per trial: run id, variant, sample ratio, seed, outcome, steps, final score, best target."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "trial", "variant", "sample_ratio", "seed", "outcome", "train_steps", "steps_run",
                    "final_score", "best_target"])
        for t in trials:
            w.writerow([t.run_id, t.name, t.label, t.sample_ratio, t.seed, t.outcome, t.steps, _steps_run(t),
                        "" if t.final_score is None else t.final_score, t.best_target or ""])
    return path


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class Report:
    """A written report: ``path`` of its ``report.md`` (``report.html`` beside it) and its ``findings``,
    the sentences of "What the data support" (`supported_findings`)."""

    path: Path
    findings: list[str]


def generate_report(tracking_uri: str, experiment: str, out_dir: str | Path, parent_run_id: str | None = None,
                    baseline_variant: str | None = None, *, reps: int = BOOTSTRAP_REPS, seed: int = 0,
                    log_to_mlflow: bool = True) -> Report:
    """Write the sweep report into ``out_dir`` and log it as artifacts ``report/`` of the parent run.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment name (the sweep name by default) or id.
        out_dir: directory for the files (created).
        parent_run_id: the sweep's parent run; default the latest ``lamo_ray.role=sweep`` run.
        baseline_variant: variant every other variant is compared with; default the sweep's
            ``report_baseline`` as its parent run recorded it. When absent from the trials the
            comparisons are skipped with a note in the report.
        reps: bootstrap replicates per CI.
        seed: seed of the bootstrap, so the same store gives the same CIs.
        log_to_mlflow: log the files to the parent run (the sweep driver and CLI do).

    Returns:
        `Report`: the path of ``report.md`` and the findings in words.

    Raises:
        ReportError: experiment or sweep run not found.
    """
    import tempfile

    client = MlflowClient(tracking_uri)
    parent = find_sweep_run(client, experiment, parent_run_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweep_yaml = _download_text(client, parent.info.run_id, "sweep.yaml", Path(tmp))
    sweep = yaml.safe_load(sweep_yaml)
    recorded = parent.data.params
    baseline_variant = baseline_variant or recorded.get(BASELINE_PARAM, DEFAULT_BASELINE)
    rungs = [int(r) for r in recorded.get(RUNGS_PARAM, "").split(",") if r]
    swept = [p for p in find_domains(sweep.get("base", {})) if p != RATIO_PARAM]
    runs = client.search_runs([parent.info.experiment_id], max_results=10_000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                            f"and tags.`{ROLE_TAG}` = 'trial'")
    trials = [load_trial(client, r, swept) for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            if t.continual and t.outcome == COMPLETED:
                try:
                    t.success_matrix = json.loads(_download_text(client, t.run_id, MATRIX_ARTIFACT, Path(tmp)))
                except (MlflowException, OSError, ValueError) as err:
                    log.warning("trial %s: no readable %s (%s)", t.name, MATRIX_ARTIFACT, err)
    log.info("sweep %s: %d trial runs under parent run %s", sweep.get("name"), len(trials), parent.info.run_id)
    # a sweep with a confirmation stage is scored from its confirmation trials only (module docstring)
    search = [t for t in trials if t.stage == "search"]
    scored = [t for t in trials if t.stage != "search"]
    selection = _read_selection(client, parent.info.run_id) if search else []

    notes = _notes(trials, scored, baseline_variant)
    stats = arm_stats(scored, reps=reps, seed=seed)
    has_baseline = any(t.variant == baseline_variant for t in scored)
    comparisons = compare_with_baseline(stats, scored, baseline_variant,
                                        episodes=functools.partial(episode_scores, client)) if has_baseline else []
    improvements = probability_of_improvement(stats, scored, baseline_variant, reps, seed) if has_baseline else []
    asha = asha_summary(search or trials, rungs)
    colors = _colors(sorted({t.label for t in trials}))
    figures = {"score": plot_score_vs_ratio(stats, out / "score_vs_sample_ratio.png", colors),
               "curves": plot_learning_curves(scored, out / "learning_curves.png", colors),
               "asha": plot_asha(search or trials, asha, out / "asha.png")}
    online_figure = plot_online_curves(scored, out / "online_curves.png", colors)
    continual = continual_arms(scored)
    if continual:
        figures["matrix"] = plot_success_matrices(continual, out / "success_matrix.png")
    if online_figure is not None:
        figures["online"] = online_figure
    best = best_arm(stats)
    best_yaml = None
    files = [*figures.values(), write_scores_csv(trials, out / "final_scores.csv")]
    if best is not None:
        try:
            best_yaml = best_config_yaml(sweep_yaml, best, scored)
        except (ConfigError, ValueError, KeyError) as err:
            notes.append(f"the best config could not be written as a sweep file: {err}")
            log.warning("best config not written: %s", err)
        else:
            files.append(out / "best_config.yaml")
            files[-1].write_text(best_yaml)
    content = ReportContent(sweep.get("name", experiment), parent, trials, scored, search, stats, comparisons,
                            improvements, asha, figures, best, best_versus_runner_up(stats, best) if best else None,
                            best_yaml, selection, notes, baseline_variant, continual,
                            compare_forgetting(continual, scored, baseline_variant) if has_baseline else [])
    sections = build_sections(content)
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(sections))
    page.write_text(render_html(sections))
    files += [md, page]
    if log_to_mlflow:
        for f in files:
            client.log_artifact(parent.info.run_id, str(f), "report")
        log.info("report logged to run %s as report/", parent.info.run_id)
    return Report(md, supported_findings(content))


def _read_selection(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """The configurations the search picked (`lamo_ray.tracking.SELECTION_FILE` on the parent run); [] if absent."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return yaml.safe_load(_download_text(client, run_id, SELECTION_FILE, Path(tmp))) or []
    except (MlflowException, OSError) as err:
        log.warning("no %s on run %s (%s)", SELECTION_FILE, run_id, err)
        return []


def _notes(trials: list[TrialResult], scored: list[TrialResult], baseline_variant: str) -> list[str]:
    """What a reader must know before trusting the tables: unfinished sweep, failures, single seeds."""
    notes = []
    running = [t for t in trials if t.outcome in (RUNNING, UNFINISHED)]
    if not trials:
        notes.append("this sweep has no trial runs yet.")
    if running:
        notes.append(f"{len(running)} trial(s) not finished (MLflow still shows RUNNING, or the sweep was "
                     "interrupted): the numbers below are preliminary.")
    failed = [t for t in trials if t.outcome == FAILED]
    if failed:
        notes.append(f"{len(failed)} trial(s) failed: {', '.join(t.name for t in failed)}.")
    if any(t.outcome == STOPPED for t in scored):
        notes.append("the scheduler (ASHA) stopped trials inside the arms below: those arms are incomplete and not "
                     "compared. For a method comparison run every seed to the end (scheduler.type: fifo), or add a "
                     "confirmation stage (confirm:) after an ASHA search.")
    if trials and not any(t.variant == baseline_variant for t in scored):
        notes.append(f"no variant named {baseline_variant!r}: no comparison (choose one with --baseline VARIANT).")
    per_arm: dict[tuple[str, float], int] = defaultdict(int)
    for t in scored:
        per_arm[(t.label, t.sample_ratio)] += t.final_score is not None
    if bootstrap_library()[0] is None and any(n > 1 for n in per_arm.values()):
        notes.append(f"IQM confidence intervals unavailable: rliable's bootstrap cannot be imported "
                     f"({bootstrap_library()[1]}); rliable 1.2 needs arch < 8, which needs pandas < 3.")
    if any(n == 1 for n in per_arm.values()):
        notes.append(f"some arms have one scored seed ({NO_CI}): their numbers are single training runs, and a "
                     "comparison between two of them covers evaluation noise only.")
    return notes


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lamo_ray.report", description=__doc__.split("\n")[0])
    p.add_argument("experiment", metavar="SWEEP_NAME_OR_MLFLOW_EXPERIMENT")
    p.add_argument("--out", help="output directory (default: reports/<experiment>)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
    p.add_argument("--parent-run-id", help="the sweep's parent run (default: the latest sweep run)")
    p.add_argument("--baseline", help="variant every other variant is compared with (default: the sweep's "
                   "report_baseline)")
    p.add_argument("--reps", type=int, default=BOOTSTRAP_REPS, help=f"bootstrap replicates per CI (default: {BOOTSTRAP_REPS})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        report = generate_report(uri, args.experiment, args.out or Path("reports") / args.experiment,
                                 args.parent_run_id, args.baseline, reps=args.reps)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report.findings))
    print(f"report: {report.path}\nhtml:   {report.path.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
