"""Sweep driver pieces that need no training: preflight, resource plan, naming, CLI errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lamo_ray.config import ConfigError, OnlineConfig, expand_trials, load_sweep, resolve_tune_config
from lamo_ray.preflight import (PreflightError, TrialResources, check_resources, preflight, resource_plan,
                                tune_max_failures)
from lamo_ray.sweep import format_trial_table, select_configurations
from lamo_ray.tune_runtime import _experiment_dir, _param_space

REPO = Path(__file__).resolve().parents[1]


def sweep_file(tmp_path, **over):
    data = {"name": "s", "base": {"data": {"source": str(tmp_path / "missing.hdf5")},
                                  "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1}}}
    data.update(over)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args, cwd, env=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "lamo_ray.sweep", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_resource_check_names_the_keys(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, variants={"big": {"train": {"num_workers": 4}}}))
    (check,) = check_resources(sweep, expand_trials(sweep), cluster_cpus=2)
    assert not check.ok and "train.num_workers 4" in check.detail and "cluster has 2" in check.detail
    (ok,) = check_resources(sweep, expand_trials(sweep), cluster_cpus=8)
    assert ok.ok


def test_trial_resources_follow_the_launcher(tmp_path):
    """A 1-worker trial trains in its Tune trial process, which reserves its CPUs, GPU and the rollout
    actors' CPUs; a DDP trial's function holds trial_cpus (Ray Train reserves the workers) and its
    rollout actors' bundles (before: only trial_cpus, and a worker's actors waited forever in the worker
    group's full placement group)."""
    sweep = load_sweep(sweep_file(tmp_path, trial_cpus=0.05, variants={
        "one": {"train": {"cpus_per_worker": 0.5, "use_gpu": True}, "eval": {"num_actors": 2, "actor_cpus": 0.25}},
        "ddp": {"train": {"num_workers": 2, "cpus_per_worker": 0.5}},
        "forced": {"train": {"launcher": "ray_train"}},
        "ddp_actors": {"train": {"num_workers": 2, "cpus_per_worker": 0.5}, "eval": {"num_actors": 2, "actor_cpus": 0.25}}}))
    resources = TrialResources(sweep)
    one = resources({"variant": "one", "seed": 0})
    assert one.bundles == [{"CPU": 0.55, "GPU": 1}, {"CPU": 0.25}, {"CPU": 0.25}]
    assert resources({"variant": "ddp", "seed": 0}).bundles == [{"CPU": 0.05}]
    assert resources({"variant": "forced", "seed": 0}).bundles == [{"CPU": 0.05}]
    assert resources({"variant": "ddp_actors", "seed": 0}).bundles == [{"CPU": 0.05}, {"CPU": 0.25}, {"CPU": 0.25}]
    # the bundles add up to what check_resources counts for the trial
    (check,) = check_resources(sweep, [r for r in expand_trials(sweep) if r["variant"] == "one"], cluster_cpus=1.05)
    assert check.ok and "needs 1.05" in check.detail


def test_online_collecting_actors_are_reserved_and_counted(tmp_path):
    """An online trial's collecting actors (online.num_actors) reserve eval.actor_cpus each, beside
    the evaluation actors; the plan and the CPU check count them."""
    online = {"method": "td3_odt", "iterations": 2, "target_return": 60, "num_actors": 3}
    sweep = load_sweep(sweep_file(tmp_path, trial_cpus=0.05, variants={
        "on": {"train": {"cpus_per_worker": 0.5}, "eval": {"num_actors": 1, "actor_cpus": 0.25}, "online": online},
        "free": {"train": {"cpus_per_worker": 0.5}, "online": online}}))
    resources = TrialResources(sweep)
    assert resources({"variant": "on", "seed": 0}).bundles == [{"CPU": 0.55}] + [{"CPU": 0.25}] * 4
    assert resources({"variant": "free", "seed": 0}).bundles == [{"CPU": 0.55}]  # actors borrow the trial's CPUs
    rows = expand_trials(sweep)
    plan = resource_plan(sweep, rows, cluster_cpus=2, cluster_gpus=0)
    assert "on: 1.55 CPUs" in plan and "3 collecting actor(s) x 0.25 CPU" in plan
    (check,) = check_resources(sweep, [r for r in rows if r["variant"] == "on"], cluster_cpus=1.5)
    assert not check.ok and "online.num_actors" in check.detail
    # with a GPU share the collecting actors hold one too (their forward on CUDA, as evaluation's)
    gpu = load_sweep(sweep_file(tmp_path, trial_cpus=0.05, variants={
        "g": {"train": {"cpus_per_worker": 0.5}, "eval": {"num_actors": 1, "gpus_per_actor": 0.5}, "online": online}}))
    assert TrialResources(gpu)({"variant": "g", "seed": 0}).bundles == [{"CPU": 0.55}] + [{"GPU": 0.5}] * 4
    assert "g: 0.55 CPUs, 2 GPUs per trial" in resource_plan(gpu, expand_trials(gpu), 2, 2)


