"""One short sweep end to end, as a user runs it: `python -m lamo_ray.sweep` in a subprocess
(Ray Tune + ASHA -> Ray Train with DDP -> rollout actors -> MLflow), then the MLflow store is
inspected and a logged checkpoint is re-evaluated with `python -m lamo_ray.evaluate`. A second sweep of
the same trials, arranged otherwise, starts at the same moment beside it: both must run, and the trials'
metrics must not depend on which sweep ran them."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow_runs import trial_histories

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "e2e",
    "seeds": [0],
    "base": {
        "data": {"source": "test/reacher/tiny-v0", "sample_ratio": 1.0, "rtg_scale": 10,
                 "context_length": 3, "max_ep_len": 64},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1},
        "train": {"steps": 20, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, "eval_every": 10,
                  "log_every": 5, "cpus_per_worker": 0.49},
        "eval": {"target_returns": [-4.0, -8.0], "episodes": 2, "num_actors": 1, "envs_per_actor": 2},
    },
    "scheduler": {"type": "asha", "grace_period": 10, "reduction_factor": 2},
    "variants": {
        "lamo": {"model": {"finetune": "lora", "embedding": "mlp"}},
        "dt_ddp": {"model": {"finetune": "full", "embedding": "linear"},
                   "train": {"num_workers": 2, "cpus_per_worker": 0.245},
                   # a rollout actor that reserves CPUs, started by a Ray Train worker: before, it waited
                   # forever in the worker group's full placement group (the sweep hung)
                   "eval": {"actor_cpus": 0.2}},
    },
}


#: the second sweep (issue 30): the same two trials (lamo; dt_ddp, 2 DDP workers) with a companion variant
#: (dt) started before them, one trial at a time (so lamo runs in the Tune process dt ended in), FIFO
#: instead of ASHA, and the evaluation episodes spread over 2 rollout actors of 1 env instead of 1 of 2
AGAIN = copy.deepcopy(SWEEP)
AGAIN.update(name="e2e_again", scheduler={"type": "fifo"}, max_concurrent_trials=1)
AGAIN["base"]["eval"].update(num_actors=2, envs_per_actor=1)
AGAIN["variants"] = {"dt": {"model": {"finetune": "full", "embedding": "linear"}}, **SWEEP["variants"]}


def _start(tmp: Path, env: dict, sweep: dict, name: str) -> tuple[subprocess.Popen, Path]:
    """``python -m lamo_ray.sweep`` of ``sweep`` in the background, tracking into ``<name>.db``, its output
    into files (two sweeps' pipes read one after the other could fill and block)."""
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    out = tmp / f"{name}.out"
    proc = subprocess.Popen([sys.executable, "-m", "lamo_ray.sweep", str(tmp / f"{name}.yaml"),
                             "--set", f"storage_path={tmp / 'ray'}"], cwd=tmp, text=True,
                            env=dict(env, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/{name}.db"),
                            stdout=open(out, "w"), stderr=open(out.with_suffix(".err"), "w"))
    return proc, out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Both sweeps, started at the same moment on this machine, each with its own local Ray (issue 30:
    before, the second to bind the dashboard's port failed). Returns (tmp, env, {name: finished process})."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0")
    env.pop("RAY_ADDRESS", None)
    collect = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", "test/reacher/tiny-v0",
                              "--episodes", "40", "--ref-episodes", "10"], env=env, cwd=tmp,
                             capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    started = {name: _start(tmp, env, sweep, name) for name, sweep in (("mlflow", SWEEP), ("again", AGAIN))}
    done = {}
    for name, (proc, out) in started.items():
        try:
            proc.wait(timeout=1500)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                                 out.with_suffix(".err").read_text())
    return tmp, dict(env, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db"), done


@pytest.fixture(scope="module")
def sweep_run(sweeps):
    """The first sweep (`SWEEP`): (tmp, its env, its finished process)."""
    tmp, env, done = sweeps
    return tmp, env, done["mlflow"]


def test_sweep_exits_zero_and_prints_summary(sweep_run):
    _, _, proc = sweep_run
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    assert "last score" in proc.stdout and "95% CI (episodes)" in proc.stdout
    assert "What the data support:" in proc.stdout
    # issue 31: no third-party warning the user cannot act on (Ray's auth default, Tune's snapshot rate,
    # gymnasium-robotics' Adroit notice in a sweep without Adroit); the dashboard line says how to log in
    output = proc.stdout + proc.stderr
    for noise in ("Token authentication is enabled", "Experiment state snapshotting", "reward functions were updated"):
        assert noise not in output, noise
    assert "(it asks for the Ray token: `ray get-auth-token` prints it)" in proc.stdout
    # the runs page of the sweep's experiment, past MLflow 3's GenAI overview (issue 31)
    assert "MLflow runs: http://127.0.0.1:5000/#/experiments/" in proc.stdout
    assert "/runs?workflowType=machine_learning (after `mlflow ui --backend-store-uri sqlite:///" in proc.stdout


def test_mlflow_holds_parent_and_one_run_per_trial(sweep_run):
    tmp, _, proc = sweep_run
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("e2e")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lamo_ray.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("lamo_ray.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    report = {Path(a.path).name for a in client.list_artifacts(parents[0].info.run_id, "report")}
    # one sample ratio, offline ASHA trials: learning curves and the ASHA view, no sample-ratio axis (issue 31)
    assert {"report.md", "report.html", "learning_curves.png", "asha.png", "best_config.yaml"} <= report
    assert "score_vs_sample_ratio.png" not in report
    assert {r.data.tags["variant"] for r in trials} == {"lamo", "dt_ddp"}
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
        outcome = run.data.tags["lamo_ray.outcome"]
        history = client.get_metric_history(run.info.run_id, "normalized_score")
        steps = [m.step for m in history]
        if outcome == "completed":
            assert steps == [10, 20]
        else:
            # ASHA stopped it at the rung (step 10). Train reports are asynchronous: the worker may
            # evaluate once more before the stop reaches it; if the finalizer saw that step-20
            # evaluation the trial is "completed", else it may land after the run was closed.
            assert outcome == "stopped_by_scheduler" and steps in ([10], [10, 20])
            assert run.data.tags["lamo_ray.stopped_at_step"] == "10"
        assert int(run.data.tags["lamo_ray.checkpoint_step"]) in steps
        # each logged score is the best target's mean normalized score of that evaluation's episodes
        for m in history:
            table = pd.read_parquet(client.download_artifacts(run.info.run_id, f"eval/step_{m.step:07d}.parquet"))
            per_target = table.groupby("target_return")
            best = per_target["return"].mean().idxmax()
            assert m.value == pytest.approx(per_target["normalized_score"].mean()[best], rel=1e-9)
            assert len(table) == 2 * 2 and np.isfinite(table["normalized_score"]).all()   # 2 targets x 2 episodes
        loss = client.get_metric_history(run.info.run_id, "train/action_loss")
        assert len(loss) >= 2 and all(m.value > 0 for m in loss)
        params = run.data.params
        assert params["model.finetune"] == ("lora" if run.data.tags["variant"] == "lamo" else "full")
        assert params["train.num_workers"] == ("2" if run.data.tags["variant"] == "dt_ddp" else "1")
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "config.yaml", "eval"} <= top
        ckpt = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"model.safetensors", "config.yaml", "policy.json", "optimizer.pt"} <= ckpt
        share = client.get_metric_history(run.info.run_id, "params/trainable_share")[0].value
        assert (share < 0.6) if run.data.tags["variant"] == "lamo" else share > 0.99  # full: all but the unused token table


def test_logged_checkpoint_reevaluates(sweep_run):
    tmp, env, _ = sweep_run
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("e2e")
    run = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("variant") == "lamo")
    out = tmp / "episodes.csv"
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.evaluate", "--checkpoint", f"runs:/{run.info.run_id}/checkpoint",
                           "--episodes", "3", "--targets", "-4", "--out", str(out)],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert "normalized_score" in summary and "eval/target_-4/return_mean" in summary
    assert len(out.read_text().strip().splitlines()) == 1 + 3


