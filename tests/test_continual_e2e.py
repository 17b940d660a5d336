"""A short continual sweep end to end, as a user runs it: Meta-World data from the collector's CLI, then
`python -m lamo_ray.sweep` (Ray Tune -> Ray Train -> per-task rollout actors -> MLflow -> report), and
the MLflow store is checked against what the trial logged (L2M's protocol, `lamo_ray.continual.trial`).
Pre-training mixes two domains, as L2M's MT40 + DMC10: a Meta-World task and a DMControl task (one
SAC replay-buffer episode from the DMControl collector's CLI)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow_runs import trial_histories

pytestmark = pytest.mark.slow

#: window-close first: FT learns it in its own stage (4 of 4 episodes here at the stage's end, from 0 after
#: pre-training) and forgets it in reach's (0 of 4), so success, forgetting and AUC are real numbers. The
#: budget that learns here (docs/results.md, "Why context 1"): context 1, 3 x 64 blocks, batch 32, 1500 steps.
TASKS = ["window-close", "reach"]
PRETRAIN, STAGE, EVERY = 50, 1500, 1500   # evaluated at the end of pre-training and of each stage
SWEEP = {
    "name": "cl_e2e",
    "seeds": [0],
    "base": {
        "data": {"source": "lamo/metaworld/{task}-v0", "context_length": 1, "rtg_scale": 200, "max_ep_len": 1000},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 3, "n_embd": 64, "n_head": 2,
                  "finetune": "full"},
        "train": {"steps": PRETRAIN, "batch_size": 32, "lr": 1e-3, "warmup_steps": 20, "log_every": 250,
                  "cpus_per_worker": 0.49},
        "eval": {"max_episode_steps": 150},
        "continual": {"pretrain_tasks": ["reach", "pendulum-swingup"], "pretrain_mixing": "domain",
                      "sources": {"dmcontrol": "lamo/dmcontrol/{task}-v0"}, "rtg_scales": {"dmcontrol": 100},
                      "tasks": TASKS, "steps_per_task": STAGE, "eval_every": EVERY, "lr": 1e-3,
                      "eval_episodes": 4, "pool": {"size": 4, "rank": 2, "alpha": 4},
                      "mddt": {"action_dim_embedding": True}},
    },
    "scheduler": {"type": "fifo"},
    "report_baseline": "ft",
    "variants": {"l2m": {"continual": {"method": "l2m"}}, "ft": {"continual": {"method": "ft"}}},
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cl_e2e")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
               HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    collect = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "metaworld", "--tasks", *TASKS,
                              "--episodes", "4", "--ref-episodes", "1"], env=env, cwd=tmp,
                             capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    collect = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "dmcontrol", "--task", "pendulum-swingup",
                              "--timesteps", "1000", "--learning-starts", "999", "--ref-episodes", "1"], env=env,
                             cwd=tmp, capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    sweep_file = tmp / "cl.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(sweep_file), "--set", f"storage_path={tmp / 'ray'}"],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return tmp, proc


def _trials(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("cl_e2e")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("lamo_ray.role") == "sweep")
    return client, parent, [r for r in runs if r.data.tags.get("lamo_ray.role") == "trial"]


def test_each_trial_logs_the_continual_world_metrics_of_its_evaluations(sweep_run):
    tmp, _ = sweep_run
    client, _, trials = _trials(tmp)
    assert sorted(r.data.tags["variant"] for r in trials) == ["ft", "l2m"]
    stage_ends = [PRETRAIN + STAGE * (i + 1) for i in range(len(TASKS))]
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["lamo_ray.outcome"] == "completed"
        history = {t: {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"eval/{t}/success_rate")}
                   for t in TASKS}
        # the pre-trained model (end of pre-training), then every eval_every steps of each stage
        evals = [PRETRAIN] + [PRETRAIN + i * EVERY for i in range(1, len(TASKS) * STAGE // EVERY + 1)]
        assert {t: sorted(h) for t, h in history.items()} == {t: evals for t in TASKS}
        path = client.download_artifacts(run.info.run_id, "continual/success_matrix.json", str(tmp))
        matrix = json.loads(Path(path).read_text())
        assert matrix["stages"] == TASKS and matrix["tasks"] == TASKS
        # the matrix is the per-task success at each stage's end, as logged during the run
        assert np.allclose(matrix["success"], [[history[t][s] for s in stage_ends] for t in TASKS])
        s = np.asarray(matrix["success"])
        assert run.data.metrics["continual/average_success"] == pytest.approx(s[:, -1].mean())
        assert run.data.metrics["continual/forgetting"] == pytest.approx(np.mean([s[i, i] - s[i, -1]
                                                                                   for i in range(len(TASKS))]))
        for i, t in enumerate(TASKS):   # forward transfer's AUC: the mean success over the task's own stage
            own = [history[t][PRETRAIN + i * STAGE + j * EVERY] for j in range(1, STAGE // EVERY + 1)]
            assert run.data.metrics[f"continual/auc/{t}"] == pytest.approx(np.mean(own))
        ckpt = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert "continual.pt" in ckpt
        assert run.data.params["continual.method"] == run.data.tags["variant"]
        assert "pendulum-swingup" in run.data.params["continual.pretrain_tasks"]
        if run.data.tags["variant"] == "ft":
            # the numbers above are real: FT succeeds on window-close after its own stage (here 4 of 4, then
            # 0 of 4 after reach's stage: forgetting 1.0 for it)
            assert s[0, 0] > 0 and run.data.metrics["continual/forgetting"] > 0, s


def test_the_report_has_the_continual_section_and_the_heatmap(sweep_run):
    tmp, proc = sweep_run
    client, parent, trials = _trials(tmp)
    files = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report.md", "success_matrix.png"} <= files
    text = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp))).read_text()
    assert "## Continual learning (Continual World metrics)" in text
    for run in trials:   # each trial's final score is its average success x100
        assert f"{100 * run.data.metrics['continual/average_success']:.2f} | average success" in text
    assert "What the data support:" in proc.stdout



def test_a_continual_trials_metrics_do_not_depend_on_its_sweep(sweep_run):
    """Issue 30: FT's trial run again in another sweep, alone (l2m ran beside it in the first) and with
    its evaluations on 1 rollout actor instead of 2, logs the same value of every metric at every step:
    training losses, learning rates, each evaluation's success rates and returns, forgetting, AUCs."""
    tmp, _ = sweep_run
    again = copy.deepcopy(SWEEP)
    again.update(name="cl_e2e_again", variants={"ft": {"continual": {"method": "ft"}}})
    again["base"]["eval"]["num_actors"] = 1
    (tmp / "again.yaml").write_text(yaml.safe_dump(again))
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/again.db",
               HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(tmp / "again.yaml"), "--set",
                           f"storage_path={tmp / 'ray'}"], env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    first = trial_histories(tmp / "mlflow.db", "cl_e2e")["ft"]
    second = trial_histories(tmp / "again.db", "cl_e2e_again")["ft"]
    assert set(first) == set(second)
    assert {"train/action_loss", "eval/window-close/success_rate", "continual/forgetting"} <= set(first)
    differ = [(key, first[key], second[key]) for key in first if first[key] != second[key]]
    assert not differ, differ
    assert len(first) >= 15     # 15 here: losses, lr, counts, per-task success and return, forgetting, AUCs
