"""``--rehearse`` without Ray (issue 32): which trial shapes a paper-scale sweep has, what a shape's rehearsal
config changes (step counts and stand-ins only), how the measurements are read (warm-up and post-evaluation
steps left out, an evaluation that starts the rollout actors told apart), and that the projection is the
arithmetic of planned steps x measured times (exactly: no tolerance is needed, it is the same sum)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lamo_ray.config import load_sweep
from lamo_ray.preflight import trial_cpus, trial_gpus
from lamo_ray.rehearse import (TIMED_STEPS, WARMUP_STEPS, Measured, first_evaluations, pack, project,
                               rehearsal_config, timed_steps, trial_seconds, trial_shapes, warm_evaluations)

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
N = WARMUP_STEPS + TIMED_STEPS


@pytest.mark.parametrize("name, shapes, trials_each", [
    ("mujoco", ["lamo · hopper", "lamo · walker2d", "lamo · halfcheetah", "dt · hopper", "dt · walker2d",
                "dt · halfcheetah"], 12),                  # 3 seeds x 4 sample ratios collapse
    ("atari", ["lamo · breakout", "lamo · qbert", "lamo · pong", "dt · breakout", "dt · qbert", "dt · pong"], 3),
    ("l2m_cw10", ["l2m", "l2m_oracle", "lora", "ft", "ewc", "l2", "l2p", "joint", "single", "lamo_trunk"], 3),
])
def test_a_paper_sweep_has_one_shape_per_variant_and_task(name, shapes, trials_each):
    sweep = load_sweep(SWEEPS / f"{name}.yaml", [])
    found = trial_shapes(sweep, sweep.trials)
    assert [s.name for s in found] == shapes
    assert all(len(s.rows) == trials_each for s in found)
    assert sum(len(s.rows) for s in found) == len(sweep.trials)


def test_kitchen_shapes_collapse_the_sample_ratio_inside_a_swept_data_section():
    """kitchen.yaml sweeps whole data sections (source and sample ratio together): the ratio is no shape."""
    sweep = load_sweep(SWEEPS / "kitchen.yaml", [])
    found = trial_shapes(sweep, sweep.trials)
    assert len(found) == 2 * len(sweep.variants)
    assert {s.name.split(" · ")[1] for s in found} == {"D4RL/kitchen/partial-v2", "D4RL/kitchen/complete-v2"}
    assert all(len({r["config"].data.sample_ratio for r in s.rows}) == 2 for s in found)


def test_search_points_collapse_onto_the_first_trial_of_the_shape():
    sweep = load_sweep(SWEEPS / "kitchen_search.yaml", [])
    found = trial_shapes(sweep, sweep.trials)
    assert [s.name for s in found] == list(sweep.variants)
    for shape in found:   # the Tune point holds concrete values (the config's), not the domains
        assert not any(isinstance(v, dict) for v in shape.params.values())
        assert shape.params["train.lr"] == shape.config.train.lr


def _differences(a, b, prefix=""):
    out = {}
    for key in set(a) | set(b):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out


@pytest.mark.parametrize("name, task, changed", [
    ("mujoco", "hopper", {"train.steps", "train.eval_every", "train.log_every", "train.max_failures",
                          "train.warmup_steps", "eval.target_returns"}),
    ("online", "maze2d_umaze", {"train.steps", "train.eval_every", "train.log_every", "train.max_failures",
                                "train.warmup_steps", "online.iterations", "online.transitions_per_iteration",
                                "online.eval_every", "online.updates_per_iteration"}),
    ("l2m_cw10", None, {"train.steps", "train.eval_every", "train.log_every", "train.max_failures",
                        "train.warmup_steps", "continual.steps_per_task", "continual.eval_every"}),
])
def test_a_rehearsal_changes_step_counts_only(name, task, changed):
    """The model, the data, the stages, the actors and the precision are the shape's own."""
    sweep = load_sweep(SWEEPS / f"{name}.yaml", [f"task={task}"] if task else [])
    cfg = sweep.trials[0]["config"]
    shrunk = rehearsal_config(cfg)
    assert set(_differences(cfg.model_dump(), shrunk.model_dump())) <= changed
    assert shrunk.train.log_every == 1 and shrunk.train.max_failures >= 1
    if cfg.continual is None:
        assert (shrunk.train.steps, shrunk.train.eval_every) == (3 * N, N)
        assert shrunk.eval.target_returns == cfg.eval.target_returns[:1] and shrunk.eval.episodes == cfg.eval.episodes
    else:
        assert shrunk.continual.tasks == cfg.continual.tasks and shrunk.continual.steps_per_task == N
    if cfg.online is not None:
        assert shrunk.online.iterations == 1 and shrunk.online.method == cfg.online.method
        assert shrunk.online.rl_coeff == cfg.online.rl_coeff   # a derived default stays derived


