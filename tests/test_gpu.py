"""GPU acceptance check (issue 29), ready for the first machine with a GPU: ``pytest -m gpu``.

Each trial kind runs through the sweep CLI for a few steps, twice: in fp32 and in bf16 (``train.precision``).
The kinds are offline DT, online TD3+ODT, online ODT and continual L2M, with ``train.use_gpu`` and
``eval.gpus_per_actor``. Tiny shapes, on data made here. For each kind the check asserts:
- both trials completed, with MLflow's ``lamo_ray.device`` tag ``cuda``, so model, batches and generators
  were there: a CPU tensor or generator meeting a CUDA model raises, and the trial would have failed;
- ``lamo_ray.precision`` is the requested precision;
- bf16 tracks fp32: the training loss of the bf16 trial stays within 15% (relative, mean over the
  logged steps) of the fp32 trial's, from the same seed.
It prints each trial's samples per second.

Without CUDA the tests are skipped. ``LAMO_RAY_ACCEPTANCE_DEVICE=cpu pytest -m gpu tests/test_gpu.py``
rehearses the same checks on the CPU (``train.use_gpu`` false): that is how the harness itself was
checked here (no GPU on this machine).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_faults import start_sweep, trial_runs

DEVICE = os.environ.get("LAMO_RAY_ACCEPTANCE_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")]
ON_GPU = DEVICE == "cuda"
TOLERANCE = 0.15

MODEL = {"backbone": "gpt2", "pretrained": False, "n_layer": 2, "n_embd": 64, "n_head": 2, "finetune": "full"}
TRAIN = {"steps": 40, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, "eval_every": 40, "log_every": 5,
         "use_gpu": ON_GPU, "cpus_per_worker": 0.49}
EVAL = {"episodes": 2, "num_actors": 1, "envs_per_actor": 2, "gpus_per_actor": 0.1 if ON_GPU else 0.0}
POINTMAZE = {"source": "test/pointmaze/tiny-v1", "rtg_scale": 1, "context_length": 2, "max_ep_len": 1000}
ONLINE = {"iterations": 2, "transitions_per_iteration": 200, "updates_per_iteration": 10, "replay_size": 30,
          "target_return": 60, "eval_every": 2, "num_actors": 1, "envs_per_actor": 1}
KINDS = {
    "offline": {"data": POINTMAZE, "model": {**MODEL, "embedding": "linear"}, "train": TRAIN,
                "eval": {**EVAL, "target_returns": [60]}},
    "td3_odt": {"data": POINTMAZE, "model": {**MODEL, "embedding": "linear", "timestep_embedding": False},
                "train": {**TRAIN, "optimizer": "lamb"}, "eval": {**EVAL, "target_returns": [60]},
                "online": {**ONLINE, "method": "td3_odt"}},
    "odt": {"data": POINTMAZE, "model": {**MODEL, "embedding": "linear", "action_head": "tanh_gaussian"},
            "train": TRAIN, "eval": {**EVAL, "target_returns": [60]}, "online": {**ONLINE, "method": "odt"}},
    "continual": {"data": {"source": "lamo/metaworld/{task}-v0", "context_length": 2, "rtg_scale": 200,
                           "max_ep_len": 200},
                  "model": MODEL, "train": {**TRAIN, "steps": 20},
                  "eval": {k: v for k, v in EVAL.items() if k != "episodes"},   # continual.eval_episodes instead
                  "continual": {"pretrain_tasks": ["reach"], "tasks": ["window-close"], "steps_per_task": 20,
                                "eval_every": 20, "eval_episodes": 2, "method": "l2m",
                                "pool": {"size": 4, "rank": 2, "alpha": 4}}},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    for command in (["pointmaze", "--maze", "umaze", "--dataset-id", "test/pointmaze/tiny-v1", "--steps", "3000",
                     "--ref-episodes", "2"],
                    ["metaworld", "--tasks", "reach", "window-close", "--episodes", "3", "--ref-episodes", "1"]):
        subprocess.run([sys.executable, "-m", "lamo_ray.collect", *command], env=env, cwd=tmp, check=True,
                       capture_output=True, timeout=600)
    return tmp, env


def _loss_history(client, run, key):
    return np.array([m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)])


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_trial_kind_trains_on_the_device_and_bf16_tracks_fp32(workdir, kind):
    tmp, env = workdir
    sweep = {"name": f"gpu_{kind}", "seeds": [0], "base": KINDS[kind], "scheduler": {"type": "fifo"},
             "variants": {"fp32": {"train": {"precision": "fp32"}}, "bf16": {"train": {"precision": "bf16"}}},
             "report_baseline": "fp32"}
    proc, uri = start_sweep(tmp, env, sweep["name"], sweep)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:]
    client, runs = trial_runs(uri, sweep["name"])
    runs = {r.data.tags["variant"]: r for r in runs}
    assert set(runs) == {"fp32", "bf16"}
    for precision, run in runs.items():
        tags = run.data.tags
        assert tags["lamo_ray.outcome"] == "completed", (kind, precision)
        assert tags["lamo_ray.device"] == DEVICE and tags["lamo_ray.precision"] == precision, (kind, tags)
    key = "train/action_loss"   # every trial kind logs it (continual: the runner's on_log)
    fp32, bf16 = (_loss_history(client, runs[p], key) for p in ("fp32", "bf16"))
    assert len(fp32) == len(bf16) > 1, (kind, key)
    gap = float(np.mean(np.abs(bf16 - fp32) / np.maximum(np.abs(fp32), 1e-6)))
    speeds = {p: client.get_run(r.info.run_id).data.metrics.get("train/samples_per_s") for p, r in runs.items()}
    print(f"\n{kind} on {DEVICE}: bf16 vs fp32 loss, mean relative gap {gap:.3f}; samples/s {speeds}")
    assert gap < TOLERANCE, (kind, fp32.tolist(), bf16.tolist())