# --------------------------------------------------------------------------- reproducible trials

#: metrics that measure the machine, not the trial: wall times, throughput, memory, actor restarts
@pytest.fixture(scope="module")
def rerun(sweeps):
    """The second sweep (`AGAIN`), which ran beside the first."""
    tmp, _, done = sweeps
    for proc in done.values():
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return tmp


def test_two_sweeps_started_together_on_one_machine_both_run(sweeps):
    """Issue 30: each sweep starts its own local Ray; started at the same moment, both finish, each with
    its own dashboard. The second waits for the first's Ray start (the start lock) and then finds 8265
    taken: no failed bind and no retry. Before the lock, both probed 8265 free, the loser's dashboard
    failed to bind and its sweep retried ~60 s later; before the retry, that sweep exited with Ray's error."""
    _, _, done = sweeps
    ports = []
    for name, proc in done.items():
        assert proc.returncode == 0, (name, proc.stdout[-3000:], proc.stderr[-5000:])
        ports += re.findall(r"Ray dashboard: http://127\.0\.0\.1:(\d+)", proc.stdout)
        assert "could not bind port" not in proc.stdout + proc.stderr, name
    assert len(ports) == 2 and ports[0] != ports[1], ports


#: metrics of rollouts: a policy's forward batched over another number of envs rounds differently
ROLLOUT_METRICS = re.compile(r"(^eval/|normalized_score|return)")


