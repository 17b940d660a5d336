"""A rehearsal's limit per shape (``--rehearse-timeout``, issue 32): `lamo_ray.time_limit.TrialTimeLimit`
stops a trial that runs past its wall-clock limit even when it never reports (before, Tune's
``time_total_s`` stop was checked only at results, so a hung shape held the rehearsal forever), and
`lamo_ray.rehearsal_run._run_shapes` runs the shapes that had not started yet in a next experiment."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lamo_ray.time_limit import TrialTimeLimit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def trial(trial_id, variant):
    return SimpleNamespace(trial_id=trial_id, config={"point": {"variant": variant, "params": {}}})


def test_the_limit_counts_wall_time_from_a_trials_first_start_reports_or_not():
    clock = Clock()
    limit = TrialTimeLimit(100, clock=clock)
    a, b = trial("a", "quick"), trial("b", "hangs")
    limit.on_trial_start(0, [a], a)
    clock.now = 60
    limit.on_trial_complete(1, [a], a)          # a ended in time
    limit.on_trial_start(1, [a, b], b)
    clock.now = 150                             # a's 150 s would be past the limit, but a has ended
    assert not limit.stop_all()
    limit.on_trial_start(2, [a, b], b)          # a restart from its checkpoint keeps b's first start (60)
    clock.now = 160.5
    assert limit.stop_all() and set(limit.timed_out) == {"b"}
    config, seconds = limit.timed_out["b"]
    assert config["point"]["variant"] == "hangs" and seconds == pytest.approx(100.5)
    assert set(limit.started) == {"a", "b"}
    with pytest.raises(ValueError, match="positive"):
        TrialTimeLimit(0)


@pytest.mark.slow
def test_a_shape_that_hangs_silently_is_stopped_and_the_shapes_after_it_still_run(tmp_path):
    """Real Tune (one trial at a time, as a rehearsal runs its shapes): 'hangs' sleeps without ever
    reporting; the limit stops it, 'fails' keeps its own error, and 'after', queued behind the hung
    shape, runs in the next experiment."""
    import ray
    from ray import tune

    from lamo_ray.rehearsal_run import _run_shapes

    ran = tmp_path / "ran"
    ran.mkdir()

    def trainable(config):
        variant = config["point"]["variant"]
        (Path(str(ran)) / variant).touch()
        if variant == "hangs":
            time.sleep(3600)
        if variant == "fails":
            raise RuntimeError("deliberately broken stage")
        tune.report({"done": 1})

    def run_stage(space, name, limit):
        return tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(max_concurrent_trials=1),
                          run_config=tune.RunConfig(name=name, storage_path=str(tmp_path / "tune"), stop=limit,
                                                    callbacks=[limit], verbose=0)).fit()

    shapes = [SimpleNamespace(variant=v, params={}, rows=[{"seed": 0}]) for v in ("before", "hangs", "fails", "after")]
    said = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.monotonic()
        errors = _run_shapes(shapes, run_stage, "rehearsal", 8.0, said.append)
        took = time.monotonic() - t0
    finally:
        ray.shutdown()
    assert sorted(p.name for p in ran.iterdir()) == ["after", "before", "fails", "hangs"]
    assert set(errors) == {("hangs", "{}"), ("fails", "{}")}
    assert errors[("hangs", "{}")].startswith("TimeoutError: still running after ")
    assert "past the limit of 8 s per shape (--rehearse-timeout)" in errors[("hangs", "{}")]
    assert "deliberately broken stage" in errors[("fails", "{}")]
    assert any("the 2 shape(s) not started yet run next" in s for s in said), said
    assert took < 600      # not the hung trial's hour
