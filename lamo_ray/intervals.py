"""95% confidence intervals and the sentences that state them.

Every score lamo_ray prints or reports comes with its uncertainty (Agarwal et al. 2021, "Deep RL at
the Edge of the Statistical Precipice"; Colas et al. 2018, "How many random seeds?"):

- `mean_ci`: the mean of independent samples (the episodes of one evaluation, or the seeds of one
  arm) with its 95% Student-t interval, ``mean +- t(0.975, n-1) * sd / sqrt(n)``;
- `difference_ci`: the difference of two means with Welch's 95% interval (unequal variances; valid
  for the 3-5 seeds typical of RL papers, where a percentile bootstrap of 3 values is too narrow);
- `compare`: one sentence saying whether the data support a difference between two arms: the CI of
  the difference excludes 0 ("higher" / "lower") or not ("not distinguishable").

Both intervals assume roughly normal means; with fewer than 2 samples on a side there is no interval
(None), never an invented one.

A metric that lives in a known range (a success rate in [0, 100], forgetting in [-100, 100]) passes
it as ``bounds``: the interval is intersected with that range (`within`). A 95% confidence interval
intersected with the known range of the parameter still covers the parameter at least 95% of the time
(the parameter is always in the range), so this keeps the interval's guarantee while no bound lies
outside what the metric can take; with 2-3 seeds the intersection is often the whole range, which the
report states as "too few seeds" (`spans_range`) rather than printing it as an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95

#: ranges of the bounded metrics the reports state (x100 units)
SUCCESS_RANGE = (0.0, 100.0)          # a success rate or an average success
FORGETTING_RANGE = (-100.0, 100.0)    # a success rate at one time minus one at another
TRANSFER_RANGE = (-math.inf, 100.0)   # Continual World's forward transfer, (AUC - ref) / (1 - ref)


def difference_range(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """The range of ``x - y`` for ``x`` and ``y`` both in ``bounds`` (None: unbounded)."""
    return None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])


def within(ci: tuple[float, float] | None, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """``ci`` intersected with ``bounds`` (module docstring); ``ci`` unchanged without bounds or CI."""
    if ci is None or bounds is None:
        return ci
    return max(ci[0], bounds[0]), min(ci[1], bounds[1])


def spans_range(ci: tuple[float, float] | None, bounds: tuple[float, float] | None) -> bool:
    """Whether ``ci`` is the whole of a finite ``bounds``: the data are too few to say anything."""
    return (ci is not None and bounds is not None and math.isfinite(bounds[0]) and math.isfinite(bounds[1])
            and ci[0] <= bounds[0] and ci[1] >= bounds[1])


def _t_quantile(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_ci(values, bounds: tuple[float, float] | None = None) -> tuple[float, tuple[float, float] | None]:
    """``(mean, (low, high))`` of 1-D ``values`` with the 95% Student-t interval, intersected with
    ``bounds`` when the metric has a range (`within`); the interval is None for fewer than 2 values.
    NaNs are dropped.

    Raises:
        ValueError: no (non-NaN) value.
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    mean = float(x.mean())
    if x.size < 2:
        return mean, None
    half = _t_quantile(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, within((mean - half, mean + half), bounds)


def difference_ci(x, y, bounds: tuple[float, float] | None = None) -> tuple[float, tuple[float, float] | None]:
    """``(mean(x) - mean(y), (low, high))``: Welch's 95% interval for the difference of two means
    from independent samples; None when either side has fewer than 2 values. When both sides have
    zero variance the interval is the point (the data show no spread to be uncertain about).
    ``bounds``: the range of the samples' metric; the interval is intersected with the range of a
    difference of two such values (`difference_range`, `within`).

    Raises:
        ValueError: a side has no value.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError("difference_ci: both sides need values")
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, None
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    # equal values stored as x100 fractions differ in their last bits (40.000000000000004): that is no spread
    if se <= 1e-9 * max(1.0, float(np.abs(x).max()), float(np.abs(y).max())):
        return diff, (diff, diff)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))  # Welch-Satterthwaite
    half = _t_quantile(df) * se
    return diff, within((diff - half, diff + half), difference_range(bounds))


@dataclass(frozen=True)
class Comparison:
    """``label`` vs ``baseline``: the difference of their means, its 95% CI, over what (``unit``: "seeds"
    or "episodes"), and the verdict: "higher", "lower", "not distinguishable", "no CI" (too few
    samples) or "no spread" (every sample of both arms is the same value, so the interval is a point:
    the samples show no variation to bound, which is not certainty; no conclusion is drawn)."""

    label: str
    baseline: str
    difference: float
    ci: tuple[float, float] | None
    n: int
    n_baseline: int
    unit: str

    @property
    def verdict(self) -> str:
        if self.ci is None:
            return "no CI"
        if self.ci[0] == self.ci[1]:
            return "no spread"
        if self.ci[0] > 0:
            return "higher"
        if self.ci[1] < 0:
            return "lower"
        return "not distinguishable"

    def sentence(self) -> str:
        """E.g. "lamo and dt are not distinguishable here: difference +5.0, 95% CI [-20.0, +30.0] (3 vs 3 seeds)."."""
        sizes = f"({self.n} vs {self.n_baseline} {self.unit})"
        if self.ci is None:
            return (f"{self.label} vs {self.baseline}: difference {self.difference:+.1f} from {sizes}: too few to "
                    "give a confidence interval, so no conclusion.")
        if self.verdict == "no spread":
            return (f"{self.label} vs {self.baseline}: difference {self.difference:+.1f} {sizes}, but every one of "
                    f"them gave the same value, so there is no spread to build a confidence interval on: no "
                    "conclusion.")
        ci = f"difference {self.difference:+.1f}, 95% CI [{self.ci[0]:+.1f}, {self.ci[1]:+.1f}] {sizes}"
        if self.verdict == "not distinguishable":
            text = f"{self.label} and {self.baseline} are not distinguishable here: {ci}."
        else:
            text = f"{self.label} scores {self.verdict} than {self.baseline} here: {ci}."
        if self.unit == "episodes":
            text += (" One training seed per arm: this interval covers evaluation noise only, not the variation "
                     "between training runs, so it is not evidence about the methods.")
        return text


def compare(label: str, baseline: str, x, y, unit: str = "seeds",
            bounds: tuple[float, float] | None = None) -> Comparison:
    """`Comparison` of samples ``x`` (of ``label``) and ``y`` (of ``baseline``) by `difference_ci`;
    ``bounds``: the range of the samples' metric, when it has one."""
    diff, ci = difference_ci(x, y, bounds)
    return Comparison(label, baseline, diff, ci, int(np.size(x)), int(np.size(y)), unit)
