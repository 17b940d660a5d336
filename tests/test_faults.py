"""Faults survived on a real local Ray cluster: a Ray Train worker, or the process of a trial that
trains in its own Tune trial process ('in_trial'), killed with SIGKILL mid-trial resumes from its
checkpoint; a sweep driver killed with SIGKILL mid-sweep continues with
``--resume`` (finished trials not re-run, the unfinished one from its checkpoint, no duplicate
MLflow runs); a NaN loss fails only its own trial, marked FAILED in MLflow."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import kill_tagged

pytestmark = pytest.mark.slow

BASE = {
    "data": {"source": "test/reacher/tiny-v0", "rtg_scale": 10, "context_length": 3, "max_ep_len": 64},
    "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1,
              "finetune": "full", "embedding": "linear"},
    "train": {"steps": 300, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, "eval_every": 100, "log_every": 100,
              "cpus_per_worker": 0.49},
    "eval": {"target_returns": [-4.0], "episodes": 2, "num_actors": 1, "envs_per_actor": 2},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", "test/reacher/tiny-v0",
                    "--episodes", "20", "--ref-episodes", "5"], env=env, cwd=tmp, check=True, capture_output=True,
                   timeout=300)
    return tmp, env


def start_sweep(tmp: Path, env: dict, name: str, sweep: dict) -> tuple[subprocess.Popen, str]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    uri = f"sqlite:///{tmp}/{name}.db"
    proc = subprocess.Popen([sys.executable, "-m", "lamo_ray.sweep", str(path), "--set", f"storage_path={tmp / name}"],
                            env=dict(env, MLFLOW_TRACKING_URI=uri), cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, uri


def training_pids(tag: str, process: str) -> list[int]:
    """Processes named ``process`` (Ray Train's ``RayTrainWorker``, Tune's function trial
    ``ImplicitFunc``) of the cluster whose processes carry LAMO_RAY_TEST_TAG=tag (only ours, never
    another Ray cluster's on the same machine)."""
    pids = []
    for pid in subprocess.run(["pgrep", "-f", process], capture_output=True, text=True).stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LAMO_RAY_TEST_TAG={tag}".encode() in environ:
            pids.append(int(pid))
    return pids


def kill_training_when(proc: subprocess.Popen, storage: Path, pattern: str, tag: str, process: str,
                       timeout: float) -> bool:
    """SIGKILL the training processes named ``process`` of the cluster tagged ``tag`` as soon as a path
    matching ``pattern`` exists under ``storage`` (a checkpoint written); True if any was killed before
    ``proc`` (the sweep) ended or ``timeout`` seconds passed."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if list(storage.glob(pattern)):
            pids = training_pids(tag, process)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return bool(pids)
        time.sleep(0.1)
    return False


def trial_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("lamo_ray.role") == "trial"]


@pytest.mark.parametrize("launcher", ["ray_train", "in_trial"])
def test_killed_training_process_resumes_from_checkpoint(workdir, launcher):
    """Ray Train restarts its worker group; Tune (FailureConfig) restarts an 'in_trial' trial."""
    tmp, env = workdir
    name = f"kill_{launcher}"
    base = yaml.safe_load(yaml.safe_dump(BASE))
    base["train"]["launcher"] = launcher
    sweep = {"name": name, "base": base, "scheduler": {"type": "fifo"}}
    tag = f"kill-{os.getpid()}-{time.time()}"
    proc, uri = start_sweep(tmp, dict(env, LAMO_RAY_TEST_TAG=tag), name, sweep)
    # the second checkpoint on disk means the first (step 100) is registered: the restart must resume
    # from >= 100 (Ray Train names checkpoints by step, Tune by report index)
    pattern = f"{name}_train/*/checkpoint_0000200" if launcher == "ray_train" else f"{name}/*/checkpoint_000001"
    killed = kill_training_when(proc, tmp / name, pattern, tag,
                                "RayTrainWorker" if launcher == "ray_train" else "ImplicitFunc", timeout=300)
    out, _ = proc.communicate(timeout=600)
    assert killed, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    client, runs = trial_runs(uri, name)
    assert len(runs) == 1  # the restarted worker group / trial logs into the same MLflow run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["lamo_ray.outcome"] == "completed"
    restored = client.get_metric_history(run.info.run_id, "train/restored_from_step")
    assert restored and restored[0].value >= 100
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "normalized_score")})
    assert steps == [100, 200, 300]


def test_nan_loss_fails_its_trial_and_the_sweep_goes_on(workdir):
    tmp, env = workdir
    base = yaml.safe_load(yaml.safe_dump(BASE))
    base["train"].update({"steps": 40, "eval_every": 20, "log_every": 10, "max_failures": 0})
    sweep = {"name": "nan", "base": base, "scheduler": {"type": "fifo"},
             "variants": {"ok": {}, "diverges": {"train": {"lr": 1.0e30, "warmup_steps": 0, "grad_clip": 1.0e30}}}}
    proc, uri = start_sweep(tmp, env, "nan", sweep)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]  # not every trial failed
    _, runs = trial_runs(uri, "nan")
    by_variant = {r.data.tags["variant"]: r for r in runs}
    assert by_variant["ok"].info.status == "FINISHED"
    assert by_variant["diverges"].info.status == "FAILED"
    assert by_variant["diverges"].data.tags["lamo_ray.outcome"] == "failed"
    assert "non-finite loss" in by_variant["diverges"].data.tags["lamo_ray.error"]


def test_killed_driver_resumes_with_resume_flag(workdir):
    """Issue 6: SIGKILL the sweep driver while trial 2 of 2 is mid-way; `--resume` finishes the
    sweep: trial 1 is not re-run, trial 2 continues from its last checkpoint, each trial keeps
    one MLflow run, and the parent run is reused."""
    tmp, env = workdir
    base = yaml.safe_load(yaml.safe_dump(BASE))
    base["train"].update({"steps": 400})
    sweep = {"name": "driver", "seeds": [0, 1], "base": base, "scheduler": {"type": "fifo"},
             "max_concurrent_trials": 1}
    tag = f"driver-{os.getpid()}-{time.time()}"
    env = dict(env, LAMO_RAY_TEST_TAG=tag)
    proc, uri = start_sweep(tmp, env, "driver", sweep)
    deadline = time.time() + 400
    killed = False
    while time.time() < deadline and proc.poll() is None:
        # trial 1 has its final checkpoint (the 4th report) and trial 2 its 2nd (step 200; so step 100
        # is registered: it must resume from >= 100). 1-worker trials train in their Tune trial
        # processes ('in_trial'), whose checkpoints Tune keeps in the trial directories.
        runs = [{c.name for c in d.glob("checkpoint_*")} for d in (tmp / "driver").glob("driver/run_trial_*/")]
        if len(runs) == 2 and sorted("checkpoint_000003" in r for r in runs) == [False, True] and \
                any("checkpoint_000001" in r and "checkpoint_000003" not in r for r in runs):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=60)
    assert killed, out[-3000:]
    # what the dead driver's local Ray left behind is ended at once, as `ray stop --force` would (before,
    # the test waited up to 60 s for it to exit, and 2 of its processes were still there after 60 s)
    kill_tagged("LAMO_RAY_TEST_TAG", tag, grace_s=0.0, sig=signal.SIGKILL)

    client, runs = trial_runs(uri, "driver")
    done_before = {r.data.tags["seed"]: r for r in runs if r.data.tags.get("lamo_ray.outcome") == "completed"}
    assert len(done_before) == 1, [r.data.tags for r in runs]
    (done_seed, done_run), = done_before.items()
    done_history = len(client.get_metric_history(done_run.info.run_id, "normalized_score"))

    path = tmp / "driver.yaml"
    resumed = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(path), "--resume",
                              "--set", f"storage_path={tmp / 'driver'}"],
                             env=dict(env, MLFLOW_TRACKING_URI=uri), cwd=tmp, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert not list((tmp / "driver").glob("driver_2*")), "--resume started a new, timestamped sweep"
    client, runs = trial_runs(uri, "driver")
    assert len(runs) == 2, [r.data.tags for r in runs]          # no duplicate trial runs
    parents = [r for r in client.search_runs([runs[0].info.experiment_id])
               if r.data.tags.get("lamo_ray.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["lamo_ray.outcome"] == "completed", run.data.tags
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "normalized_score"))
        assert steps[-1] == 400
    # the finished trial was not re-run: no new evaluations logged into it
    assert len(client.get_metric_history(done_run.info.run_id, "normalized_score")) == done_history
    (other,) = [r for r in runs if r.data.tags["seed"] != done_seed]
    restored = client.get_metric_history(other.info.run_id, "train/restored_from_step")
    assert restored and restored[0].value >= 100
    # the driver's summary lists both trials, including the one finished before the kill
    summary = resumed.stdout[resumed.stdout.rindex("trial "):]
    assert summary.count("completed") == 2, summary
