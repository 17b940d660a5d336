"""The report's figures (`lamo_ray.report`), each a matplotlib `Figure` saved as a PNG and returned as a
`Drawn` (its path and the series it plotted, so an empty figure or a band outside a metric's range is
caught by tests instead of by a reader): final score vs sample ratio, offline learning curves, online
fine-tuning curves with the critic beside them, per-task success over a continual sequence with its
stage boundaries, ASHA's steps per trial, and the continual trials' success matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lamo_ray.intervals import SUCCESS_RANGE, mean_ci
from lamo_ray.report.continual import ContinualArm
from lamo_ray.report.load import (COMPLETED, CRITIC_METRICS, FAILED, FINAL_WINDOW, RUNNING, STOPPED, UNFINISHED,
                                  TrialResult, _steps_run)
from lamo_ray.report.stats import ArmStats, AshaSummary


@dataclass(frozen=True)
class Series:
    """One plotted series: its panel's title, its legend label (or "band"), its number of points and
    its y extent (NaN points left out; ``(nan, nan)`` when it has none)."""

    panel: str
    label: str
    points: int
    y_range: tuple[float, float]


@dataclass(frozen=True)
class Drawn:
    """A saved figure: ``path`` of its PNG and the `Series` drawn on it."""

    path: Path
    series: list[Series] = field(default_factory=list)


def _save(fig: Figure, path: Path) -> Drawn:
    """Save ``fig`` as a PNG and list its labelled lines and its CI bands (`Series`); matplotlib's own
    unlabelled artists (grid, reference lines such as stage boundaries) are not series."""
    fig.savefig(path, dpi=110)
    series = []
    for ax in fig.axes:
        panel = ax.get_title() or ax.get_ylabel()
        for line in ax.get_lines():
            if line.get_label().startswith("_") or line.get_gid() == "marker":   # unlabelled, markers, legend entries
                continue
            y = np.asarray(line.get_ydata(), dtype=float)
            y = y[~np.isnan(y)]
            series.append(Series(panel, line.get_label(), int(y.size),
                                 (float(y.min()), float(y.max())) if y.size else (math.nan, math.nan)))
        for band in ax.collections:
            if band.get_gid() != "band":
                continue
            y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()] or [np.empty(0)])
            y = y[np.isfinite(y)]
            series.append(Series(panel, "band", int(y.size),
                                 (float(y.min()), float(y.max())) if y.size else (math.nan, math.nan)))
    return Drawn(path, series)


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


def plot_score_vs_ratio(stats: list[ArmStats], path: Path, colors: dict[str, Any]) -> Drawn:
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
                    ms=7, mew=1.5, gid="marker")
            ax.annotate(f"n={s.n}" if s.complete else s.seeds_text, (s.sample_ratio, s.mean),
                        textcoords="offset points", xytext=(5, 5), fontsize=7, color=colors[label])
        with_ci = [s for s in arm if s.mean_ci is not None]
        if len(with_ci) > 1:
            ax.fill_between([s.sample_ratio for s in with_ci], [s.mean_ci[0] for s in with_ci],
                            [s.mean_ci[1] for s in with_ci], color=colors[label], alpha=0.2, lw=0, gid="band")
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
    ax.set_title("Final score vs sample ratio: mean over seeds, 95% CI", fontsize=10)
    return _save(fig, path)


def plot_learning_curves(trials: list[TrialResult], path: Path, colors: dict[str, Any]) -> Drawn:
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
                    ax.fill_between(grid, band[0], band[1], color=colors[label], alpha=0.2, lw=0, gid="band")
            for t in (t for t in runs if t.outcome == STOPPED):
                s, v = zip(*t.curve)
                ax.plot(s, v, "--", color=colors[label], lw=1, alpha=0.7)
                ax.plot(s[-1], v[-1], "x", color=colors[label], ms=7, mew=2)
        if any(t.outcome == STOPPED for t in here):
            ax.plot([], [], "--x", color="0.3", label="stopped by ASHA", gid="marker")   # a legend entry only
        ax.legend(fontsize=7, loc="best")
        ax.set_title(f"sample ratio {ratio:g}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_xlim(0, steps)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("normalized score (best target, x100)")
    fig.suptitle("Learning curves: mean over seeds\nband = 95% CI (over seeds; over episodes for one seed)",
                 fontsize=10)
    return _save(fig, path)


def _by_transitions(t: TrialResult, by_step: dict[int, float]) -> dict[float, float]:
    """An online trial's ``{step: value}`` as ``{online transitions collected by then: value}``; the
    evaluation at the end of the offline steps at 0."""
    out = {}
    for step, value in by_step.items():
        x = 0.0 if step <= (t.offline_steps or 0) else t.transitions.get(step)
        if x is not None:
            out[float(x)] = value
    return out


def _mean_over_runs(per_run: list[dict[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, values)`` over the runs' union of x (values: (runs, len(x)), NaN where a run has none)."""
    grid = sorted({x for run in per_run for x in run})
    values = np.full((len(per_run), len(grid)), np.nan)
    for i, run in enumerate(per_run):
        for x, v in run.items():
            values[i, grid.index(x)] = v
    with np.errstate(all="ignore"):
        mean = np.nanmean(values, axis=0) if grid else np.empty(0)
    return np.array(grid, dtype=float), mean, values


