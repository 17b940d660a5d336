"""Continual World's metrics (docs/references/l2m.md "Metrics"; awarelab/continual_world
``results_processing/tables.py``), from the evaluations of one run over a task sequence.

A run trains stage ``i`` on task ``stage_tasks[i]`` only and evaluates every task (seen and unseen)
during and after each stage; each `Evaluation` holds the success rate of every evaluated task at one
point. From them:

- **success matrix** ``S[t, i]``: task ``t``'s success at the end of stage ``i`` (mean of the stage's
  last ``window`` evaluations);
- **average success**: the mean over tasks of the success at the end of the run (Continual World's
  "average performance");
- **forgetting** of task ``i``: its success at the end of its own stage minus at the end of the run;
- **forward transfer** of task ``i``: ``(AUC_i - AUC_i^ref) / (1 - AUC_i^ref)``, where ``AUC_i`` is
  the mean of task ``i``'s success over the evaluations during its own stage and ``AUC_i^ref`` the same
  for a reference run that trained task ``i`` alone (Continual World's normalised FT).

Continual World averages the last 5 evaluations for "at the end" (it evaluates ~20 times per
stage); ``window`` says how many are averaged here (default 1: L2M evaluates twice per stage).
Success rates are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """One evaluation point of a continual run.

    Attributes:
        stage: index of the stage being trained (0-based) when the evaluation ran; an evaluation at
            a stage's end belongs to that stage.
        step: training step (global over the run), for ordering.
        success: ``{task: success rate in [0, 1]}`` of every evaluated task.
    """

    stage: int
    step: int
    success: Mapping[str, float]


def _check(evaluations: Sequence[Evaluation], stage_tasks: Sequence[str], window: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not stage_tasks:
        raise ValueError("stage_tasks is empty: a continual run has at least one stage")
    stages = {e.stage for e in evaluations}
    missing = [i for i in range(len(stage_tasks)) if i not in stages]
    if missing:
        raise ValueError(f"no evaluation in stage(s) {missing} of {len(stage_tasks)} ({list(stage_tasks)})")
    extra = sorted(s for s in stages if not 0 <= s < len(stage_tasks))
    if extra:
        raise ValueError(f"evaluations in stage(s) {extra}, outside the {len(stage_tasks)} stages")


def _stage_end(evaluations: Sequence[Evaluation], stage: int, task: str, window: int) -> float:
    points = sorted((e for e in evaluations if e.stage == stage), key=lambda e: e.step)[-window:]
    values = [e.success[task] for e in points if task in e.success]
    if not values:
        raise ValueError(f"task {task!r} was not evaluated at the end of stage {stage}")
    return float(np.mean(values))


def success_matrix(evaluations: Sequence[Evaluation], stage_tasks: Sequence[str], tasks: Sequence[str] | None = None,
                   window: int = 1) -> np.ndarray:
    """``(len(tasks), len(stage_tasks))`` float: ``S[t, i]`` = success of ``tasks[t]`` at the end of stage
    ``i`` (default ``tasks``: the stage tasks, in order).

    Raises:
        ValueError: a stage without evaluations, a task not evaluated at a stage's end, ``window`` < 1.
    """
    _check(evaluations, stage_tasks, window)
    tasks = list(stage_tasks) if tasks is None else list(tasks)
    return np.array([[_stage_end(evaluations, i, t, window) for i in range(len(stage_tasks))] for t in tasks])


def average_success(evaluations: Sequence[Evaluation], stage_tasks: Sequence[str], tasks: Sequence[str] | None = None,
                    window: int = 1) -> float:
    """Mean over ``tasks`` (default the stage tasks) of the success at the end of the last stage."""
    return float(success_matrix(evaluations, stage_tasks, tasks, window)[:, -1].mean())


def forgetting(evaluations: Sequence[Evaluation], stage_tasks: Sequence[str], window: int = 1) -> dict[str, float]:
    """``{task: success at the end of its own stage - success at the end of the run}`` for each stage
    task (the last one's is 0 by construction). A task trained in two stages counts its last one."""
    matrix = success_matrix(evaluations, stage_tasks, window=window)
    last_stage = {task: i for i, task in enumerate(stage_tasks)}
    return {task: float(matrix[list(stage_tasks).index(task), i] - matrix[list(stage_tasks).index(task), -1])
            for task, i in last_stage.items()}


def stage_auc(evaluations: Sequence[Evaluation], stage: int, task: str) -> float:
    """Mean success of ``task`` over the evaluations during ``stage`` (Continual World's AUC of the
    task's own training curve).

    Raises:
        ValueError: ``task`` was never evaluated in ``stage``.
    """
    values = [e.success[task] for e in evaluations if e.stage == stage and task in e.success]
    if not values:
        raise ValueError(f"task {task!r} was not evaluated during stage {stage}")
    return float(np.mean(values))


def normalized_transfer(auc: float, reference: float) -> float:
    """Continual World's forward transfer of one task, ``(AUC - AUC_ref) / (1 - AUC_ref)``; NaN when
    ``reference`` is 1 (nothing left to transfer)."""
    return float("nan") if reference == 1.0 else (auc - reference) / (1.0 - reference)


def forward_transfer(evaluations: Sequence[Evaluation], stage_tasks: Sequence[str],
                     reference_auc: Mapping[str, float]) -> dict[str, float]:
    """``{task: (AUC - AUC_ref) / (1 - AUC_ref)}`` for each stage task, ``AUC`` from its own stage
    (`stage_auc`) and ``reference_auc[task]`` from a run that trained the task alone over the same
    number of steps (`stage_auc` of that run's only stage). A reference AUC of 1 leaves nothing to
    transfer: its FT is NaN (Continual World divides by zero there).

    Raises:
        ValueError: a stage task without a reference AUC, or a reference outside [0, 1].
    """
    missing = [t for t in stage_tasks if t not in reference_auc]
    if missing:
        raise ValueError(f"forward transfer needs a single-task reference run for {missing}")
    out = {}
    for i, task in enumerate(stage_tasks):
        ref = float(reference_auc[task])
        if not 0.0 <= ref <= 1.0:
            raise ValueError(f"reference AUC of {task!r} must be a success rate in [0, 1], got {ref}")
        out[task] = normalized_transfer(stage_auc(evaluations, i, task), ref)
    return out
