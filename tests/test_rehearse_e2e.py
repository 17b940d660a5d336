"""``python -m lamo_ray.sweep SWEEP.yaml --rehearse`` end to end (issue 32), in a subprocess as a user runs it.

- sweeps/online.yaml (paper scale) shrunk to CPU sizes with ``--set`` (one task, a 1-layer 32-wide model,
  2 seeds), with ``--rehearse-standin`` for its missing inputs (D4RL's maze2d data, WikiText): every
  shape passes through the real trial entry point (offline steps, a checkpoint and the resume from it,
  evaluations, an online iteration with its critic updates), is listed with its measurements, and the
  projection in MLflow's ``rehearsal.json`` is the arithmetic of the trials' planned steps x the measured
  times (`lamo_ray.rehearse.trial_seconds`, `pack`).
- The same with a deliberately broken TD3 critic update (tests/rehearsal_fault/sitecustomize.py, in
  every process of the rehearsal): exit 1, the shape and the stage it failed in named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lamo_ray.config import load_sweep
from lamo_ray.rehearse import Measured, pack, trial_seconds, trial_shapes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "online.yaml"
SHRINK = ["task=maze2d_umaze", "seeds=[0,1]", "model.n_layer=1", "model.n_embd=32", "model.n_head=1",
          "variants.lamo_td3.model.pretrained=false", "variants.lamo_td3.model.n_layer=1",
          "variants.lamo_td3.model.n_embd=32", "variants.lamo_td3.model.n_head=1", "train.batch_size=16",
          "eval.episodes=2", "eval.num_actors=1", "eval.envs_per_actor=2", "online.num_actors=1",
          "language.batch_size=1"]


def rehearse(tmp: Path, extra: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", HF_HUB_OFFLINE="1",
               MINARI_DATASETS_PATH=str(tmp / "minari"), **(env_extra or {}))
    env.pop("RAY_ADDRESS", None)
    args = [a for s in [*SHRINK, f"storage_path={tmp / 'ray'}", *extra] for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(SWEEP), "--rehearse", "--rehearse-standin",
                           *args], env=env, cwd=tmp, capture_output=True, text=True, timeout=1200)


def rehearsal_run(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("online")
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.`lamo_ray.role` = 'rehearsal'")
    path = client.download_artifacts(run.info.run_id, "rehearsal.json", str(tmp))
    return client, run, json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rehearse")
    return tmp, rehearse(tmp, [])


def test_every_shape_of_the_shrunk_online_sweep_passes_with_its_stand_ins(rehearsed):
    tmp, proc = rehearsed
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    out = proc.stdout
    for variant in ("odt", "td3_odt", "td3", "lamo_td3"):
        assert f"[PASS] {variant} (2 trials)" in out     # one task (--set task=...): the variant is the shape
    assert "STAND-IN dataset for D4RL/pointmaze/umaze-v2" in out and "STAND-IN corpus for wikitext-103-raw-v1" in out
    assert "rehearsal: 4 of 4 shape(s) passed" in out and "projection (every trial to its end" in out
    client, run, report = rehearsal_run(tmp)
    assert run.info.status == "FINISHED"
    for name, shape in report["shapes"].items():
        assert shape["passed"] and shape["resumed_from_step"] == 7, name      # stopped after step 7, resumed
        m = shape["measured"]
        assert m["step_s"] > 0 and m["eval_s"] > 0 and m["update_s"] > 0 and m["transition_s"] > 0, name
        assert m["timed_steps"] >= 10 and m["peak_rss_mb"] > 100, name
        # one online iteration ran (logged by the iteration and by its evaluation, at one step)
        iterations = {(m.step, m.value) for m in client.get_metric_history(shape["run_id"], "online/iteration")}
        assert len(iterations) == 1 and next(iter(iterations))[1] == 1.0, name


def test_the_projection_is_the_planned_steps_times_the_measured_times(rehearsed):
    """The same sum from the measurements as logged: equal to float precision (it is the same arithmetic,
    over the real trials' configs, not the rehearsal's)."""
    tmp, proc = rehearsed
    assert proc.returncode == 0, proc.stdout[-2000:]
    _, run, report = rehearsal_run(tmp)
    sweep = load_sweep(SWEEP, [*SHRINK, f"storage_path={tmp / 'ray'}"])
    shapes = trial_shapes(sweep, sweep.trials)
    seconds = []
    for shape in shapes:
        m = Measured(**report["shapes"][shape.name]["measured"])
        seconds += [sum(trial_seconds(r["config"], m).values()) for r in shape.rows]
    projection = report["projection"]
    assert projection["trials"] == len(sweep.trials) == 8
    assert projection["wall_s"] == pytest.approx(pack(seconds, projection["concurrency"]), rel=1e-9)
    assert run.data.metrics["projection/wall_h"] == pytest.approx(projection["wall_s"] / 3600, rel=1e-9)
    # a real trial is 40k offline steps and 875 online iterations: hours, not the rehearsal's minutes
    assert projection["wall_s"] > 3600


def test_a_broken_critic_update_fails_the_rehearsal_naming_the_shape_and_stage(tmp_path):
    proc = rehearse(tmp_path, ["variants={td3_odt: {online: {method: td3_odt}}}", "report_baseline=td3_odt"],
                    {"PYTHONPATH": str(REPO / "tests" / "rehearsal_fault"), "LAMO_RAY_TEST_BREAK_CRITIC": "1"})
    assert proc.returncode == 1, (proc.stdout[-4000:], proc.stderr[-4000:])
    assert ("[FAIL] td3_odt (2 trials): failed in stage 'offline steps': RuntimeError: "
            "deliberately broken critic update") in proc.stdout
    assert "rehearsal: 0 of 1 shape(s) passed" in proc.stdout and "projection (" not in proc.stdout
    _, run, report = rehearsal_run(tmp_path)
    assert run.info.status == "FAILED" and report["projection"] is None


# --------------------------------------------------------------------------- continual: L2M's data not downloaded

CW10 = REPO / "sweeps" / "l2m_cw10.yaml"
CW10_SHRINK = ["data.source=/nonexistent/meta-world/2M/{task}-v2.npz",
               "continual.sources.dmcontrol=/nonexistent/dm_control/{task_underscored}.npz",
               "continual.pretrain_tasks=[reach, cartpole-balance]", "continual.tasks=[hammer, push-wall]",
               "continual.pool.size=4", "seeds=[42]", "model.n_layer=1", "model.n_embd=32", "model.n_head=1",
               "train.batch_size=8", "eval.num_actors=1",
               "variants={l2m: {continual: {method: l2m}}, ewc: {continual: {method: ewc}}}"]


def test_a_continual_sweep_rehearses_on_stand_ins_for_its_missing_task_data(tmp_path):
    """sweeps/l2m_cw10.yaml shrunk (one Meta-World and one DMControl pre-training task, two CW10 tasks, a
    1-layer model, two of its methods), reading L2M's ``.npz`` files, which are not on this machine: with
    ``--rehearse-standin`` each task's data is a stand-in in its env's shapes and episode length (Meta-World
    200 steps, DMControl 1000), the continual trials read them from the object store, and both shapes pass
    pre-training, the stages' starts (pool attach, EWC's anchor), their steps and evaluations, and the
    resume. Before: exit 2, "a continual trial's data has no stand-in"."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", HF_HUB_OFFLINE="1",
               MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    env.pop("RAY_ADDRESS", None)
    args = [a for s in [*CW10_SHRINK, f"storage_path={tmp_path / 'ray'}"] for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(CW10), "--rehearse", "--rehearse-standin", *args],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    out = proc.stdout
    for source, steps, obs in (("/nonexistent/meta-world/2M/hammer-v2.npz", 200, "(39,)"),
                               ("/nonexistent/dm_control/cartpole_balance.npz", 1000, None)):
        line = next(x for x in out.splitlines() if x.startswith(f"STAND-IN dataset for {source}:"))
        assert f"random trajectories of {steps} steps" in line and (obs is None or f"obs {obs}" in line), line
    assert "[PASS] l2m (1 trials)" in out and "[PASS] ewc (1 trials)" in out, out[-3000:]
    assert "rehearsal: 2 of 2 shape(s) passed" in out
    # pre-training, the deliberate stop after its checkpoint, the restart resuming at the first stage, then
    # both stages (each one's start: the pool attached, EWC's anchor); the measurements split pre-training
    # and stage steps, and the projection is of the two real trials
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("l2m_cw10")
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.`lamo_ray.role` = 'rehearsal'")
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "rehearsal.json", str(tmp_path))).read_text())
    for name in ("l2m", "ewc"):
        shape = report["shapes"][name]
        stages = [m.value for m in client.get_metric_history(shape["run_id"], "continual/stage")]
        assert set(stages) == {-1.0, 0.0, 1.0}, (name, stages)
        assert shape["measured"]["stage_step_s"] > 0 and shape["measured"]["step_s"] > 0
    assert report["projection"]["trials"] == 2 and report["projection"]["wall_s"] > 0

