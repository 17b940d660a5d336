"""`MLflowTrialFinalizer`: the outcome it records agrees with what the trial's workers logged, also when
a Train worker got past the scheduler's decision before the stop reached it (asynchronous reports).
MLflow as a user meets it (issue 31): the experiment opens on its runs (experiment kind), trial runs
are named by what sets them apart, the sweep's parent run describes the sweep."""

import sys

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from lamo_ray.config import SweepConfig, expand_trials
from lamo_ray.naming import trial_run_name
from lamo_ray.tracking import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG, OUTCOME_TAG, MLflowTrialFinalizer,
                               RunLogger, get_or_create_experiment, start_sweep_run, start_trial_run, trial_outcomes)

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
    assert run.info.status == "FAILED" and run.info.run_name == "dt · lr=0.001 · seed 0"
    assert run.data.tags["trial_name"] == "run_trial_t7"  # Tune's name stays findable
    assert run.data.params["train.lr"] == "0.001" and run.data.params["variant"] == "dt"
    assert "NodeDiedError" in run.data.tags["lamo_ray.error"]

    # the same trial erroring again (Tune retry) reuses its run
    MLflowTrialFinalizer(uri, experiment_id=exp_id, parent_run_id=parent, sweep=sweep).on_trial_error(0, [], trial)
    assert len(trial_outcomes(uri, exp_id, parent)) == 1


# --------------------------------------------------------------------------- MLflow as a user meets it


def test_experiments_are_marked_as_model_training(tmp_path):
    """MLflow 3.17's UI opens an experiment without ``mlflow.experimentKind`` on an empty GenAI traces
    overview; ours are tagged as the UI tags a model-training experiment, old ones too, a user's kind stays."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    new = get_or_create_experiment(uri, "new")
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert get_or_create_experiment(uri, "new") == new

    old = client.create_experiment("old")  # made before this tag existed
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert get_or_create_experiment(uri, "old") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert get_or_create_experiment(uri, "chosen") == chosen
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


@pytest.mark.parametrize("variant, params, seed, stage, name", [
    ("lamo", {"task": "hopper-medium", "data.sample_ratio": 0.1}, 2, "main",
     "lamo · hopper-medium · sample_ratio=0.1 · seed 2"),
    ("l2m", {}, 0, "main", "l2m · seed 0"),
    # floats to 4 significant digits, keys in key-path order, ints and strings as they are
    ("dt", {"train.lr": 0.000123456789, "model.n_layer": 3, "data.source": "lamo/reacher/mixed-v0"}, 1, "main",
     "dt · source=lamo/reacher/mixed-v0 · n_layer=3 · lr=0.0001235 · seed 1"),
    # two swept keys with the same last component keep their whole paths
    ("dt", {"train.lr": 1e-3, "language.lr": 1e-4}, 0, "main", "dt · language.lr=0.0001 · train.lr=0.001 · seed 0"),
    ("lamo", {"task": "kitchen-partial", "train.lr": 3e-4}, 5, "confirm",
     "lamo · kitchen-partial · lr=0.0003 · seed 5 · confirm"),
    ("lamo", {"train.lr": 3e-4}, 0, "search", "lamo · lr=0.0003 · seed 0 · search"),
])
def test_trial_run_names_say_what_sets_the_trial_apart(variant, params, seed, stage, name):
    assert trial_run_name(variant, params, seed, stage) == name


def test_the_sweep_names_its_trial_runs_by_their_values(tmp_path, monkeypatch):
    """`lamo_ray.tune_runtime.run_trial` (the call site every trial goes through) names the run with
    `trial_run_name` and keeps Tune's trial name as a tag; no Ray, no training (both faked)."""
    from types import ModuleType

    import ray.tune

    from lamo_ray.tune_runtime import run_trial

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = SweepConfig.model_validate({**SWEEP, "base": {**SWEEP["base"], "train": {"lr": {"grid": [1e-4, 1e-3]}}}})
    exp_id, parent = start_sweep_run(uri, "fin", "fin", sweep)
    context = SimpleNamespace(get_trial_id=lambda: "t3", get_trial_name=lambda: "run_trial_9c945_00003",
                              get_trial_dir=lambda: str(tmp_path / "trial"))
    monkeypatch.setattr(ray.tune, "get_context", lambda: context)
    trained = []
    fake_train = ModuleType("lamo_ray.train")
    fake_train.TuneTrialSession = lambda *args: None
    fake_train.train_loop_per_worker = lambda loop_config, session: trained.append(loop_config["mlflow_run_id"])
    monkeypatch.setitem(sys.modules, "lamo_ray.train", fake_train)
    tracking = {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "run_name": "fin",
                "train_storage": str(tmp_path / "fin_train"), "outbox": str(tmp_path / "outbox")}
    run_trial({"variant": "dt", "seed": 0, "stage": "search", "train.lr": 1e-4}, sweep, tracking)
    [run] = MlflowClient(uri).search_runs([exp_id], filter_string="tags.`lamo_ray.role` = 'trial'")
    assert trained == [run.info.run_id]
    assert run.info.run_name == "dt · lr=0.0001 · seed 0 · search"
    assert run.data.tags["trial_name"] == "run_trial_9c945_00003"