def test_a_trials_metrics_depend_on_its_config_and_seed_not_on_its_sweep(rerun):
    """Issue 30: every metric the two trials logged in both sweeps is the same at every step both reached
    (the first sweep's ASHA may have stopped one at step 10), whatever else ran, in what order, and on
    how many rollout actors: training losses, learning rates, parameter and data counts bit for bit;
    evaluation returns and scores within 1e-6 relative (measured: 1.2e-8), since the same episodes,
    seeded alike, step in batches of 1 env instead of 2, and a batched forward's float sums round by
    batch size."""
    first, second = trial_histories(rerun / "mlflow.db", "e2e"), trial_histories(rerun / "again.db", "e2e_again")
    assert set(second) == {"dt", "lamo", "dt_ddp"}
    differ, compared = [], 0
    for variant in ("lamo", "dt_ddp"):
        a, b = first[variant], second[variant]
        assert {"train/action_loss", "normalized_score", "train/lr"} <= set(a) and set(a) <= set(b), variant
        for key, steps in a.items():
            common = sorted(set(steps) & set(b[key]))
            assert common, (variant, key)
            x, y = [steps[s] for s in common], [b[key][s] for s in common]
            same = x == pytest.approx(y, rel=1e-6, abs=1e-9) if ROLLOUT_METRICS.search(key) else x == y
            compared += 1
            if not same:
                differ.append((variant, key, x, y))
    assert not differ, differ
    assert compared > 20


# --------------------------------------------------------------------------- search, then confirm

REPO = Path(__file__).resolve().parents[1]
SHORT = ["data.source=test/reacher/tiny-v0", "data.sample_ratio=1.0", "data.context_length=3", "model.n_layer=1",
         "model.n_embd=32", "model.dropout=0.1", "train.lr={grid: [0.001, 0.003]}", "train.steps=20",
         "train.batch_size=16", "train.warmup_steps=5", "train.eval_every=10", "train.log_every=5",
         "train.cpus_per_worker=0.49", "eval.episodes=4", "eval.envs_per_actor=4", "scheduler.grace_period=10",
         "confirm.seeds=[100, 101]", "variants={lamo: {model: {finetune: lora, embedding: mlp}}}"]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """sweeps/reacher_search.yaml, shortened: its LaMo variant, 2 learning rates searched under ASHA, then
    the best configuration confirmed with seeds 100 and 101."""
    tmp = tmp_path_factory.mktemp("search")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
               HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    collect = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", "test/reacher/tiny-v0",
                              "--episodes", "40", "--ref-episodes", "10"], env=env, cwd=tmp,
                             capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    args = [a for kv in SHORT + [f"storage_path={tmp / 'ray'}"] for a in ("--set", kv)]
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(REPO / "sweeps" / "reacher_search.yaml"), *args],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    return tmp, proc


def test_search_then_confirm_runs_both_stages_in_one_parent_run(search_run):
    tmp, proc = search_run
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("reacher_search")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lamo_ray.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("lamo_ray.role") == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    search = [r for r in trials if r.data.tags["lamo_ray.stage"] == "search"]
    confirm = [r for r in trials if r.data.tags["lamo_ray.stage"] == "confirm"]
    assert len(search) == 2 and len(confirm) == 2
    selection = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "confirm_selection.yaml",
                                                               str(tmp))).read_text())
    picked = {r["variant"]: r["params"]["train.lr"] for r in selection}
    assert set(picked) == {"lamo"} and all(r["rank"] == 1 for r in selection)
    for run in confirm:   # fresh seeds, the picked configuration, every one to the end
        assert run.data.tags["seed"] in ("100", "101")
        assert float(run.data.params["train.lr"]) == picked[run.data.tags["variant"]]
        assert run.data.tags["lamo_ray.outcome"] == "completed"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "normalized_score")] == [10, 20]
    report = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp))).read_text()
    assert "scored from the 2 confirmation trials only" in report and "## Search" in report
    assert "confirmation: re-running the search's best configurations" in proc.stdout
    assert "What the data support:" in proc.stdout and "95% CI" in proc.stdout
