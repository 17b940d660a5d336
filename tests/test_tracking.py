"""`MLflowTrialFinalizer`: the outcome it records agrees with what the trial's workers logged, also when
a Train worker got past the scheduler's decision before the stop reached it (asynchronous reports)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from lamo_ray.config import SweepConfig, expand_trials
from lamo_ray.tracking import (OUTCOME_TAG, MLflowTrialFinalizer, RunLogger, start_sweep_run, start_trial_run,
                               trial_outcomes)

SWEEP = {"name": "fin", "seeds": [0],
         "base": {"data": {"source": "lamo/reacher/mixed-v0"},
                  "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1}},
         "variants": {"dt": {"model": {"finetune": "full"}}}}


def _run_with_evals(tmp_path, eval_steps: list[int]) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = SweepConfig.model_validate(SWEEP)
    row = expand_trials(cfg)[0]
    exp_id, parent = start_sweep_run(uri, "fin", "fin", cfg)
    run_id = start_trial_run(uri, exp_id, parent, "run_trial_0", "dt", row["config"], trial_id="t0")
    logger = RunLogger(uri, run_id)
    for step in eval_steps:
        logger.log_metrics({"normalized_score": float(step)}, step=step)
    return uri, run_id


def _complete(uri: str, run_id: str, tmp_path, tune_step: int, steps_total: int):
    ckpt = tmp_path / "train" / f"checkpoint_{tune_step:07d}"
    ckpt.mkdir(parents=True)
    (ckpt / "policy.json").write_text(f'{{"step": {tune_step}}}')
    trial = SimpleNamespace(trial_id="t0", last_result={"mlflow_run_id": run_id, "step": tune_step,
                                                        "steps_total": steps_total, CHECKPOINT_PATH_KEY: str(ckpt)})
    MLflowTrialFinalizer(uri).on_trial_complete(0, [], trial)
    return MlflowClient(uri).get_run(run_id)


@pytest.mark.parametrize("evals, tune_step, steps_total, outcome, stopped_at", [
    ([10, 20], 20, 20, "completed", None),               # Tune saw the last result
    ([10], 10, 20, "stopped_by_scheduler", 10),           # stopped at the rung, nothing logged after it
    ([10, 20], 10, 40, "stopped_by_scheduler", 20),       # the worker evaluated once more before the stop
    ([10, 20], 10, 20, "completed", None),                # ... and that was its last step: it finished
])
def test_outcome_counts_what_the_workers_logged(tmp_path, evals, tune_step, steps_total, outcome, stopped_at):
    uri, run_id = _run_with_evals(tmp_path, evals)
    run = _complete(uri, run_id, tmp_path, tune_step, steps_total)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags[OUTCOME_TAG] == outcome
    assert tags.get("lamo_ray.stopped_at_step") == (None if stopped_at is None else str(stopped_at))
    # the artifact is the checkpoint Tune received, and the tag says which step that is
    assert tags["lamo_ray.checkpoint_step"] == str(tune_step)
    local = MlflowClient(uri).download_artifacts(run_id, "checkpoint/policy.json", str(tmp_path / "dl"))
    assert yaml.safe_load(Path(local).read_text())["step"] == tune_step


class _Trial(SimpleNamespace):
    def __str__(self):  # Tune's trial name
        return f"run_trial_{self.trial_id}"


def test_a_trial_that_failed_before_its_run_existed_gets_a_failed_run(tmp_path):
    """Seen in the node-loss test: Tune starts a trial on a node as it dies, the trial errors before
    `run_trial` creates its MLflow run; the sweep's outcome table (read from MLflow) must still list it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = SweepConfig.model_validate({**SWEEP, "base": {**SWEEP["base"], "train": {"lr": {"grid": [1e-4, 1e-3]}}}})
    exp_id, parent = start_sweep_run(uri, "fin", "fin", sweep)
    error = tmp_path / "error.txt"
    error.write_text("ray.exceptions.NodeDiedError: the node running this trial died")
    trial = _Trial(trial_id="t7", last_result={}, error_file=str(error),
                   config={"variant": "dt", "seed": 0, "train.lr": 1e-3})

    # without the sweep's ids (a finalizer from an older sweep's tuner.pkl) nothing is created, nothing raised
    MLflowTrialFinalizer(uri).on_trial_error(0, [], trial)
    assert trial_outcomes(uri, exp_id, parent) == []

    MLflowTrialFinalizer(uri, experiment_id=exp_id, parent_run_id=parent, sweep=sweep).on_trial_error(0, [], trial)
    [row] = trial_outcomes(uri, exp_id, parent)
    assert row["trial"] == "t7" and row["variant"] == "dt" and row["seed"] == 0 and row["outcome"] == "failed"
    run = MlflowClient(uri).get_run(row["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.info.run_name == "run_trial_t7"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["variant"] == "dt"
    assert "NodeDiedError" in run.data.tags["lamo_ray.error"]

    # the same trial erroring again (Tune retry) reuses its run
    MLflowTrialFinalizer(uri, experiment_id=exp_id, parent_run_id=parent, sweep=sweep).on_trial_error(0, [], trial)
    assert len(trial_outcomes(uri, exp_id, parent)) == 1
