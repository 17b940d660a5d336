"""MuJoCo locomotion (lamo_ray/domains/mujoco): `collect_mujoco` (SB3 SAC, D4RL's recipe) at tiny budgets,
loading its datasets, Minari ``mujoco/*`` ids and D4RL HDF5 files, normalized scores from the
datasets' references, the paper-scale sweep's dry run and one short local Hopper sweep end to end."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from lamo_ray import collect
from lamo_ray.config import EvalConfig
from lamo_ray.data.loading import load_dataset
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError
from lamo_ray.domains.mujoco import D4RL_REF_SCORES, MUJOCO, mujoco_dataset_ids
from lamo_ray.domains.mujoco import KINDS as MUJOCO_KINDS
from lamo_ray.domains.mujoco.collect import collect_mujoco
from lamo_ray.evaluate import normalized_score, reference_scores

REPO = Path(__file__).resolve().parents[1]
# Tiny SAC run: 300 steps, snapshots at 50..250, 50-step episodes.
TINY = dict(timesteps=300, snapshot_every=50, episodes=3, eval_episodes=2, ref_episodes=2, learning_starts=100,
            max_episode_steps=50, progress=False)
HOPPER_INIT_QPOS_Z = 1.25  # Hopper-v5 reset: qpos = init_qpos + U(-5e-3, 5e-3); obs[0] is the torso height


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A Minari store holding lamo/mujoco/hopper/{medium,medium-replay,expert}-v0 from one tiny SAC run."""
    root = tmp_path_factory.mktemp("mujoco") / "minari"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        report = collect_mujoco("Hopper", seed=0, **TINY)
        yield root, report


@pytest.fixture
def use_store(store, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store[0]))
    return store[1]


# --------------------------------------------------------------------------- collector


def test_collector_writes_four_datasets_with_snapshots_and_refs(use_store):
    report = use_store
    assert report.ids == {"medium": "lamo/mujoco/hopper/medium-v0",
                          "medium-replay": "lamo/mujoco/hopper/medium-replay-v0",
                          "expert": "lamo/mujoco/hopper/expert-v0", "random": "lamo/mujoco/hopper/random-v0"}
    assert all((report.paths[k] / "data" / "main_data.hdf5").is_file() for k in MUJOCO_KINDS)
    assert report.snapshot_timesteps == [50, 100, 150, 200, 250]  # intermediate only: the final policy is expert
    # medium = the snapshot whose evaluation return is closest to a third of the final policy's
    target = report.final_return / 3
    best = min(zip(report.snapshot_timesteps, report.snapshot_returns), key=lambda s: abs(s[1] - target))
    assert (report.medium_timestep, report.medium_return) == best
    assert report.episodes["medium"] == report.episodes["expert"] == report.episodes["random"] == 3
    assert report.dataset_returns["random"] < report.dataset_returns["expert"]
    assert report.transitions["medium-replay"] == report.medium_timestep
    assert report.ref_min_score != report.ref_max_score
    assert report.seconds >= report.train_seconds > 0


def test_datasets_load_with_hopper_shapes_and_the_runs_references(use_store):
    report = use_store
    for kind in MUJOCO_KINDS:
        ds = load_dataset(report.ids[kind])
        assert ds.env_id == "Hopper-v5" and ds.obs_shape == (11,) and ds.act_dim == 3 and not ds.discrete_actions
        assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)
        assert ds.max_episode_steps == 50
        assert ds.num_transitions == report.transitions[kind] and len(ds.trajectories) == report.episodes[kind]
        assert ds.returns.mean() == pytest.approx(report.dataset_returns[kind])
        for t in ds.trajectories:
            assert t.observations.shape == (t.length, 11) and t.actions.shape == (t.length, 3)
            assert 1 <= t.length <= 50 and np.abs(t.actions).max() <= 1.0