def plot_online_curves(trials: list[TrialResult], path: Path, colors: dict[str, Any]) -> Drawn | None:
    """For trials with an online phase: ``normalized_score`` over online transitions collected (0 = the
    evaluation at the end of the offline steps, marked), per variant the mean over its seeds with its
    95% CI band (Student-t over seeds; over episodes for one seed), as the ODT-TD3 paper plots score vs
    environment steps; beside it, for arms with a TD3 critic, the critic's loss and its Q estimate per
    online iteration (`lamo_ray.online.learner`, mean over seeds). None when no trial has an online phase."""
    online = [t for t in trials if t.offline_steps is not None and t.curve
              and t.outcome in (COMPLETED, RUNNING, UNFINISHED)]
    if not online:
        return None
    critic_keys = [k for k in CRITIC_METRICS if any(t.critic.get(k) for t in online)]
    fig = Figure(figsize=(6.0 + 4.2 * len(critic_keys), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 1 + len(critic_keys), squeeze=False)[0])
    ax = axes[0]
    ax.axvline(0.0, color="0.5", ls=":", lw=1)
    offline = sorted({t.offline_steps for t in online})
    ax.text(0.0, 1.0, f" end of offline phase ({', '.join(map(str, offline))} steps)", transform=ax.get_xaxis_transform(),
            fontsize=7, va="top", ha="left", color="0.4")
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
        if x.size and x[0] == 0.0:
            ax.plot([0.0], [mean[0]], "s", ms=8, mfc="none", color=colors[label], gid="marker")
        band = _curve_band(runs, grid, values)
        if band is not None:
            ax.fill_between(x, band[0], band[1], color=colors[label], alpha=0.2, lw=0, gid="band")
    ax.plot([], [], "s", ms=8, mfc="none", color="0.3", label="after the offline phase", gid="marker")
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("online transitions collected")
    ax.set_ylabel("normalized score (best target, x100)")
    ax.set_title("score", fontsize=9)
    ax.grid(alpha=0.3)
    for ax, key in zip(axes[1:], critic_keys):
        for label in colors:
            runs = [t for t in online if t.label == label and t.critic.get(key)]
            if runs:
                x, mean, _ = _mean_over_runs([_by_transitions(t, t.critic[key]) for t in runs])
                ax.plot(x, mean, "-", color=colors[label], lw=1.5, label=f"{label} (n={len(runs)})")
        ax.set_xlabel("online transitions collected")
        ax.set_ylabel({"online/critic_loss": "critic loss (TD, both Q heads)", "online/q1_mean": "Q1 mean"}.get(key, key))
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle("Online fine-tuning: mean over seeds\nband = 95% CI (over seeds; over episodes for one seed)",
                 fontsize=10)
    return _save(fig, path)