def test_online_collection_asks_its_actors_for_the_gpu_share(monkeypatch):
    """`Collector` with ``gpus_per_actor`` starts its actors with that GPU share and their policy on CUDA,
    as `Evaluator` does; without one, on the CPU."""
    from lamo_ray import rollout_pool
    from lamo_ray.online.loop import Collector

    started = []
    monkeypatch.setattr(rollout_pool.RolloutPool, "__init__",
                        lambda self, cls, args, cpus=0.0, gpus=0.0: started.append((args[0][0][-1], cpus, gpus)))
    online = OnlineConfig(method="td3_odt", iterations=1, target_return=0.0, num_actors=2)
    Collector(None, "Hopper-v5", online, 0, False, actor_cpus=1.0, gpus_per_actor=0.25)
    Collector(None, "Hopper-v5", online, 0, False)
    assert started == [("cuda", 1.0, 0.25), ("cpu", 0.0, 0.0)]


def test_rollout_actors_with_a_gpu_share_get_gpu_bundles_and_the_plan_counts_them(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, trial_cpus=0.05, seeds=[0, 1], variants={
        "gpu": {"train": {"cpus_per_worker": 1, "use_gpu": True},
                "eval": {"num_actors": 4, "gpus_per_actor": 0.25, "episodes": 40}},   # 40 / 10 envs: 4 actors
        "cpu": {"eval": {"num_actors": 2, "actor_cpus": 0.5}}}))
    resources = TrialResources(sweep)
    assert resources({"variant": "gpu", "seed": 0}).bundles == [{"CPU": 1.05, "GPU": 1}] + [{"GPU": 0.25}] * 4
    rows = expand_trials(sweep)
    # the bundles are the actors the trial starts: 10 episodes fill one actor's 10 envs, so one bundle
    gpu = next(r["config"] for r in rows if r["variant"] == "gpu")
    few = gpu.model_copy(update={"eval": gpu.eval.model_copy(update={"episodes": 10})})
    assert resources.request(few).bundles == [{"CPU": 1.05, "GPU": 1}, {"GPU": 0.25}]
    plan = resource_plan(sweep, rows, cluster_cpus=8, cluster_gpus=4)
    assert "gpu: 1.05 CPUs, 2 GPUs per trial" in plan and "cpu: 2.05 CPUs, 0 GPUs per trial" in plan
    # the largest request: 2.05 CPUs (8 // 2.05 = 3 trials) and 2 GPUs (4 // 2 = 2 trials)
    assert "4 trials, 2 at once on 8 CPUs / 4 GPUs" in plan and "8.2 CPUs, 8 GPUs" in plan
    assert "as many at once as the cluster fits" in resource_plan(sweep, rows, None, None)
    (no_gpu,) = check_resources(sweep, rows, cluster_cpus=8, cluster_gpus=0)
    assert not no_gpu.ok and no_gpu.obtainable  # a GPU cluster to run on, not a broken input
    assert "needs 2 GPUs" in no_gpu.detail and "train.use_gpu true" in no_gpu.detail and "this machine has 0" in no_gpu.detail
    (fits,) = check_resources(sweep, rows, cluster_cpus=8, cluster_gpus=2)
    assert fits.ok and "2 of 2 GPUs" in fits.detail
    with pytest.raises(ConfigError, match="gpus_per_actor"):
        load_sweep(sweep_file(tmp_path, variants={"x": {"eval": {"gpus_per_actor": 2}}}))