def test_stand_ins_are_only_the_backbone_weights_and_the_corpus():
    sweep = load_sweep(SWEEPS / "online.yaml", ["task=maze2d_umaze"])
    cfg = next(r["config"] for r in sweep.trials if r["variant"] == "lamo_td3")
    assert cfg.model.pretrained and cfg.language.co_lambda > 0
    shrunk = rehearsal_config(cfg, standin_backbones=["gpt2"], standin_corpora={cfg.language.corpus: "/x/corpus.txt"})
    assert set(_differences(rehearsal_config(cfg).model_dump(), shrunk.model_dump())) == {"model.pretrained",
                                                                                          "language.corpus"}
    assert not shrunk.model.pretrained and shrunk.language.corpus == "/x/corpus.txt"


def test_timed_steps_leave_out_each_process_warm_up_and_the_step_after_an_evaluation():
    step_s = {s: 1.0 + s / 100 for s in range(1, 3 * N + 1)}
    step_s[N + 1] = step_s[2 * N + 1] = 50.0        # their logged windows hold an evaluation
    timed = timed_steps(step_s, restarts=[N], evaluated=[N, 2 * N])
    expected = [1.0 + s / 100 for s in range(1, 3 * N + 1)
                if s not in (1, 2, N + 1, N + 2, 2 * N + 1)]   # warm-up of both processes, post-evaluation
    assert timed == expected and 50.0 not in timed
    evals = {N: 9.0, 2 * N: 8.0, 3 * N: 1.0}        # the first of each process starts the rollout actors
    assert sorted(first_evaluations(evals, [N])) == [8.0, 9.0] and warm_evaluations(evals, [N]) == [1.0]
    assert warm_evaluations({N: 9.0}, []) == [9.0]  # no warm one: all of them


def test_packing_runs_the_trials_in_order_on_the_first_free_slot():
    """As Tune's FIFO queue: 5|4, then 3 on the slot free at 4 (7), 3 at 5 (8), 3 at 7 (10) -> 10, although
    9 (5+4 | 3+3+3) was possible: the projection is of the queue, not of the best packing."""
    assert pack([5, 4, 3, 3, 3], 2) == 10 and pack([5, 4, 3, 3, 3], 1) == 18 and pack([2.0], 4) == 2.0