def plot_continual_curves(trials: list[TrialResult], path: Path) -> Drawn | None:
    """Per continual arm (label, sample ratio), one panel: the success rate (x100) of each evaluated task
    over the whole sequence, mean over the arm's completed and running seeds with its 95% Student-t band
    within [0, 100]; the stages as background spans coloured by the task being trained and named at the
    top, multi-task pre-training in grey (Continual World's Fig. 1 layout). None without continual trials
    that logged per-task success."""
    shown = [t for t in trials if t.continual and t.task_curves and t.outcome in (COMPLETED, RUNNING, UNFINISHED)]
    if not shown:
        return None
    arms = sorted({(t.label, t.sample_ratio) for t in shown})
    tasks = list(dict.fromkeys(task for t in shown for task in t.task_curves))
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(tasks) <= 10 else "tab20"]
    task_color = {task: cmap(i % cmap.N) for i, task in enumerate(tasks)}
    several_ratios = len({r for _, r in arms}) > 1
    fig = Figure(figsize=(10.0, 2.9 * len(arms) + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(arms), 1, sharex=True, squeeze=False)[:, 0])
    for ax, (label, ratio) in zip(axes, arms):
        runs = [t for t in shown if t.label == label and t.sample_ratio == ratio]
        starts = runs[0].stage_starts
        end = max(t.steps for t in runs)
        if starts:
            ax.axvspan(0, starts[0][0], color="0.9", lw=0)
            ax.text(starts[0][0] / 2, 1.0, "pre-training", transform=ax.get_xaxis_transform(), fontsize=7,
                    ha="center", va="bottom", color="0.4")
        for i, (first, task) in enumerate(starts):
            last = starts[i + 1][0] if i + 1 < len(starts) else end
            ax.axvspan(first, last, color=task_color.get(task, "0.8"), alpha=0.12, lw=0)
            ax.axvline(first, color="0.5", ls=":", lw=0.8)
            ax.text((first + last) / 2, 1.0, f"{i + 1}:{task}", transform=ax.get_xaxis_transform(), fontsize=7,
                    ha="center", va="bottom", color=task_color.get(task, "0.3"))
        for task in tasks:
            curves = [dict(t.task_curves[task]) for t in runs if task in t.task_curves]
            if not curves:
                continue
            x, mean, values = _mean_over_runs([{float(s): 100.0 * v for s, v in c.items()} for c in curves])
            ax.plot(x, mean, "-o", ms=2.5, lw=1.6, color=task_color[task], label=task)
            if len(curves) >= 2:
                band = [mean_ci(col, SUCCESS_RANGE)[1] if np.sum(~np.isnan(col)) >= 2 else None
                        for col in values.T]
                low = np.array([b[0] if b else np.nan for b in band])
                high = np.array([b[1] if b else np.nan for b in band])
                if not np.isnan(low).all():
                    ax.fill_between(x, low, high, color=task_color[task], alpha=0.15, lw=0, gid="band")
        ax.set_ylim(-3, 103)
        ax.set_xlim(0, end)
        ax.set_ylabel("success rate (x100)")
        ax.set_title(f"{label}" + (f" (sample ratio {ratio:g})" if several_ratios else "") + f", n={len(runs)}",
                     fontsize=9, pad=14)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="evaluated task",
                  title_fontsize=7)
    axes[-1].set_xlabel("training step (pre-training, then one stage per task)")
    fig.suptitle("Success per task over the sequence: mean over seeds, band = 95% CI within [0, 100]; background: "
                 "the task being trained", fontsize=10)
    return _save(fig, path)


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


def plot_asha(trials: list[TrialResult], asha: AshaSummary, path: Path) -> Drawn:
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
    return _save(fig, path)


def plot_success_matrices(arms: list[ContinualArm], path: Path) -> Drawn:
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
    return _save(fig, path)