def test_medium_replay_is_the_replay_buffer_split_into_episodes(use_store):
    import minari

    report = use_store
    dataset = minari.load_dataset(report.ids["medium-replay"])
    episodes = list(dataset.iterate_episodes())
    assert sum(len(e) for e in episodes) == report.medium_timestep
    for i, e in enumerate(episodes):
        # every piece starts from a reset state: split exactly at the buffer's done flags
        assert abs(e.observations[0][0] - HOPPER_INIT_QPOS_Z) < 0.01, (i, e.observations[0])
        assert e.observations.shape == (len(e) + 1, 11)
        # a piece ends by falling (terminated, < 50 steps), by the 50-step limit, or unfinished at the snapshot
        ended_by_limit = len(e) == 50
        assert e.terminations[-1] != e.truncations[-1]
        if i < len(episodes) - 1:
            assert bool(e.truncations[-1]) == ended_by_limit
        assert not e.terminations[:-1].any() and not e.truncations[:-1].any()
    meta = dataset.storage.metadata
    assert meta["medium_snapshot_timestep"] == report.medium_timestep
    assert meta["snapshot_returns"] == pytest.approx(report.snapshot_returns)


def test_normalized_score_uses_the_datasets_references(use_store):
    report = use_store
    ds = load_dataset(report.ids["medium"])
    refs = reference_scores(EvalConfig(), "Hopper-v5", (ds.ref_min_score, ds.ref_max_score))
    assert refs == (report.ref_min_score, report.ref_max_score) != D4RL_REF_SCORES["hopper"]
    assert normalized_score(report.ref_max_score, *refs) == pytest.approx(100.0)
    assert normalized_score(report.ref_min_score, *refs) == pytest.approx(0.0)


def test_existing_ids_are_refused_without_force_before_training(use_store):
    with pytest.raises(FileExistsError, match="lamo/mujoco/hopper/medium-v0.*--force"):
        collect_mujoco("hopper", seed=0, **TINY)
    code = collect.main(["mujoco", "--env", "Hopper", "--timesteps", "300"])
    assert code == 2


