"""A wall-clock limit per trial for a Tune experiment, also for a trial that never reports (a rehearsal's
``--rehearse-timeout``, `lamo_ray.rehearsal_run`).

Tune checks a stop condition such as ``{"time_total_s": ...}`` only when a trial reports a result, so a
trial hung in a stage (a collective waiting for a dead rank, an env that never returns, a deadlock)
was never stopped. Tune's controller asks its `ray.tune.Stopper` ``stop_all()`` on every step of its
loop, results or not (ray 2.60 ``tune/execution/tune_controller.py``, ``step`` ->
``_stop_experiment_if_needed``): `TrialTimeLimit` is that stopper and, as a `ray.tune.Callback`, learns
when each trial first started. Once a trial has run past the limit, the whole experiment stops (a
stopper cannot stop one trial without a result) and `TrialTimeLimit.timed_out` says which trial it was;
the caller runs the trials that had not started yet in a new experiment. A stopped actor whose trial
does not end within Tune's grace period (10 s at an experiment's end) is killed by Tune.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ray import tune


class TrialTimeLimit(tune.Stopper, tune.Callback):
    """Stop the experiment once a running trial has spent ``limit_s`` seconds of wall time since its
    first start (restarts from a checkpoint included), whether it reports or not.

    Pass the same object as ``RunConfig(stop=..., callbacks=[...])``. After ``fit()``:
    `started` holds the config of every trial that started, `timed_out` {trial id: (config, seconds
    it had run)} the trial(s) stopped by the limit.

    Raises:
        ValueError: ``limit_s`` is not positive.
    """

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic):
        if not limit_s > 0:
            raise ValueError(f"a trial time limit must be positive seconds, got {limit_s!r}")
        self.limit_s = float(limit_s)
        self._clock = clock
        self._first_start: dict[str, float] = {}
        self._ended: set[str] = set()
        self.started: dict[str, dict[str, Any]] = {}
        self.timed_out: dict[str, tuple[dict[str, Any], float]] = {}

    # ----------------------------------------------------------------- Callback: when trials run
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._first_start.setdefault(trial.trial_id, self._clock())
        self.started.setdefault(trial.trial_id, dict(trial.config))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended.add(trial.trial_id)

    # ----------------------------------------------------------------- Stopper
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False   # the limit is wall time, checked in stop_all whether the trial reports or not

    def stop_all(self) -> bool:
        now = self._clock()
        for trial_id, start in self._first_start.items():
            if trial_id not in self._ended and trial_id not in self.timed_out and now - start > self.limit_s:
                self.timed_out[trial_id] = (self.started[trial_id], now - start)
        return bool(self.timed_out)


__all__ = ["TrialTimeLimit"]