def test_the_sweep_run_describes_the_sweep(tmp_path):
    """The parent run's MLflow description (``mlflow.note.content``, Markdown on its page) names the
    variants and the baseline, the swept values, seeds, scheduler, trial count and where the report goes."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = SweepConfig.model_validate({
        "name": "desc", "seeds": [0, 1],
        "base": {"data": {"source": "lamo/reacher/mixed-v0", "sample_ratio": {"grid": [0.01, 0.1]}},
                 "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1},
                 "train": {"steps": 400, "eval_every": 100, "lr": {"loguniform": [1e-5, 1e-3]}}},
        "variants": {"lamo": {"model": {"finetune": "lora"}}, "dt": {"model": {"finetune": "full"}}},
        "scheduler": {"type": "asha", "grace_period": 100, "reduction_factor": 2},
        "report_baseline": "dt"})
    _, parent = start_sweep_run(uri, "desc", "desc", sweep)
    note = MlflowClient(uri).get_run(parent).data.tags[NOTE_TAG]
    for text in ("**lamo**: `model.finetune=lora`", "**dt** (baseline)", "baseline **dt**",
                 "`data.sample_ratio`: 0.01, 0.1", "`train.lr`: loguniform(1e-05, 0.001)", "seeds: 0, 1",
                 "ASHA on `normalized_score` (max); it may stop a trial at step 100, 200", "trials: 8",
                 "`report/report.html`"):
        assert text in note, (text, note)

    # tasks, a FIFO scheduler, a confirmation stage and a baseline that is not among the variants
    confirm = SweepConfig.model_validate({
        **SWEEP, "name": "desc2", "seeds": [0], "report_baseline": "dt",
        "base": {**SWEEP["base"], "task": {"grid": ["near", "far"]}, "train": {"lr": {"grid": [1e-4, 1e-3]}}},
        "tasks": {"near": {"eval": {"target_returns": [1]}}, "far": {"eval": {"target_returns": [2]}}},
        "variants": {"lamo": {"model": {"finetune": "lora"}}},
        "scheduler": {"type": "fifo"}, "confirm": {"top_k": 1, "seeds": [7, 8]}})
    _, parent = start_sweep_run(uri, "desc2", "desc2", confirm)
    note = MlflowClient(uri).get_run(parent).data.tags[NOTE_TAG]
    for text in ("baseline `dt` (`report_baseline`) is not one of them", "tasks: near, far", "`train.lr`: 0.0001, 0.001",
                 "FIFO, every trial runs to its end", "trials: 4 in the search, then up to 2 confirming the best "
                 "configuration of each variant with seeds 7, 8", "`report/report.html`"):
        assert text in note, (text, note)
    assert "`task`" not in note  # the task is listed as tasks, not as a swept key
