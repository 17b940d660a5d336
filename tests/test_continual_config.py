"""A trial's continual: section (issue 19): the data template, what it excludes, its step count, the
sources it reads, and the preflight check of every task's data against the shared sizes."""

import pytest

from lamo_ray.config import ConfigError, validate_trial

CONTINUAL = {"pretrain_tasks": ["reach", "push"], "tasks": ["hammer", "push-wall"], "steps_per_task": 50,
             "eval_every": 25, "eval_tasks": ["hammer", "push-wall", "window-close"], "method": "l2m"}


def trial(source="lamo/metaworld/{task}-v0", **extra):
    raw = {"data": {"source": source, "context_length": 5, "rtg_scale": 200, "max_ep_len": 200},
           "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1, "finetune": "full"},
           "train": {"steps": 100}, "continual": CONTINUAL}
    raw.update(extra)
    return raw


def test_sources_steps_and_the_template():
    cfg = validate_trial(trial())
    assert cfg.data_sources == {t: f"lamo/metaworld/{t}-v0" for t in ["reach", "push", "hammer", "push-wall",
                                                                      "window-close"]}
    assert cfg.total_steps == 100 + 2 * 50 and cfg.continual_steps == 100
    with pytest.raises(ConfigError, match=r"data.source must be a template with \{task\}"):
        validate_trial(trial(source="lamo/metaworld/hammer-v0"))
    with pytest.raises(ConfigError, match=r"placeholder, which only a continual: section fills"):
        validate_trial({"data": {"source": "lamo/metaworld/{task}-v0"}})
    with pytest.raises(ConfigError, match="at most one"):
        validate_trial(trial(online={"method": "td3_odt", "iterations": 1, "target_return": 1.0}))
    with pytest.raises(ConfigError, match="continual: model.finetune 'lora' is not an MDDT pre-training mode"):
        validate_trial(trial(model={"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1, "finetune": "lora"}))
    with pytest.raises(ConfigError, match="did you mean 'hammer'"):
        validate_trial(trial(continual={**CONTINUAL, "tasks": ["hamer"]}))


def test_preflight_checks_each_tasks_data_against_the_shared_sizes(tmp_path, monkeypatch):
    from lamo_ray.domains.metaworld.collect import collect_metaworld
    from lamo_ray.data.trajectories import DatasetSummary
    from lamo_ray.preflight import check_continual, check_datasets

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for task in ("reach", "push", "hammer", "push-wall", "window-close"):
        collect_metaworld(task, episodes=1, ref_episodes=1)
    ok, narrow = validate_trial(trial()), validate_trial(trial(continual={**CONTINUAL, "mddt": {"state_dim": 20}}))
    checks, datasets = check_datasets([ok, narrow], generate=False)
    assert all(c.ok for c in checks) and len(datasets) == 5
    # sources only continual trials use are kept as summaries (the trials read the data themselves)
    assert all(isinstance(ds, DatasetSummary) for ds in datasets.values())
    assert datasets["lamo/metaworld/hammer-v0"].num_transitions == 200
    results = check_continual([ok, narrow], datasets)
    assert sum(c.ok for c in results) == 5
    bad = [c for c in results if not c.ok]
    assert len(bad) == 5 and "continual.mddt.state_dim 20" in bad[0].detail and "state 39" in bad[0].detail
    # the default target ('expert') needs each dataset's recorded expert return; 'data_max' does not
    datasets["lamo/metaworld/hammer-v0"].ref_max_score = None
    bad = [c for c in check_continual([ok], datasets) if not c.ok]
    assert len(bad) == 1 and "hammer" in bad[0].detail and "set continual.target_return: data_max" in bad[0].detail
    by_max = validate_trial(trial(continual={**CONTINUAL, "target_return": "data_max"}))
    assert all(c.ok for c in check_continual([by_max], datasets))


def test_paper_scale_l2m_sweep_dry_run(tmp_path):
    """sweeps/l2m_cw10.yaml: MT40 + DMC10 pre-training and CW10, 10 methods x 3 seeds, every task's data
    listed, one rollout actor per CW10 task in the resource plan, LaMo's GPT-2 trunk as a variant."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lamo_ray.config import expand_trials, load_sweep
    from lamo_ray.domains.metaworld import CW10, all_tasks

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HOME=str(tmp_path), HF_HUB_OFFLINE="1", MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(repo / "sweeps" / "l2m_cw10.yaml"), "--dry-run"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "30 trials (10 variants x 1 grid points x 3 seeds)" in proc.stdout
    listed = [line for line in proc.stdout.splitlines() if "[ok] dataset   lamo/metaworld/" in line]
    assert len(listed) == len(all_tasks()) == 50
    dmc = [line for line in proc.stdout.splitlines() if "[ok] dataset   lamo/dmcontrol/" in line]
    assert len(dmc) == 10 and all("generated on first run" in line for line in dmc)
    # the ten tasks share eval.num_actors (2) rollout actors
    assert "2 rollout actor(s) x 0 CPU / 0 GPU (evaluated tasks shared between them)" in proc.stdout
    trials = expand_trials(load_sweep(repo / "sweeps" / "l2m_cw10.yaml"))
    cfg = trials[0]["config"]
    assert cfg.continual.tasks == list(CW10) and not set(cfg.continual.pretrain_tasks) & set(CW10)
    assert len(cfg.continual.pretrain_tasks) == 50 and cfg.continual.pretrain_mixing == "domain"
    assert (cfg.rtg_scale_of("hammer"), cfg.rtg_scale_of("walker-run")) == (200.0, 100.0)
    assert cfg.total_steps == 500_000 + 10 * 100_000     # optimiser steps: pre-training's of 2 micro-batches
    trunks = {(t["config"].model.backbone, t["config"].model.n_layer, t["config"].model.n_embd)
              for t in trials if t["config"].model.pretrained}
    assert trunks == {("gpt2", 6, None)}


def test_paper_scale_l2m_sweep_on_l2ms_own_data_lists_every_file_with_its_hub_url(tmp_path):
    """l2m_cw10.yaml with the header's --set lines: 50 files of ml-jku/meta-world missing offline,
    each listed with its URL; missing-but-downloadable inputs do not fail the dry run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HOME=str(tmp_path), HF_HUB_OFFLINE="1", MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(repo / "sweeps" / "l2m_cw10.yaml"), "--dry-run",
                           "--set", "data.source=~/data/meta-world/2M/{task}-v2.npz",
                           "--set", "continual.sources.dmcontrol=~/data/dm_control/{task_underscored}.npz",
                           "--set", "continual.target_return=data_max"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    missing = [line for line in proc.stdout.splitlines() if "[MISSING] dataset   ~/data/meta-world/2M/" in line]
    assert len(missing) == 50
    assert any("https://huggingface.co/datasets/ml-jku/meta-world/resolve/main/2M/hammer-v2.npz" in line
               for line in missing)
    dmc = [line for line in proc.stdout.splitlines() if "[MISSING] dataset   ~/data/dm_control/" in line]
    assert len(dmc) == 10
    assert any("https://huggingface.co/datasets/ml-jku/dm_control/resolve/main/1M/point_mass_easy.npz" in line
               for line in dmc)
    assert not list(tmp_path.glob("minari/**/*.hdf5"))      # nothing generated instead


def test_multi_domain_pretraining_sources_scales_and_what_is_refused():
    """L2M's mix: Meta-World and DMControl tasks in one pre-training, each domain with its own data
    template and return scale; DMControl has no success flag, so it cannot be in the scored sequence."""
    both = {**CONTINUAL, "pretrain_tasks": ["reach", "cartpole-balance", "walker-run"],
            "sources": {"dmcontrol": "~/data/dm_control/{task_underscored}.npz"}, "rtg_scales": {"dmcontrol": 100}}
    raw = trial(continual=both)
    raw["data"]["max_ep_len"] = 1000
    cfg = validate_trial(raw)
    assert cfg.data_sources["cartpole-balance"] == "~/data/dm_control/cartpole_balance.npz"
    assert cfg.data_sources["reach"] == "lamo/metaworld/reach-v0"
    assert (cfg.rtg_scale_of("walker-run"), cfg.rtg_scale_of("hammer")) == (100.0, 200.0)
    assert validate_trial({**raw, "continual": {**both, "pretrain_tasks": ["mt40", "dmc10"]}}).continual.pretrain_tasks[-10:] \
        == ["cartpole-balance", "finger-turn_easy", "finger-turn_hard", "fish-upright", "hopper-stand",
            "pendulum-swingup", "point_mass-easy", "reacher-hard", "walker-stand", "walker-run"]
    with pytest.raises(ConfigError, match="data.max_ep_len 200: DMControl episodes have 1000 steps"):
        validate_trial(trial(continual=both))
    with pytest.raises(ConfigError, match=r"continual.tasks: \['walker-run'\] are DMControl tasks, which have no "
                                          "success flag"):
        validate_trial({**raw, "continual": {**both, "tasks": ["hammer", "walker-run"]}})
    with pytest.raises(ConfigError, match="unknown task 'cartpole-balanse', neither Meta-World's nor DMControl's; "
                                          "did you mean 'cartpole-balance'"):
        validate_trial({**raw, "continual": {**both, "pretrain_tasks": ["cartpole-balanse"]}})
    with pytest.raises(ConfigError, match="continual.sources: unknown domain 'atari'"):
        validate_trial({**raw, "continual": {**both, "sources": {"atari": "x/{task}"}}})
    with pytest.raises(ConfigError, match=r"continual.sources.dmcontrol: 'x.npz' has no \{task\} or "
                                          r"\{task_underscored\} placeholder"):
        validate_trial({**raw, "continual": {**both, "sources": {"dmcontrol": "x.npz"}}})
    with pytest.raises(ConfigError, match="continual.rtg_scales.dmcontrol: must be > 0"):
        validate_trial({**raw, "continual": {**both, "rtg_scales": {"dmcontrol": 0}}})


def write_d4rl(path, obs_dim, act_dim, n=400, episode=200):
    """A D4RL-format HDF5 file of ``n`` steps in episodes of ``episode`` steps (timeouts)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[episode - 1::episode] = True
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
        f["rewards"] = rng.uniform(0, 1, n).astype(np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = timeouts


def test_pretraining_takes_datasets_of_the_projects_other_domains(tmp_path):
    """continual.pretrain_datasets: MuJoCo / Kitchen / PointMaze data beside Meta-World in one
    pre-training, each at its domain's return scale; preflight refuses one wider than the shared space."""
    from lamo_ray.preflight import check_continual, check_datasets

    hopper, walker = str(tmp_path / "hopper-medium-v2.hdf5"), str(tmp_path / "walker2d-medium-v2.hdf5")
    write_d4rl(hopper, 11, 3)
    write_d4rl(walker, 17, 6)
    raw = trial(continual={**CONTINUAL, "pretrain_datasets": [hopper, walker], "rtg_scales": {"mujoco": 500}})
    raw["data"]["max_ep_len"] = 1000
    cfg = validate_trial(raw)
    assert cfg.data_sources[hopper] == hopper and cfg.continual.pretrain_sources == ["reach", "push", hopper, walker]
    assert (cfg.rtg_scale_of(hopper), cfg.rtg_scale_of("reach")) == (500.0, 200.0)
    del raw["continual"]["rtg_scales"]
    assert validate_trial(raw).rtg_scale_of(walker) == 1000.0          # MuJoCo's evaluation scale (LaMo)
    narrow = validate_trial({**raw, "continual": {**raw["continual"], "mddt": {"action_dim": 4}}})
    _, datasets = check_datasets([narrow], generate=False)
    results = {c.name.split(": ", 1)[0]: c for c in check_continual([narrow], {k: v for k, v in datasets.items()
                                                                             if k in (hopper, walker)})}
    assert results[hopper].ok
    assert not results[walker].ok and "action 6 dimensions, above continual.mddt.state_dim 204 / action_dim 4" \
        in results[walker].detail
    with pytest.raises(ConfigError, match="data.max_ep_len 200: continual.pretrain_datasets .*hopper-medium-v2.hdf5' has "
                                          "episodes of up to 1000 steps"):
        validate_trial(trial(continual={**CONTINUAL, "pretrain_datasets": [hopper]}))
    with pytest.raises(ConfigError, match="no domain serves 'someone/else-v0'"):
        validate_trial({**raw, "continual": {**CONTINUAL, "pretrain_datasets": ["someone/else-v0"]}})
    with pytest.raises(ConfigError, match="is one dataset, not a template"):
        validate_trial({**raw, "continual": {**CONTINUAL, "pretrain_datasets": ["lamo/mujoco/{task}-v0"]}})


def test_eval_episodes_in_a_continual_trial_is_refused_naming_the_key_it_means():
    """Issue 29: a continual trial evaluates each task with continual.eval_episodes; eval.episodes was
    silently ignored there. Now it is an error naming both keys, before any compute."""
    from lamo_ray.config import ConfigError, validate_trial

    base = {"data": {"source": "lamo/metaworld/{task}-v0", "context_length": 1, "rtg_scale": 200, "max_ep_len": 200},
            "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1, "finetune": "full"},
            "continual": {"pretrain_tasks": ["reach"], "tasks": ["hammer"], "steps_per_task": 4, "eval_every": 2,
                          "eval_episodes": 3, "method": "l2m"}}
    assert validate_trial(base).continual.eval_episodes == 3
    with pytest.raises((ConfigError, ValueError), match=r"eval.episodes 7.*continual.eval_episodes \(3\)"):
        validate_trial({**base, "eval": {"episodes": 7}})
