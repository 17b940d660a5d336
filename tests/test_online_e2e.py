"""A short online sweep end to end (issue 18): ODT and TD3+ODT trials pre-train offline on PointMaze
data collected here, then fine-tune online with rollout actors; MLflow holds the online curves
against ``online/transitions``; the report scores the trials over their online updates; an online
trial whose process is killed resumes from its checkpoint (replay and critic included) and ends
with the same number of online transitions as the uninterrupted run."""

import os
import subprocess
import sys
import time

import pytest
from mlflow_runs import trial_histories
from test_faults import kill_training_when, start_sweep, trial_runs

pytestmark = pytest.mark.slow

ITERATIONS, UPDATES, BUDGET, OFFLINE = 4, 4, 300, 20
BASE = {
    "data": {"source": "test/pointmaze/tiny-v0", "rtg_scale": 1, "context_length": 2, "max_ep_len": 1000},
    "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1,
              "finetune": "full", "embedding": "linear"},
    "train": {"steps": OFFLINE, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, "eval_every": OFFLINE,
              "log_every": 10, "cpus_per_worker": 0.49},
    "eval": {"target_returns": [60], "episodes": 2, "num_actors": 1, "envs_per_actor": 2},
    "online": {"method": "td3_odt", "iterations": ITERATIONS, "transitions_per_iteration": BUDGET,
               "updates_per_iteration": UPDATES, "replay_size": 30, "target_return": 60, "eval_every": 2,
               "num_actors": 1, "envs_per_actor": 1},
}
VARIANTS = {"td3_odt": {}, "odt": {"model": {"action_head": "tanh_gaussian"}, "online": {"method": "odt"}}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("online")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "minari"), HF_HUB_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, "-m", "lamo_ray.collect", "pointmaze", "--maze", "umaze", "--dataset-id",
                    "test/pointmaze/tiny-v0", "--steps", "3600", "--ref-episodes", "3"], env=env, cwd=tmp,
                   check=True, capture_output=True, timeout=300)
    return tmp, env


@pytest.fixture(scope="module")
def online_sweep(workdir):
    tmp, env = workdir
    proc, uri = start_sweep(tmp, env, "online", {"name": "online", "base": BASE, "variants": VARIANTS,
                                                 "scheduler": {"type": "fifo"}, "report_baseline": "odt"})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    client, runs = trial_runs(uri, "online")
    return out, client, {r.data.tags["variant"]: r for r in runs}


