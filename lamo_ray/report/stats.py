"""The report's statistics (`lamo_ray.report`): arms (a variant's final scores at one sample ratio,
across seeds) with their mean and IQM and 95% CIs (`arm_stats`; `lamo_ray.intervals`, rliable's
bootstrap), comparisons with the baseline variant (`compare_with_baseline`, `baseline_pairs`), the
probability of improvement, ASHA's stopped trials and the compute they saved (`asha_summary`,
`rung_of`), and the best configuration (`best_arm`, `best_versus_runner_up`, `best_config_yaml`).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import yaml

from lamo_ray.config import SweepConfig, expand_trials, set_path
from lamo_ray.intervals import SUCCESS_RANGE, Comparison, compare, mean_ci
from lamo_ray.report.load import CONTINUAL, RATIO_PARAM, STOPPED, TrialResult, _steps_run, arm_label

BOOTSTRAP_REPS = 2000         # bootstrap replicates per CI (rliable's default 50000 is slow and unneeded for a few seeds)
NO_CI = "single seed: no CI"
#: a percentile bootstrap over 2 seeds is their range (4 resamples): no interval below this many seeds
MIN_BOOTSTRAP_SEEDS = 3
FEW_FOR_BOOTSTRAP = f"too few seeds for a bootstrap CI (needs {MIN_BOOTSTRAP_SEEDS})"
TOO_FEW = "too few seeds: the 95% CI spans the whole range"


def score_range(trials: list[TrialResult]) -> tuple[float, float] | None:
    """The range of these trials' final score when it has one: a continual trial's average success lives
    in [0, 100] (`lamo_ray.intervals.SUCCESS_RANGE`); a D4RL-normalised score has no bound (below
    random, above expert), so None unless every trial is continual."""
    return SUCCESS_RANGE if trials and all(t.kind == CONTINUAL for t in trials) else None


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
    bounds: tuple[float, float] | None = None   # the final score's range (`score_range`), None: unbounded

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
    """Mean with its 95% Student-t CI (within the score's range, when it has one: `score_range`) and IQM
    with its 95% stratified-bootstrap CI (rliable; inside the range of the data; from
    `MIN_BOOTSTRAP_SEEDS` seeds) per (label, sample ratio).

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
        stats = ArmStats(label, ratio, scores, dict(Counter(t.outcome for t in members)),
                         bounds=score_range(members))
        if stats.n:
            stats.mean, stats.iqm = (float(v) for v in _mean_and_iqm(scores[:, None]))
        if stats.n >= 2 and stats.complete:
            stats.mean_ci = mean_ci(scores, stats.bounds)[1]
            if library is not None and stats.n >= MIN_BOOTSTRAP_SEEDS:
                with _numpy_seed(seed):
                    _, ci = library.get_interval_estimates({label: scores[:, None]}, _mean_and_iqm, reps=reps)
                stats.iqm_ci = (float(ci[label][0, 1]), float(ci[label][1, 1]))
        out.append(stats)
    return out


# --------------------------------------------------------------------------- comparisons


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
                out.append((ratio, compare(label, base_label, x, y, unit="episodes", bounds=arm.bounds)))
                continue
        out.append((ratio, compare(label, base_label, arm.scores, base.scores, bounds=arm.bounds)))
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
    if min(len(a) for a in xs + ys) < MIN_BOOTSTRAP_SEEDS:
        return Improvement(label, base, ratio, point, None, FEW_FOR_BOOTSTRAP)
    if len({len(x) for x in xs}) > 1 or len({len(y) for y in ys}) > 1:
        return Improvement(label, base, ratio, point, None, "no CI: unequal seeds across sample ratios")
    if library is None:
        return Improvement(label, base, ratio, point, None, CI_UNAVAILABLE)
    with _numpy_seed(seed):
        _, ci = library.get_interval_estimates({"poi": [np.hstack(xs), np.hstack(ys)]},
                                               metrics.probability_of_improvement, reps=reps)
    return Improvement(label, base, ratio, point, tuple(float(v) for v in np.ravel(ci["poi"])))


# --------------------------------------------------------------------------- ASHA


def rung_of(stopped_at_step: int, rungs: list[int]) -> int | None:
    """1-based rung at which ASHA stopped a trial: the highest milestone <= the step it stopped at."""
    passed = [i for i, milestone in enumerate(rungs, start=1) if milestone <= stopped_at_step]
    return passed[-1] if passed else None


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
                   best.scores, runner.scores, bounds=best.bounds)


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