def test_the_projection_is_planned_steps_times_measured_times():
    """Every term by hand for an offline+online trial and a continual trial; the sweep's CPU/GPU-hours
    are the trials' seconds x their requests, its wall time the packing of all trials (confirmation too)."""
    online = load_sweep(SWEEPS / "online.yaml", ["task=maze2d_umaze"])
    cfg = online.trials[0]["config"]
    m = Measured(step_s=0.5, eval_s=20.0, first_eval_s=30.0, update_s=0.25, transition_s=0.01, setup_s=12.0)
    o = cfg.online
    n_evals = (math.ceil(cfg.train.steps / cfg.train.eval_every)) + math.ceil(o.iterations / o.eval_every)
    expected = {"setup": 12.0, "offline steps": cfg.train.steps * 0.5,
                "online updates": o.iterations * o.updates_per_iteration * 0.25,
                "online collection": o.iterations * o.transitions_per_iteration * 0.01,
                "evaluations": n_evals * len(cfg.eval.target_returns) * 20.0 + (30.0 - 20.0)}
    assert trial_seconds(cfg, m) == pytest.approx(expected, rel=1e-12)
    # a rehearsal policy that fell after 250 of the cap's 1000 steps: evaluations projected at full length
    short = Measured(**{**m.__dict__, "eval_length": 250.0, "episode_limit": 1000})
    assert trial_seconds(cfg, short)["evaluations"] == pytest.approx(
        n_evals * len(cfg.eval.target_returns) * 20.0 * 4 + (30.0 - 20.0), rel=1e-12)

    cw = load_sweep(SWEEPS / "l2m_cw10.yaml", [])
    ccfg = cw.trials[0]["config"]
    c = ccfg.continual
    mc = Measured(step_s=0.2, stage_step_s=0.3, eval_s=40.0, first_eval_s=40.0, setup_s=5.0)
    assert trial_seconds(ccfg, mc) == pytest.approx({
        "setup": 5.0, "pre-training steps": ccfg.train.steps * 0.2,
        "continual stage steps": len(c.tasks) * c.steps_per_task * 0.3,
        "evaluations": (1 + len(c.tasks) * math.ceil(c.steps_per_task / c.eval_every)) * 40.0}, rel=1e-12)

    shapes = trial_shapes(online, online.trials)
    measured = {s.name: m for s in shapes}
    p = project(online, shapes, measured, concurrency=3)
    seconds = [sum(trial_seconds(r["config"], m).values()) for r in online.trials]
    assert p.trials == len(online.trials) and p.wall_s == pytest.approx(pack(seconds, 3))
    assert p.cpu_hours == pytest.approx(sum(s * trial_cpus(online, r["config"]) for s, r in zip(seconds, online.trials))
                                        / 3600)
    assert p.gpu_hours == pytest.approx(sum(s * trial_gpus(r["config"]) for s, r in zip(seconds, online.trials)) / 3600)


def test_a_confirmation_stage_adds_its_trials_at_their_variant_s_longest_shape():
    sweep = load_sweep(SWEEPS / "reacher_search.yaml", [])
    shapes = trial_shapes(sweep, sweep.trials)
    m = Measured(step_s=0.1, eval_s=2.0, setup_s=1.0)
    p = project(sweep, shapes, {s.name: m for s in shapes}, concurrency=1)
    confirm = sweep.confirm.top_k * len(sweep.confirm.seeds) * len(sweep.variants)
    assert p.trials == len(sweep.trials) * sweep.num_samples + confirm


def test_a_shape_that_was_not_measured_has_no_projection():
    sweep = load_sweep(SWEEPS / "mujoco.yaml", [])
    with pytest.raises(ValueError, match="no measured offline step"):
        trial_seconds(sweep.trials[0]["config"], Measured(eval_s=1.0))


def test_a_standin_dataset_has_the_env_s_shapes_and_the_episode_length():
    """No data: random trajectories shaped as the evaluation env's observations and actions, data.max_ep_len
    steps each (PointMaze's 6-number state here, as the model sees it), never more than the rehearsal needs."""
    from lamo_ray.rehearsal_run import STANDIN_TRAJECTORIES, standin_dataset

    sweep = load_sweep(SWEEPS / "online.yaml", ["task=maze2d_umaze"])
    cfg = sweep.trials[0]["config"]
    ds = standin_dataset(cfg, cfg.data.source)
    assert ds.obs_shape == (6,) and ds.act_dim == 2 and not ds.discrete_actions
    assert len(ds.trajectories) == STANDIN_TRAJECTORIES
    assert all(t.length == cfg.data.max_ep_len for t in ds.trajectories)
    assert all(t.observations.dtype == np.float32 and t.actions.shape == (cfg.data.max_ep_len, 2)
               for t in ds.trajectories)
    assert ds.source.startswith("stand-in for ")
    with pytest.raises(ValueError, match="eval.env_id is not set"):
        standin_dataset(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"env_id": None})}), "x")