def test_dry_run_prints_the_resource_plan(tmp_path):
    proc = run_cli(REPO / "sweeps" / "kitchen.yaml", "--dry-run", cwd=tmp_path)
    assert "resources:" in proc.stdout and "GPUs per trial" in proc.stdout, proc.stdout[-2000:]


def test_tune_retries_only_for_in_trial_trials(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, variants={"one": {"train": {"max_failures": 3}},
                                                       "ddp": {"train": {"num_workers": 2, "max_failures": 7}}}))
    configs = [r["config"] for r in expand_trials(sweep)]
    assert tune_max_failures(configs) == 3
    assert tune_max_failures([c for c in configs if c.train.num_workers == 2]) == 0
    one = next(c for c in configs if c.train.in_trial)
    unlimited = one.model_copy(update={"train": one.train.model_copy(update={"max_failures": -1})})
    assert tune_max_failures([*configs, unlimited]) == -1


def test_missing_dataset_is_reported_with_its_path(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path))
    checks = preflight(sweep, expand_trials(sweep), generate=False)
    bad = [c for c in checks if not c.ok]
    assert bad and "missing.hdf5" in bad[0].detail


def test_existing_sweep_name_is_never_overwritten(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, storage_path=str(tmp_path / "results")))
    name, path = _experiment_dir(sweep, resume=False)
    assert name == "s" and path == tmp_path / "results" / "s"
    path.mkdir(parents=True)
    name2, path2 = _experiment_dir(sweep, resume=False)
    assert name2.startswith("s_") and path2 != path and not path2.exists()
    assert _experiment_dir(sweep, resume=True) == ("s", path)


def test_param_space_has_variants_seeds_and_domains(tmp_path):
    path = sweep_file(tmp_path, seeds=[1, 2], variants={"a": {}, "b": {}})
    raw = yaml.safe_load(path.read_text())
    raw["base"]["train"] = {"lr": {"loguniform": [1e-5, 1e-3]}, "batch_size": {"grid": [32, 64]}}
    path.write_text(yaml.safe_dump(raw))
    space = _param_space(load_sweep(path))
    assert space["variant"] == {"grid_search": ["a", "b"]} and space["seed"] == {"grid_search": [1, 2]}
    assert space["train.batch_size"] == {"grid_search": [32, 64]}
    assert 1e-5 <= space["train.lr"].sample() <= 1e-3


def test_trial_table_lists_every_trial(tmp_path):
    sweep = load_sweep(REPO / "sweeps" / "reacher.yaml")
    rows = expand_trials(sweep)
    lines = format_trial_table(rows).splitlines()
    assert len(lines) == 1 + len(rows) and "variant" in lines[0]
    # where each trial trains: the 1-worker LaMo trials in their Tune trial process, DT through Ray Train
    launchers = {line.split()[1]: line.split()[-1] for line in lines[1:]}
    assert lines[0].split()[-1] == "launcher" and launchers == {"lamo": "in_trial", "dt": "ray_train"}


def test_cli_bad_config_exits_2_naming_key(tmp_path):
    path = sweep_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["base"]["train"] = {"lr": -1}
    path.write_text(yaml.safe_dump(raw))
    proc = run_cli(path, cwd=tmp_path)
    assert proc.returncode == 2 and "train.lr" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_missing_dataset_fails_before_compute(tmp_path):
    proc = run_cli(sweep_file(tmp_path), "--set", f"storage_path={tmp_path / 'r'}", cwd=tmp_path)
    assert proc.returncode == 2 and "missing.hdf5" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, trials, dataset", [
    ("quickstart", 6, "lamo/kitchen/complete-v0"),
    ("reacher", 8, "lamo/reacher/mixed-v0"),
    ("kitchen_local", 4, "lamo/kitchen/partial-v0"),
    ("online_local", 12, "lamo/pointmaze/umaze-v1"),
])
def test_cli_dry_run_local_sweeps(tmp_path, name, trials, dataset):
    """The shipped CPU sweeps validate with their local data not yet generated (the quick start is
    a Kitchen sweep on scripted data, issue 3)."""
    proc = run_cli(REPO / "sweeps" / f"{name}.yaml", "--dry-run", cwd=tmp_path,
                   env={"MINARI_DATASETS_PATH": str(tmp_path / "minari")})
    assert proc.returncode == 0, proc.stderr
    assert f"{trials} trials" in proc.stdout
    assert f"[ok] dataset   {dataset}: missing; will be generated" in proc.stdout
    assert "0 input(s) unavailable" in proc.stdout
    if name == "quickstart":
        assert "[ok] env       FrankaKitchen-v1: observation (60,), action 9" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "minari" / "lamo").exists()


