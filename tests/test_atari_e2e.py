"""One short Atari sweep end to end, as a user runs it: collect a tiny Breakout dataset with
`python -m lamo_ray.collect atari`, then `python -m lamo_ray.sweep` on it with a tiny model
(Ray Tune -> Ray Train -> rollout actors on the DT-preprocessed ALE env -> MLflow)."""

import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "atari_e2e",
    "seeds": [0],
    "base": {
        "data": {"source": "test/atari/breakout-v0", "rtg_scale": 1, "context_length": 4, "max_ep_len": 512},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1,
                  "finetune": "lora", "embedding": "mlp", "lora": {"rank": 32, "alpha": 32, "dropout": 0.0}},
        "train": {"steps": 20, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.01, "grad_clip": 1.0,
                  "warmup_steps": 5, "eval_every": 10, "log_every": 5, "cpus_per_worker": 0.99},
        "eval": {"target_returns": [90], "episodes": 2, "num_actors": 1, "envs_per_actor": 2,
                 "max_episode_steps": 150},
    },
    "scheduler": {"type": "fifo"},
    "variants": {"lamo": {}},
    "report_baseline": "lamo",
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atari_e2e")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
               HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0")
    env.pop("RAY_ADDRESS", None)
    collect = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "atari", "--game", "Breakout", "--dataset-id",
                              "test/atari/breakout-v0", "--episodes", "4", "--max-episode-steps", "200"],
                             env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    sweep_file = tmp / "atari_e2e.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(sweep_file), "--set", f"storage_path={tmp / 'ray'}"],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    return tmp, proc


def test_atari_sweep_trains_evaluates_and_tracks(sweep_run):
    tmp, proc = sweep_run
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("atari_e2e")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("lamo_ray.role") == "trial"]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    run = trials[0].info.run_id
    scores = client.get_metric_history(run, "normalized_score")
    assert [m.step for m in scores] == [10, 20]
    # human-normalised with Breakout's references: a return of R scores 100 * (R - 1.7) / 30.1
    returns = client.get_metric_history(run, "return_mean")
    for score, ret in zip(scores, returns):
        assert score.value == pytest.approx(100 * (ret.value - 1.7) / (31.8 - 1.7))
    lengths = client.get_metric_history(run, "eval/target_90/length_mean")
    assert all(0 < m.value <= 150 for m in lengths)
    loss = client.get_metric_history(run, "train/action_loss")
    assert loss and all(0 < m.value < 5 for m in loss)
    params = trials[0].data.params
    assert params["data.source"] == "test/atari/breakout-v0" and params["model.lora.rank"] == "32"
    assert {"checkpoint", "config.yaml", "eval"} <= {a.path for a in client.list_artifacts(run)}
