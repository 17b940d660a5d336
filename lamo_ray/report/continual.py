"""The report on continual trials (`lamo_ray.report`; the trials themselves are `lamo_ray.continual`):
Continual World's metrics per arm (`continual_arms`: average success, forgetting, forward transfer
against the ``single`` variant's stage AUCs (`reference_aucs`), the mean success matrix) and the
forgetting compared with the baseline variant (`compare_forgetting`). Their sections of the document
are `lamo_ray.report.render.continual_sections`, their figure `lamo_ray.report.plots.plot_success_matrices`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lamo_ray.intervals import FORGETTING_RANGE, Comparison, compare, mean_ci
from lamo_ray.report.load import COMPLETED, TrialResult
from lamo_ray.report.stats import baseline_pairs

REFERENCE_METHOD = "single"   # forward transfer's single-task reference (`lamo_ray.continual.runner`)


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

    def ci(self, values: np.ndarray, bounds: tuple[float, float] | None) -> tuple[float | None, tuple[float, float] | None]:
        """``(mean, 95% Student-t CI within the metric's ``bounds``)`` of one metric's per-seed ``values``;
        no CI for an incomplete arm (its mean is over the seeds that finished)."""
        if not len(values):
            return None, None
        mean, ci = mean_ci(values, bounds)
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

    def sentence(self, with_ratio: bool = True) -> str:
        """The comparison in words; ``with_ratio`` names its sample ratio (only when the sweep varies it)."""
        c = self.comparison
        at = f" at sample ratio {self.sample_ratio:g}" if with_ratio else ""
        sizes = f"({c.n} vs {c.n_baseline} seeds)"
        if c.ci is None:
            return (f"Forgetting, {c.label} vs {c.baseline}{at}: difference "
                    f"{c.difference:+.1f} from {sizes}: too few to give a confidence interval, so no conclusion.")
        if c.verdict == "no spread":
            return (f"Forgetting, {c.label} vs {c.baseline}{at}: difference "
                    f"{c.difference:+.1f} {sizes}, but every seed of both gave the same forgetting, so there is no "
                    "spread to build a confidence interval on: no conclusion.")
        ci = f"difference {c.difference:+.1f}, 95% CI [{c.ci[0]:+.1f}, {c.ci[1]:+.1f}] {sizes}"
        if c.verdict == "not distinguishable":
            return f"Forgetting{at}: {c.label} and {c.baseline} are not distinguishable here: {ci}."
        return f"Forgetting{at}: {c.label} {self.verdict} than {c.baseline} here: {ci}."


def compare_forgetting(arms: list[ContinualArm], trials: list[TrialResult],
                       baseline_variant: str) -> list[ForgettingComparison]:
    """Each complete continual arm vs the baseline variant's complete arm at the same sample ratio (and
    other swept values: `_baseline_arm`): Welch's 95% CI of the difference in mean forgetting over seeds,
    within the range a difference of two forgettings can take."""
    return [ForgettingComparison(ratio, compare(arm.label, base.label, arm.forgetting, base.forgetting,
                                                bounds=FORGETTING_RANGE))
            for ratio, arm, base in baseline_pairs(arms, trials, baseline_variant)]