def test_cli_dry_run_paper_scale_kitchen_lists_what_to_download(tmp_path):
    """Issue 3: kitchen.yaml validates here (exit 0) while listing the D4RL data and GPT-2 weights
    as missing with how to get them; a real run exits 2 before any compute, naming them. A machine without
    lamo_ray's fetched files (LAMO_RAY_HOME empty: CI fetches the gpt2 tokenizer before the tests)."""
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "minari"), "LAMO_RAY_HOME": str(tmp_path / "lamo_home")}
    proc = run_cli(REPO / "sweeps" / "kitchen.yaml", "--dry-run", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "60 trials" in proc.stdout
    missing = [ln for ln in proc.stdout.splitlines() if "[MISSING]" in ln]
    assert any("D4RL/kitchen/partial-v2" in ln and "lamo/kitchen/partial-v0" in ln for ln in missing)
    assert any("D4RL/kitchen/complete-v2" in ln and "minari download" in ln for ln in missing)
    assert any("gpt2 (pretrained)" in ln and "hf download gpt2" in ln for ln in missing)
    assert "to download or fetch" in proc.stdout
    assert "inputs: 4 not fetched (offline):" in proc.stdout  # run_cli sets HF_HUB_OFFLINE=1
    assert "  backbone gpt2 (config, weights, tokenizer) from the Hugging Face hub" in proc.stdout
    assert "  corpus wikitext-103-raw-v1 (train split, via `datasets`)" in proc.stdout  # lamo_cotrain
    real = run_cli(REPO / "sweeps" / "kitchen.yaml", "--set", "storage_path=" + str(tmp_path / "results"),
                   cwd=tmp_path, env=env)
    assert real.returncode == 2
    assert "D4RL/kitchen/partial-v2" in real.stderr and "gpt2" in real.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()
    assert not any((tmp_path / "minari").rglob("*.hdf5"))


def test_cli_dry_run_paper_scale_online_lists_what_to_fetch(tmp_path):
    """Issue 18: online.yaml (4 variants x 7 tasks x 5 seeds, each task with the authors' settings) validates
    here, listing every task's data, GPT-2 (lamo_td3) and WikiText as inputs to fetch; every task's env builds."""
    proc = run_cli(REPO / "sweeps" / "online.yaml", "--dry-run", cwd=tmp_path,
                   env={"MINARI_DATASETS_PATH": str(tmp_path / "minari")})
    assert proc.returncode == 0, proc.stderr
    assert "140 trials" in proc.stdout
    missing = [ln for ln in proc.stdout.splitlines() if "[MISSING]" in ln]
    for source in ("D4RL/pointmaze/umaze-v2", "D4RL/pointmaze/medium-v2", "D4RL/pen/human-v2", "D4RL/hammer/human-v2",
                   "D4RL/antmaze/umaze-v1"):
        assert any(source in ln and "minari download" in ln for ln in missing), source
    for name in ("hopper-medium-v2.hdf5", "hopper-random-v2.hdf5"):
        assert any(name in ln and "wget" in ln for ln in missing), name
    assert any("gpt2 (pretrained)" in ln for ln in missing)
    assert "inputs: 9 not fetched (offline):" in proc.stdout
    for env in ("PointMaze_UMaze-v3: observation (6,), action 2", "Hopper-v5: observation (11,), action 3",
                "AdroitHandPen-v1: observation (45,), action 24", "AntMaze_UMaze-v4: observation (29,), action 8"):
        assert f"[ok] env       {env}" in proc.stdout
    table = proc.stdout.split("inputs:")[0]
    assert all(v in table for v in ("odt", "td3_odt", "td3", "lamo_td3", "antmaze_umaze", "hopper_random"))


def test_paper_scale_online_tasks_follow_the_authors_commands():
    """docs/references/odt_td3.md "Per-domain settings", in this project's units (rewards stay the env's)."""
    rows = {(r["variant"], r["config"].task): r["config"] for r in expand_trials(load_sweep(REPO / "sweeps" / "online.yaml"))
            if r["seed"] == 0}
    hop, pen, ant = rows[("td3_odt", "hopper_medium")], rows[("td3_odt", "pen_human")], rows[("td3_odt", "antmaze_umaze")]
    assert (hop.data.context_length, hop.eval.context_length, hop.online.target_return, hop.online.policy_delay,
            hop.online.critic_layer_norm, hop.train.steps) == (20, 5, 7200, 2, False, 5000)
    # pen: rewards / 100 and RTG scale 1 in the authors' code = rtg_scale 100 on env rewards; RTG 120 -> 12000
    assert (pen.data.rtg_scale, pen.eval.target_returns, pen.online.reward_scale) == (100, [12000], 0.01)
    assert (ant.data.reward_shift, ant.online.rl_from_start, ant.online.gamma, ant.eval.target_returns) == \
        (-1, True, 0.998, [-100])
    assert rows[("odt", "pen_human")].model.action_head == "tanh_gaussian"
    assert rows[("lamo_td3", "pen_human")].model.finetune == "lora"


def test_missing_corpus_is_reported_before_compute(tmp_path):
    from lamo_ray.preflight import check_corpora

    path = sweep_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["base"]["language"] = {"co_lambda": 0.1, "corpus": str(tmp_path / "no_such_corpus")}
    path.write_text(yaml.safe_dump(raw))
    (check,) = check_corpora([r["config"] for r in expand_trials(load_sweep(path))])
    assert not check.ok and "no_such_corpus" in check.detail


def test_cli_unreachable_tracking_server_fails_before_compute(tmp_path):
    minari = tmp_path / "minari"
    env = {"MINARI_DATASETS_PATH": str(minari), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    proc_env = dict(os.environ, **env)
    subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", "test/reacher/tiny-v0",
                    "--episodes", "10", "--ref-episodes", "5"], env=proc_env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    path = sweep_file(tmp_path, storage_path=str(tmp_path / "r"))
    raw = yaml.safe_load(path.read_text())
    raw["base"]["data"]["source"] = "test/reacher/tiny-v0"
    path.write_text(yaml.safe_dump(raw))
    proc = run_cli(path, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "127.0.0.1:9" in proc.stderr and "unreachable" in proc.stderr
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- search, then confirm


def confirm_sweep(tmp_path, **confirm):
    path = sweep_file(tmp_path, seeds=[0, 1], variants={"a": {}, "b": {}},
                      confirm={"top_k": 1, "seeds": [10, 11], **confirm})
    raw = yaml.safe_load(path.read_text())
    raw["base"]["train"] = {"lr": {"grid": [1e-4, 1e-3, 1e-2]}}
    path.write_text(yaml.safe_dump(raw))
    return load_sweep(path)


def test_confirm_needs_fresh_seeds_and_something_to_select(tmp_path):
    with pytest.raises(ConfigError, match=r"confirm.seeds must be fresh seeds: \[1\]"):
        confirm_sweep(tmp_path, seeds=[1, 5])
    with pytest.raises(ConfigError, match="no search domains"):
        load_sweep(sweep_file(tmp_path, confirm={"seeds": [5]}))


class FakeResult:
    def __init__(self, variant, lr, seed, step, score):
        self.config = {"variant": variant, "seed": seed, "stage": "search", "train.lr": lr}
        self.metrics = {"step": step, "normalized_score": score} if step is not None else {}


def test_selection_ranks_by_steps_reached_then_mean_score_and_confirms_with_the_picked_values(tmp_path):
    sweep = confirm_sweep(tmp_path, top_k=2)
    results = [FakeResult("a", 1e-4, 0, 100, 99.0), FakeResult("a", 1e-4, 1, 100, 98.0),   # stopped early
               FakeResult("a", 1e-3, 0, 400, 50.0), FakeResult("a", 1e-3, 1, 400, 70.0),   # mean 60
               FakeResult("a", 1e-2, 0, 400, 80.0), FakeResult("a", 1e-2, 1, None, None),  # one seed failed
               FakeResult("b", 1e-3, 0, 400, 10.0)]
    picked = select_configurations(sweep, results)
    assert [(r["variant"], r["params"], r["rank"]) for r in picked] == [
        ("a", {"train.lr": 1e-2}, 1), ("a", {"train.lr": 1e-3}, 2), ("b", {"train.lr": 1e-3}, 1)]
    assert picked[1]["search_score"] == 60.0 and picked[1]["search_seeds"] == [0, 1]
    # a confirmation trial's Tune config resolves to the picked values with its fresh seed
    cfg = resolve_tune_config(sweep, {"point": {"variant": "a", "params": picked[0]["params"]}, "seed": 10,
                                      "stage": "confirm"})
    assert cfg.train.lr == 1e-2 and cfg.seed == 10
    with pytest.raises(PreflightError, match="variant 'b'"):
        select_configurations(sweep, results[:6])


def test_cli_unreachable_hub_is_one_line_then_the_preflight_names_what_is_missing(tmp_path):
    """Issue 16: online but the hub does not answer (HF_ENDPOINT on a closed port): one line, no retry
    storm, no download attempt, exit 2 before any compute naming the inputs."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "RAY_ADDRESS", "HF_DATASETS_OFFLINE")}
    env.update(MINARI_DATASETS_PATH=str(tmp_path / "minari"), HF_ENDPOINT=f"http://127.0.0.1:{port}",
               HF_HOME=str(tmp_path / "hf"), LAMO_RAY_HOME=str(tmp_path / "lamo"))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(REPO / "sweeps" / "kitchen.yaml"),
                           "--set", f"storage_path={tmp_path / 'results'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    unreachable = [ln for ln in proc.stdout.splitlines() if "cannot reach" in ln]
    assert len(unreachable) == 1 and f"127.0.0.1:{port}" in unreachable[0], proc.stdout
    assert "Retrying" not in proc.stdout + proc.stderr and "Downloading" not in proc.stdout
    assert "D4RL/kitchen/partial-v2" in proc.stderr and "hf download gpt2" in proc.stderr
    assert not (tmp_path / "results").exists() and not any((tmp_path / "minari").rglob("*.hdf5"))


def test_cli_offline_flag_fetches_nothing_and_asks_nothing(tmp_path):
    """--offline without HF_HUB_OFFLINE in the environment: the same as HF_HUB_OFFLINE=1 (no probe,
    no request: the hub endpoint is a closed port and nothing reports it unreachable)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "RAY_ADDRESS", "HF_DATASETS_OFFLINE")}
    env.update(MINARI_DATASETS_PATH=str(tmp_path / "minari"), HF_ENDPOINT=f"http://127.0.0.1:{port}",
               HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(REPO / "sweeps" / "kitchen_search.yaml"),
                           "--offline", "--set", f"storage_path={tmp_path / 'results'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "inputs: offline, not fetching 2 missing input(s)" in proc.stdout, proc.stdout[-2000:]
    assert "cannot reach" not in proc.stdout and "Offline (--offline / HF_HUB_OFFLINE=1)" in proc.stderr


def test_a_dashboard_port_taken_meanwhile_is_retried_on_another_port(monkeypatch):
    """Issue 30: two sweeps started together both probe 8265 as free; the second one's dashboard then
    fails to bind ("Failed to find a valid port for dashboard ...: address already in use"). The sweep
    retries on a fresh free port the OS picks instead of dying; another ray.init error is raised as it is."""
    from lamo_ray import tune_runtime as sweep   # the local Ray start lives there

    class FakeRay:
        def __init__(self, failures):
            self.failures, self.ports, self.shutdowns = failures, [], 0

        def init(self, **kwargs):
            self.ports.append(kwargs["dashboard_port"])
            if self.failures:
                raise Exception(self.failures.pop(0))   # noqa: TRY002 - what Ray raises
            return "ctx"

        def shutdown(self):
            self.shutdowns += 1

    asked = []
    monkeypatch.setattr(sweep, "_free_port", lambda preferred: asked.append(preferred) or 8265 + len(asked) - 1)
    busy = "Failed to find a valid port for dashboard after 0 retries: [Errno 98] address already in use"
    ray = FakeRay([busy])
    env = {}
    assert sweep._init_local_ray(ray, env, False) == "ctx"
    assert asked == [8265, 0] and ray.ports == [8265, 8266] and ray.shutdowns == 1
    assert env["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:8266"     # the workers follow the new port
    with pytest.raises(Exception, match="dashboard"):
        sweep._init_local_ray(FakeRay([busy] * sweep.DASHBOARD_ATTEMPTS), {}, False)
    other = FakeRay(["GCS failed to start"])
    with pytest.raises(Exception, match="GCS"):
        sweep._init_local_ray(other, {}, False)
    assert len(other.ports) == 1


def test_local_ray_starts_on_one_machine_wait_for_each_other(monkeypatch, tmp_path):
    """A second sweep's local Ray start (port probe + ray.init) waits until the first one's ray.init
    returned, so it probes after the first bound 8265 (before: both probed it free, and the loser's
    failed bind cost ~60 s before its retry). The lock lives in the temp folder, as on a real machine."""
    import threading

    from lamo_ray import tune_runtime

    monkeypatch.setattr(tune_runtime.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(tune_runtime, "_free_port", lambda preferred: 8265)
    first_in, release, order = threading.Event(), threading.Event(), []

    class SlowRay:
        def init(self, **kwargs):
            order.append("first starts")
            first_in.set()
            release.wait(10)
            order.append("first bound")
            return "first"

    class QuickRay:
        def init(self, **kwargs):
            order.append("second starts")
            return "second"

    first = threading.Thread(target=tune_runtime._init_local_ray, args=(SlowRay(), {}, False))
    first.start()
    assert first_in.wait(10)
    second = threading.Thread(target=tune_runtime._init_local_ray, args=(QuickRay(), {}, False))
    second.start()
    second.join(0.5)
    assert second.is_alive() and order == ["first starts"]     # waiting on the lock, not probing
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first starts", "first bound", "second starts"]
    assert (tmp_path / tune_runtime.START_LOCK).exists()


def test_asha_stops_the_clearly_worse_trials_at_its_rungs_and_fifo_stops_none(tmp_path):
    """Issue 30: the scheduler the sweep hands Tune (`tune_scheduler`, used by every stage) stops trials.
    Eight trials report their evaluation at ASHA's first rung, best first (scores 80, 70, ..., 10). With
    reduction factor 2 a trial below the median of the scores already recorded at the rung is stopped:
    all but the best. Then the best passes the second rung and runs to the end. FIFO stops none. Before:
    no default test failed if the ASHA scheduler was replaced by FIFO."""
    from ray.tune.schedulers import TrialScheduler

    from lamo_ray.tune_runtime import tune_scheduler

    path = sweep_file(tmp_path, seeds=list(range(8)),
                      scheduler={"type": "asha", "grace_period": 100, "reduction_factor": 2})
    raw = yaml.safe_load(path.read_text())
    raw["base"]["train"] = {"steps": 400}
    path.write_text(yaml.safe_dump(raw))
    sweep = load_sweep(path)
    rows = expand_trials(sweep)
    assert sweep.scheduler.rungs(400) == [100, 200, 400]

    class Trial:
        def __init__(self, i):
            self.trial_id = f"t{i}"

    def decisions(scheduler, at_step, scores, trials):
        scheduler.set_search_properties(sweep.scheduler.metric, sweep.scheduler.mode)
        for t in trials:
            if t.trial_id not in getattr(scheduler, "_trial_info", {t.trial_id: None}):
                scheduler.on_trial_add(None, t)
        return [scheduler.on_trial_result(None, t, {"step": at_step, sweep.scheduler.metric: s})
                for t, s in zip(trials, scores)]

    trials = [Trial(i) for i in range(8)]
    scores = [80.0 - 10 * i for i in range(8)]
    asha = tune_scheduler(sweep, rows, "asha")
    first = decisions(asha, 100, scores, trials)
    assert first == [TrialScheduler.CONTINUE] + [TrialScheduler.STOP] * 7
    assert decisions(asha, 200, [85.0], trials[:1]) == [TrialScheduler.CONTINUE]        # the best goes on
    fifo = tune_scheduler(sweep, rows, "fifo")
    assert set(decisions(fifo, 100, scores, trials)) == {TrialScheduler.CONTINUE}