def history(client, run, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def test_both_methods_complete_with_online_curves(online_sweep):
    out, client, runs = online_sweep
    assert set(runs) == {"td3_odt", "odt"}
    last = OFFLINE + ITERATIONS * UPDATES
    for variant, run in runs.items():
        assert run.data.tags["lamo_ray.outcome"] == "completed", variant
        transitions = history(client, run, "online/transitions")
        # one value per iteration (plus the evaluation's), at the iteration's last update
        steps = sorted({s for s, _ in transitions})
        assert steps == [OFFLINE + (i + 1) * UPDATES for i in range(ITERATIONS)]
        values = dict(transitions)
        assert all(values[a] < values[b] for a, b in zip(steps, steps[1:]))
        assert values[last] >= ITERATIONS * BUDGET
        # evaluated after the offline phase and every 2 online iterations
        assert [s for s, _ in history(client, run, "normalized_score")] == [OFFLINE, OFFLINE + 2 * UPDATES, last]
    # the critic belongs to TD3+ODT only; the learned temperature to ODT only
    assert history(client, runs["td3_odt"], "online/critic_loss")
    assert not history(client, runs["odt"], "online/critic_loss")
    temperature = history(client, runs["odt"], "train/temperature")
    assert temperature and not history(client, runs["td3_odt"], "train/temperature")


def test_report_scores_the_online_updates(workdir, online_sweep):
    out, client, runs = online_sweep
    report = workdir[0] / "online" / "online" / "report"
    assert (report / "online_curves.png").stat().st_size > 0
    text = (report / "report.md").read_text()
    assert "Online fine-tuning: score vs online transitions, critic beside" in text
    # issue 31: an online FIFO sweep of one sample ratio has no offline learning curves (their x axis is not
    # the online one), no sample-ratio axis and no ASHA view
    for name in ("learning_curves.png", "score_vs_sample_ratio.png", "asha.png"):
        assert not (report / name).exists() and name not in text
    # the same store reported again in-process: what the online figure drew
    from lamo_ray.report import generate_report

    uri = client.tracking_uri
    drawn = generate_report(uri, "online", workdir[0] / "again", log_to_mlflow=False).figures
    assert set(drawn) == {"online"}
    by_panel = {}
    for s in drawn["online"].series:
        by_panel.setdefault(s.panel, []).append(s)
    # score: both variants, one point per evaluation (after the offline phase, then every 2 iterations)
    assert sorted(s.label for s in by_panel["score"] if s.label != "band") == ["odt (n=1)", "td3_odt (n=1)"]
    assert all(s.points == 3 for s in by_panel["score"] if s.label != "band")
    # the critic beside it: TD3+ODT only (ODT has no critic), one point per online iteration
    for key in ("online/critic_loss", "online/q1_mean"):
        assert [(s.label, s.points) for s in by_panel[key]] == [("td3_odt (n=1)", ITERATIONS)]
    # the final-score window is the last 20% of train.steps + online updates: the last evaluation only
    for run in runs.values():
        final = history(client, run, "normalized_score")[-1][1]
        assert f"{final:.1f}" in out


def test_killed_online_trial_resumes_with_the_same_transitions(workdir, online_sweep):
    tmp, env = workdir
    _, client0, runs0 = online_sweep
    name = "online_kill"
    tag = f"online-kill-{os.getpid()}-{time.time()}"
    sweep = {"name": name, "base": BASE, "variants": {"td3_odt": {}}, "scheduler": {"type": "fifo"}}
    proc, uri = start_sweep(tmp, dict(env, LAMO_RAY_TEST_TAG=tag), name, sweep)
    # the second report's checkpoint (after online iteration 2 of 4) on disk: kill mid-phase
    killed = kill_training_when(proc, tmp / name, f"{name}/*/checkpoint_000001", tag, "ImplicitFunc", timeout=600)
    out, _ = proc.communicate(timeout=900)
    assert killed, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    client, runs = trial_runs(uri, name)
    assert len(runs) == 1 and runs[0].data.tags["lamo_ray.outcome"] == "completed"
    restored = history(client, runs[0], "train/restored_from_step")
    assert restored and restored[-1][1] >= OFFLINE + 2 * UPDATES
    final = history(client, runs[0], "online/transitions")[-1]
    uninterrupted = history(client0, runs0["td3_odt"], "online/transitions")[-1]
    assert final == uninterrupted


def test_an_online_trials_metrics_do_not_depend_on_its_sweep(workdir, online_sweep):
    """Issue 30: the TD3+ODT trial run again in another sweep, alone (ODT ran beside it in the first) and
    collecting with 2 rollout actors of 1 env instead of 1, logs the same value of every metric at every
    step (but the count of episodes dropped past the kept prefix): offline and online losses, the
    critic's, the collected transitions and returns, the evaluations.
    (The collection keeps the same seeded episodes whatever the actor layout: `test_online_loop`.)"""
    tmp, env = workdir
    base = {**BASE, "online": {**BASE["online"], "num_actors": 2}}
    proc, uri = start_sweep(tmp, env, "online_again", {"name": "online_again", "base": base,
                                                       "variants": {"td3_odt": {}}, "scheduler": {"type": "fifo"}})
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    first = trial_histories(tmp / "online.db", "online")["td3_odt"]
    second = trial_histories(tmp / "online_again.db", "online_again")["td3_odt"]
    assert set(first) == set(second)
    assert {"train/action_loss", "online/critic_loss", "online/transitions", "normalized_score"} <= set(first)
    # the one count that follows the layout by construction: episodes collected past the kept prefix
    # (whole waves of num_actors episodes; measured 0 with 1 actor, 1 with 2), which no update trains on
    layout = "online/collect/episodes_dropped"
    differ = [(key, first[key], second[key]) for key in first if key != layout and first[key] != second[key]]
    assert not differ, differ
    assert len(first) > 15