def test_same_seed_gives_identical_data_and_force_replaces(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    small = dict(TINY, timesteps=150, episodes=2, eval_episodes=1, ref_episodes=1, max_episode_steps=30)
    first = collect_mujoco("Hopper", seed=5, namespace="test/rep", **small)
    arrays = {k: [(t.observations, t.actions) for t in load_dataset(first.ids[k]).trajectories] for k in MUJOCO_KINDS}
    second = collect_mujoco("Hopper", seed=5, namespace="test/rep", force=True, **small)
    assert (second.snapshot_returns, second.medium_timestep) == (first.snapshot_returns, first.medium_timestep)
    for kind in MUJOCO_KINDS:
        again = load_dataset(second.ids[kind]).trajectories
        assert len(again) == len(arrays[kind])
        for (obs, act), t in zip(arrays[kind], again):
            np.testing.assert_array_equal(obs, t.observations)
            np.testing.assert_array_equal(act, t.actions)


@pytest.mark.parametrize("kwargs, message", [
    (dict(env="Ant"), "unknown MuJoCo env 'Ant'"),
    (dict(snapshot_every=300), "snapshot_every must be in \\[1, timesteps=300\\)"),
    (dict(episodes=0), "episodes must be >= 1, got 0"),
    (dict(learning_starts=-1), "learning_starts must be >= 0"),
])
def test_bad_arguments_fail_before_training(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    args = dict(TINY, **kwargs)
    with pytest.raises(ValueError, match=message):
        collect_mujoco(args.pop("env", "Hopper"), **args)
    assert not (tmp_path / "minari").exists() or not any((tmp_path / "minari").rglob("main_data.hdf5"))


def test_ensure_uses_existing_data_and_refuses_mixed_runs(use_store, tmp_path, monkeypatch, store):
    MUJOCO.ensure_dataset("lamo/mujoco/hopper/medium-v0")  # present: returns without training
    with pytest.raises(ValueError, match="not a local MuJoCo dataset id"):
        MUJOCO.ensure_dataset("lamo/mujoco/ant/medium-v0")
    with pytest.raises(ValueError, match="not a local MuJoCo dataset id"):
        MUJOCO.ensure_dataset("lamo/mujoco/hopper/full-replay-v0")
    # only the expert sibling present: generating medium alone would mix two SAC runs
    other = tmp_path / "minari"
    shutil.copytree(store[0] / "lamo" / "mujoco" / "hopper" / "expert-v0", other / "lamo" / "mujoco" / "hopper" / "expert-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(other))
    with pytest.raises(FileExistsError, match="expert-v0 from the same SAC run"):
        MUJOCO.ensure_dataset("lamo/mujoco/hopper/medium-v0")
    assert mujoco_dataset_ids("Walker2d-v5", 2)["medium-replay"] == "lamo/mujoco/walker2d/medium-replay-v2"


# --------------------------------------------------------------------------- other sources


def write_minari_hopper(dataset_id, ref_min, ref_max, episodes=2, steps=7):
    import minari
    from minari.data_collector import EpisodeBuffer

    from lamo_ray.envs import make_env

    env = make_env("Hopper-v5")
    rng = np.random.default_rng(0)
    buffers = [EpisodeBuffer(id=i, observations=rng.normal(size=(steps + 1, 11)),
                             actions=rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
                             rewards=np.full(steps, 1.0 + i), terminations=np.eye(steps, dtype=bool)[-1],
                             truncations=np.zeros(steps, dtype=bool)) for i in range(episodes)]
    minari.create_dataset_from_buffers(dataset_id, buffers, env=env, eval_env=env, ref_min_score=ref_min,
                                       ref_max_score=ref_max, author="test", num_episodes_average_score=1,
                                       algorithm_name="random test data", description="Minari mujoco/* layout")


def test_minari_mujoco_id_reads_refs_from_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_minari_hopper("mujoco/hopper/medium-v0", -5.0, 3000.0)
    ds = load_dataset("mujoco/hopper/medium-v0")
    assert ds.env_id == "Hopper-v5" and ds.obs_shape == (11,) and ds.act_dim == 3
    assert (ds.ref_min_score, ds.ref_max_score) == (-5.0, 3000.0)
    assert [t.length for t in ds.trajectories] == [7, 7] and ds.returns.tolist() == [7.0, 14.0]
    assert all(t.terminated for t in ds.trajectories)
    with pytest.raises(DatasetNotDownloadedError, match=r"minari download mujoco/walker2d/expert-v0.*"
                       r"lamo/mujoco/walker2d/.*python -m lamo_ray.collect mujoco --env walker2d"):
        load_dataset("mujoco/walker2d/expert-v0")


def write_d4rl_hopper(path, lengths=(5, 1000, 3), terminal_ends=(True, False, False)):
    """D4RL layout: flat arrays; an episode ends at a terminal or a time-out (the 1000-step one)."""
    n = sum(lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    end = 0
    for length, terminal in zip(lengths, terminal_ends):
        end += length
        (terminals if terminal else timeouts)[end - 1] = length == 1000 or terminal
    rng = np.random.default_rng(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, 11)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        f["rewards"] = np.ones(n, np.float32)
        f["terminals"], f["timeouts"] = terminals, timeouts
    return path


def test_d4rl_hopper_hdf5_with_d4rl_references(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_d4rl_hopper(tmp_path / ".d4rl" / "datasets" / "hopper-medium-v2.hdf5")
    ds = load_dataset("~/.d4rl/datasets/hopper-medium-v2.hdf5")  # ~ expanded
    assert [t.length for t in ds.trajectories] == [5, 1000, 3]
    assert [t.terminated for t in ds.trajectories] == [True, False, False]
    assert ds.obs_shape == (11,) and ds.act_dim == 3
    assert (ds.ref_min_score, ds.ref_max_score) == D4RL_REF_SCORES["hopper"] == (-20.272305, 3234.3)
    refs = reference_scores(EvalConfig(), "Hopper-v5", (ds.ref_min_score, ds.ref_max_score))
    assert normalized_score(3234.3, *refs) == pytest.approx(100.0)
    assert normalized_score(1607.0, *refs) == pytest.approx(100 * (1607.0 + 20.272305) / (3234.3 + 20.272305))


def test_missing_d4rl_file_is_not_downloaded_with_its_url(tmp_path):
    with pytest.raises(DatasetNotDownloadedError, match=r"wget -O .*walker2d_medium_replay-v2.hdf5 http://rail"
                       r".*gym_mujoco_v2/walker2d_medium_replay-v2.hdf5"):
        load_dataset(str(tmp_path / "walker2d_medium_replay-v2.hdf5"))
    with pytest.raises(DatasetNotDownloadedError, match="gym_mujoco_v2/halfcheetah_medium-v2.hdf5"):
        load_dataset(str(tmp_path / "halfcheetah-medium-v2.hdf5"))
    with pytest.raises(DatasetError, match="file not found") as err:  # other names: a plain missing file
        load_dataset(str(tmp_path / "my-hopper.hdf5"))
    assert not isinstance(err.value, DatasetNotDownloadedError)


# --------------------------------------------------------------------------- sweeps


def test_paper_scale_sweep_dry_run_lists_d4rl_files_to_fetch(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), HF_HUB_OFFLINE="1", MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(REPO / "sweeps" / "mujoco.yaml"), "--dry-run"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "72 trials" in proc.stdout
    for env_name in ("hopper", "walker2d", "halfcheetah"):
        assert f"gym_mujoco_v2/{env_name}_medium-v2.hdf5" in proc.stdout
    for env_id in ("Hopper-v5: observation (11,), action 3", "Walker2d-v5: observation (17,), action 6",
                   "HalfCheetah-v5: observation (17,), action 6"):
        assert env_id in proc.stdout
    sweep = yaml.safe_load((REPO / "sweeps" / "mujoco.yaml").read_text())
    assert sweep["base"]["data"]["sample_ratio"] == {"grid": [0.005, 0.01, 0.1, 1.0]}
    assert set(sweep["variants"]) == {"lamo", "dt"} and sweep["report_baseline"] == "dt"
    assert sweep["tasks"]["walker2d"]["eval"]["target_returns"] == [5000, 4000, 3000, 2500]
    assert sweep["tasks"]["halfcheetah"]["eval"]["target_returns"] == [12000, 8000, 6000, 4500]


@pytest.mark.slow
def test_local_hopper_sweep_end_to_end(tmp_path):
    """sweeps/mujoco_local.yaml shrunk with --set, on a tiny SAC dataset made by the CLI."""
    from mlflow.tracking import MlflowClient

    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "minari"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
               HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    made = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "mujoco", "--env", "Hopper", "--timesteps", "300",
                           "--snapshot-every", "100", "--episodes", "6", "--eval-episodes", "1", "--ref-episodes", "2",
                           "--learning-starts", "100", "--max-episode-steps", "100"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    sets = ["name=mujoco_e2e", f"storage_path={tmp_path / 'ray'}", "scheduler.type=fifo", "train.steps=20",
            "train.eval_every=10", "train.log_every=5", "train.warmup_steps=5", "train.batch_size=16",
            "data.context_length=5", "model.n_layer=1", "model.n_embd=32", "eval.episodes=2", "eval.envs_per_actor=2",
            "eval.max_episode_steps=100", "eval.target_returns=[3600]"]
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(REPO / "sweeps" / "mujoco_local.yaml"),
                           *[a for s in sets for a in ("--set", s)]],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    ds = load_dataset_in(tmp_path / "minari", "lamo/mujoco/hopper/medium-v0")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("mujoco_e2e")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("lamo_ray.role") == "trial"]
    assert sorted(r.data.params["model.finetune"] for r in trials) == ["full", "lora"]
    for trial in trials:
        assert trial.info.status == "FINISHED"
        run = trial.info.run_id
        scores = client.get_metric_history(run, "normalized_score")
        returns = client.get_metric_history(run, "return_mean")
        assert [m.step for m in scores] == [10, 20]
        for score, ret in zip(scores, returns):  # normalised with the collected dataset's own references
            assert score.value == pytest.approx(normalized_score(ret.value, ds.ref_min_score, ds.ref_max_score))
        lengths = client.get_metric_history(run, "eval/target_3600/length_mean")
        assert all(0 < m.value <= 100 for m in lengths)
        assert trial.data.params["data.rtg_scale"] == "1000.0" and trial.data.params["eval.env_id"] == "Hopper-v5"


def load_dataset_in(store, dataset_id):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        return load_dataset(dataset_id)
