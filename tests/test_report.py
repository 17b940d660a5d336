"""Sweep report: final scores by LaMo's protocol, aggregates, files, on a small MLflow store with known curves."""

import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lamo_ray.config import SchedulerConfig, SweepConfig, expand_trials, load_sweep
from lamo_ray.intervals import difference_ci, mean_ci
from lamo_ray.report import (CI_UNAVAILABLE, TrialResult, arm_stats, bootstrap_library,
                             final_score, generate_report, main, rung_of)
from lamo_ray.tracking import OUTCOME_TAG, RunLogger, start_sweep_run, start_trial_run, trial_outcomes

STEPS = 1000
EVAL_STEPS = list(range(100, STEPS + 1, 100))
REPS = 200

SWEEP = {
    "name": "rep",
    "seeds": [0, 1, 2],
    "base": {"data": {"source": "lamo/reacher/mixed-v0", "sample_ratio": {"grid": [0.01, 0.1]}},
             "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1},
             "train": {"steps": STEPS, "eval_every": 100},
             "eval": {"target_returns": [10, 20]}},
    "variants": {"lamo": {"model": {"finetune": "lora", "embedding": "mlp"}},
                 "dt": {"model": {"finetune": "full", "embedding": "linear"}}},
    "scheduler": {"type": "asha", "grace_period": 100, "reduction_factor": 2},
}

# (variant, sample ratio, seed) -> (outcome, {target: (score at step 900, score at step 1000)} or last step).
# Every other evaluation scores 5, except step 800 (just outside the last 20%) which scores 1000.
COMPLETED = {
    ("lamo", 0.1, 0): {"10": (50, 60), "20": (70, 50)},   # means 55 / 60 -> 60 at target 20
    ("lamo", 0.1, 1): {"10": (80, 90), "20": (10, 20)},   # 85 / 15 -> 85 at target 10
    ("lamo", 0.1, 2): {"10": (40, 40), "20": (64, 66)},   # 40 / 65 -> 65 at target 20
    ("dt", 0.1, 0): {"10": (20, 30), "20": (10, 10)},     # 25
    ("dt", 0.1, 1): {"10": (30, 40), "20": (0, 0)},       # 35
    ("dt", 0.1, 2): {"10": (44, 46), "20": (0, 0)},       # 45
    ("lamo", 0.01, 0): {"10": (30, 32), "20": (20, 20)},  # 31
    ("dt", 0.01, 0): {"10": (12, 14), "20": (0, 0)},      # 13
}
STOPPED = {("lamo", 0.01, 1): 200, ("dt", 0.01, 2): 100}  # stopped_at_step; they score 99 while they run
FAILED = {("lamo", 0.01, 2): 300}
RUNNING = {("dt", 0.01, 1): 500}


def _log_evals(logger: RunLogger, scores: dict[str, dict[int, float]]) -> None:
    """Log what lamo_ray.train logs per evaluation (per-target scores, ``normalized_score`` = the best
    target's), in one batch to keep the test fast."""
    ts = int(time.time() * 1000)
    batch = []
    for step in sorted(next(iter(scores.values()))):
        metrics = {f"eval/target_{t}/normalized_score": s[step] for t, s in scores.items()}
        metrics.update({f"eval/target_{t}/return_mean": s[step] / 10 for t, s in scores.items()})
        metrics["normalized_score"] = max(s[step] for s in scores.values())
        metrics["train/action_loss"] = 1.0 / step
        batch += [Metric(k, v, ts, step) for k, v in metrics.items()]
    logger.client.log_batch(logger.run_id, metrics=batch)


def _scores(window: dict[str, tuple[float, float]]) -> dict[str, dict[int, float]]:
    out = {}
    for target, (s900, s1000) in window.items():
        out[target] = {s: 5.0 for s in EVAL_STEPS}
        out[target].update({800: 1000.0, 900: float(s900), 1000: float(s1000)})
    return out


def _flat(value: float, last: int) -> dict[str, dict[int, float]]:
    return {t: {s: value for s in EVAL_STEPS if s <= last} for t in ("10", "20")}


def build_store(tmp_path) -> tuple[str, str]:
    """A sweep in sqlite MLflow laid out by lamo_ray.tracking, with the histories above. Returns (uri, parent id)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = SweepConfig.model_validate(SWEEP)
    rows = expand_trials(cfg)
    exp_id, parent = start_sweep_run(uri, "rep", "rep", cfg)
    client = MlflowClient(uri)
    for i, row in enumerate(rows):
        key = (row["variant"], row["config"].data.sample_ratio, row["seed"])
        if not any(key in d for d in (COMPLETED, STOPPED, FAILED, RUNNING)):
            continue
        run_id = start_trial_run(uri, exp_id, parent, f"run_trial_{i:05d}", row["variant"], row["config"],
                                 trial_id=f"t{i:05d}")
        logger = RunLogger(uri, run_id)
        if key in COMPLETED:
            _log_evals(logger, _scores(COMPLETED[key]))
            logger.set_tags({OUTCOME_TAG: "completed"})
            logger.finish("FINISHED")
        elif key in STOPPED:
            _log_evals(logger, _flat(99.0, STOPPED[key]))
            logger.set_tags({OUTCOME_TAG: "stopped_by_scheduler", "lamo_ray.stopped_at_step": STOPPED[key]})
            logger.finish("FINISHED")
        elif key in FAILED:
            _log_evals(logger, _flat(7.0, FAILED[key]))
            logger.set_tags({OUTCOME_TAG: "failed"})
            logger.finish("FAILED")
        else:
            _log_evals(logger, _flat(8.0, RUNNING[key]))
        if key == ("lamo", 0.1, 0):  # a restarted trial logs step 1000 again: the later value counts
            later = int(time.time() * 1000) + 60_000
            client.log_batch(run_id, metrics=[Metric("eval/target_20/normalized_score", 0.0, later - 1, 1000),
                                              Metric("eval/target_20/normalized_score", 50.0, later, 1000)])
    return uri, parent


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri, parent = build_store(tmp)
    return uri, parent, generate_report(uri, "rep", tmp / "out", reps=REPS)


@pytest.fixture(scope="module")
def report(generated):
    uri, parent, rep = generated
    return uri, parent, rep.path


def _series(drawn) -> dict[str, list]:
    by_panel = {}
    for s in drawn.series:
        by_panel.setdefault(s.panel, []).append(s)
    return by_panel


def test_an_offline_asha_sweep_draws_its_ratios_curves_and_rungs_and_none_is_empty(generated):
    """Issue 31: offline trials over two sample ratios under ASHA: final score vs sample ratio, learning
    curves per ratio and the ASHA view, and no online or continual figure. Every plotted series has
    its points: each variant's mean curve one per evaluation step (10), each score line one per ratio."""
    _, _, rep = generated
    assert set(rep.figures) == {"score", "curves", "asha"}
    curves = _series(rep.figures["curves"])
    assert set(curves) == {"sample ratio 0.01", "sample ratio 0.1"}
    for panel, series in curves.items():
        lines = [s for s in series if s.label != "band"]
        assert sorted(s.label.split(" (")[0] for s in lines) == ["dt", "lamo"], panel
        assert all(s.points == len(EVAL_STEPS) for s in lines), panel
    # 0.1: 3 complete seeds per variant, a band each; 0.01: one complete seed each (with a running / stopped /
    # failed one beside it), and a single seed's band needs its episodes' CIs, which this store has not logged
    assert sum(s.label == "band" for s in curves["sample ratio 0.1"]) == 2
    score = [s for s in rep.figures["score"].series if s.label != "band"]
    assert sorted((s.label, s.points) for s in score) == [("dt", 2), ("lamo", 2)]


def test_a_fifo_sweep_of_one_ratio_draws_only_its_learning_curves(tmp_path):
    """Offline FIFO, one sample ratio: no sample-ratio axis, no ASHA view; the learning curves only."""
    sweep = dict(SWEEP, name="fifo", seeds=[0, 1], scheduler={"type": "fifo"})
    sweep["base"] = dict(SWEEP["base"], data={"source": "lamo/reacher/mixed-v0", "sample_ratio": 0.1})
    cfg = SweepConfig.model_validate(sweep)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_sweep_run(uri, "fifo", "fifo", cfg)
    for i, row in enumerate(expand_trials(cfg)):
        _trial(uri, exp_id, parent, row["config"], f"t{i}", row["variant"], "main", _flat(10.0 + i, STEPS))
    rep = generate_report(uri, "fifo", tmp_path / "out", reps=REPS, log_to_mlflow=False)
    assert set(rep.figures) == {"curves"}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["learning_curves.png"]
    lines = [s for s in rep.figures["curves"].series if s.label != "band"]
    assert sorted((s.label, s.points) for s in lines) == [("dt (n=2)", len(EVAL_STEPS)), ("lamo (n=2)", len(EVAL_STEPS))]
    assert "## ASHA" not in rep.path.read_text()


def _table_rows(md_text: str, first_header: str) -> list[list[str]]:
    lines = md_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_final_score_is_the_last_20_percent_mean_at_the_best_target():
    scores = {"10": {800: 1000.0, 900: 50.0, 1000: 60.0}, "20": {800: 0.0, 900: 70.0, 1000: 50.0}}
    assert final_score(scores, 1000) == (60.0, "20")
    assert final_score({"10": {100: 1.0}}, 1000) is None


def test_asha_rungs_match_ray_milestones_and_the_parent_run_records_them(report):
    uri, parent, _ = report
    assert SchedulerConfig(type="asha", grace_period=100, reduction_factor=2).rungs(1000) == [100, 200, 400, 800]
    assert SchedulerConfig(type="fifo").rungs(1000) == []
    params = MlflowClient(uri).get_run(parent).data.params
    assert params["sweep.asha_rungs"] == "100,200,400,800" and params["sweep.baseline_variant"] == "dt"
    assert params["sweep.metric"] == "normalized_score"
    assert rung_of(200, [100, 200, 400, 800]) == 2 and rung_of(150, [100, 200]) == 1 and rung_of(50, [100]) is None


def test_iqm_and_mean_of_a_known_set():
    trials = [TrialResult(f"r{i}", f"t{i}", "lamo", (), i, 0.1, STEPS, "completed", STEPS, final_score=float(s))
              for i, s in enumerate([0, 1, 2, 3, 4, 5, 6, 100])]
    (stats,) = arm_stats(trials, reps=REPS)
    assert stats.n == 8 and stats.mean == 15.125 and stats.iqm == 3.5   # IQM: mean of 2, 3, 4, 5
    assert stats.mean_ci == pytest.approx(mean_ci([0, 1, 2, 3, 4, 5, 6, 100])[1])   # Student-t over seeds
    assert stats.iqm_ci[0] <= 3.5 <= stats.iqm_ci[1] and stats.iqm_ci[0] < stats.iqm_ci[1]
    assert arm_stats(trials, reps=REPS)[0].iqm_ci == stats.iqm_ci   # seeded bootstrap: same CIs again


def test_rliable_bootstraps_in_the_pinned_environment():
    """The project pins pandas < 3 so that rliable's arch imports (lamo_ray.report.stats.bootstrap_library):
    the intervals the report prints are rliable's. Before (issue 30), the IQM checks also passed on the
    fallback branch, so a broken rliable went unnoticed."""
    library, reason = bootstrap_library()
    assert library is not None, reason


def test_without_rliable_the_report_gives_no_interval_and_says_so(monkeypatch):
    import lamo_ray.report.stats as stats_module

    monkeypatch.setattr(stats_module, "bootstrap_library", lambda: (None, "ImportError: arch"))
    trials = [TrialResult(f"r{i}", f"t{i}", "lamo", (), i, 0.1, STEPS, "completed", STEPS, final_score=float(s))
              for i, s in enumerate([0, 1, 2, 3])]
    (stats,) = arm_stats(trials, reps=REPS)
    assert stats.iqm == 1.5 and stats.iqm_ci is None and stats.mean_ci is not None


def test_an_arm_with_a_stopped_seed_is_incomplete_and_gets_no_interval():
    trials = [TrialResult(f"r{i}", f"t{i}", "lamo", (), i, 0.1, STEPS, "completed", STEPS, final_score=s)
              for i, s in enumerate([40.0, 60.0])]
    trials.append(TrialResult("r2", "t2", "lamo", (), 2, 0.1, STEPS, "stopped_by_scheduler", 200))
    (stats,) = arm_stats(trials, reps=REPS)
    assert (stats.n, stats.planned, stats.complete, stats.seeds_text) == (2, 3, False, "2 of 3 seeds")
    assert stats.mean == 50.0 and stats.mean_ci is None and stats.iqm_ci is None


def test_two_seeds_get_a_student_t_interval_but_no_bootstrap_interval():
    """A percentile bootstrap of 2 seeds is just their range (issue 31: 'IQM 95% CI [20, 50]' for seeds 20
    and 50): the IQM gets no interval below 3 seeds and the table says why; the Student-t mean CI stays."""
    from lamo_ray.report.stats import FEW_FOR_BOOTSTRAP

    trials = [TrialResult(f"r{i}", f"t{i}", "lamo", (), i, 0.1, STEPS, "completed", STEPS, final_score=s)
              for i, s in enumerate([20.0, 50.0])]
    (stats,) = arm_stats(trials, reps=REPS)
    assert stats.complete and stats.iqm_ci is None and stats.mean_ci == mean_ci([20.0, 50.0])[1]
    assert FEW_FOR_BOOTSTRAP == "too few seeds for a bootstrap CI (needs 3)"
    three = arm_stats(trials + [TrialResult("r2", "t2", "lamo", (), 2, 0.1, STEPS, "completed", STEPS,
                                            final_score=30.0)], reps=REPS)[0]
    assert three.iqm_ci is not None and 20.0 <= three.iqm_ci[0] <= three.iqm_ci[1] <= 50.0


def test_table_values_by_protocol(report):
    _, _, md = report
    rows = {(r[0], r[1]): r for r in _table_rows(md.read_text(), "variant | sample ratio | seeds")}
    # variant | ratio | seeds | mean | mean CI | IQM | IQM CI | not scored
    assert rows[("lamo", "0.1")][2:4] == ["3", "70.00"] and rows[("lamo", "0.1")][5] == "70.00"
    low, high = mean_ci([60, 85, 65])[1]                                  # Student-t over the 3 seeds
    assert rows[("lamo", "0.1")][4] == f"[{low:.2f}, {high:.2f}]"
    assert rows[("dt", "0.1")][2:4] == ["3", "35.00"]
    # stopped (99s) and failed not mixed in; the arm is incomplete: no interval
    assert rows[("lamo", "0.01")][2:5] == ["1 of 3 seeds", "31.00", "none: incomplete arm"]
    assert rows[("lamo", "0.01")][7] == "1 failed, 1 stopped_by_scheduler"
    assert rows[("dt", "0.01")][2:5] == ["1 of 3 seeds", "13.00", "none: incomplete arm"]
    assert rows[("dt", "0.01")][7] == "1 running, 1 stopped_by_scheduler"
    low, high = (float(x) for x in rows[("lamo", "0.1")][6].strip("[]").split(","))   # rliable's IQM interval
    assert 60.0 <= low <= 70.0 <= high <= 85.0


def test_comparisons_are_stated_in_words_with_their_interval(report):
    _, _, md = report
    text = md.read_text()
    diff, (low, high) = difference_ci([60, 85, 65], [25, 35, 45])          # Welch over seeds
    assert diff == 35.0 and low > 0
    assert (f"Sample ratio 0.1: lamo scores higher than dt here: difference +35.0, 95% CI [{low:+.1f}, {high:+.1f}] "
            "(3 vs 3 seeds).") in text
    # the incomplete arms at 0.01 are named, not compared
    assert "lamo at sample ratio 0.01 has 1 of 3 seeds scored" in text and "Sample ratio 0.01:" not in text
    rows = _table_rows(text, "variant | baseline | sample ratio | difference")
    assert rows == [["lamo", "dt", "0.1", "+35.00", f"[{low:+.2f}, {high:+.2f}]", "3 vs 3 seeds", "higher"]]


def test_trials_table_lists_stopped_failed_and_running(report):
    _, _, md = report
    trials = {(r[2], r[3], r[4]): r for r in _table_rows(md.read_text(), "trial")}
    # trial | stage | variant | ratio | seed | status | final score | best target | last eval score | CI | run
    assert trials[("lamo", "0.1", "0")][5:8] == ["completed", "60.00", "20"]
    assert trials[("lamo", "0.1", "1")][6:8] == ["85.00", "10"]
    assert trials[("lamo", "0.01", "1")][5:7] == ["stopped at step 200 (rung 2)", "-"]
    assert trials[("dt", "0.01", "2")][5] == "stopped at step 100 (rung 1)"
    assert trials[("lamo", "0.01", "2")][5:7] == ["failed", "-"]
    assert trials[("dt", "0.01", "1")][5:7] == ["running (step 500 of 1000)", "-"]
    assert trials[("lamo", "0.1", "0")][1] == "main"
    text = md.read_text()
    assert "1700 of 12000" in text.replace(",", "") and "(14%)" in text
    assert "preliminary" in text and "failed" in text and "stopped trials inside the arms" in text


def test_probability_of_improvement_only_between_complete_arms_of_two_or_more_seeds(report):
    _, _, md = report
    poi = {(r[0], r[2]): r for r in _table_rows(md.read_text(), "variant | baseline | sample ratio | P(variant > baseline)")}
    assert poi[("lamo", "0.1")][3] == "1.000"
    assert poi[("lamo", "0.1")][4].startswith("[")
    assert set(poi) == {("lamo", "0.1")}    # 0.01: one seed each and incomplete arms: no P(improvement)


def test_files_and_mlflow_artifacts(report):
    uri, parent, md = report
    out = md.parent
    for name in ("report.md", "report.html", "score_vs_sample_ratio.png", "learning_curves.png", "asha.png",
                 "final_scores.csv", "best_config.yaml"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and 'src="' + "score" not in page
    assert not (out / "online_curves.png").exists() and not (out / "continual_curves.png").exists()
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/asha.png", "report/best_config.yaml"} <= logged


def test_best_config_reruns_only_the_best_variant(report):
    _, _, md = report
    path = md.parent / "best_config.yaml"
    sweep = load_sweep(path)
    assert list(sweep.variants) == ["lamo"] and sweep.base["data"]["sample_ratio"] == 0.1
    assert sweep.name == "rep-best" and sweep.seeds == [0, 1, 2] and sweep.variants["lamo"] == SWEEP["variants"]["lamo"]


def test_missing_baseline_is_skipped_with_a_note_and_cli_writes_the_report(report, tmp_path):
    uri, parent, _ = report
    md = generate_report(uri, "rep", tmp_path / "out", parent_run_id=parent, baseline_variant="bc", reps=REPS,
                         log_to_mlflow=False).path.read_text()
    assert "no variant named 'bc'" in md and "Probability of improvement" not in md
    assert main(["rep", "--tracking-uri", uri, "--out", str(tmp_path / "cli"), "--baseline", "lamo",
                 "--reps", str(REPS)]) == 0
    cli_md = (tmp_path / "cli" / "report.md").read_text()
    assert "| dt | lamo | 0.1 | 0.000 |" in cli_md    # P(dt > lamo) at ratio 0.1: every dt seed scores lower


def test_trial_outcomes_read_back_every_trial_run(report):
    """The sweep's closing summary comes from MLflow (so a --resume run lists trials finished
    before the driver stopped): one row per trial run, its outcome tag, last evaluated step and score."""
    uri, parent, _ = report
    exp_id = MlflowClient(uri).get_run(parent).info.experiment_id
    rows = trial_outcomes(uri, exp_id, parent)
    expected = len(COMPLETED) + len(STOPPED) + len(FAILED) + len(RUNNING)
    assert len(rows) == expected and len({r["mlflow_run_id"] for r in rows}) == expected
    by_key = {(r["variant"], r["seed"], r["outcome"]): r for r in rows}
    counts = {o: sum(r["outcome"] == o for r in rows) for o in ("completed", "stopped_by_scheduler", "failed",
                                                                 "unfinished")}
    assert counts == {"completed": len(COMPLETED), "stopped_by_scheduler": len(STOPPED), "failed": len(FAILED),
                      "unfinished": len(RUNNING)}
    assert by_key[("lamo", 1, "stopped_by_scheduler")]["step"] == 200
    assert by_key[("lamo", 1, "stopped_by_scheduler")]["normalized_score"] == 99.0
    assert by_key[("dt", 1, "unfinished")]["step"] == 500
    assert all(r["trial"].startswith("t") for r in rows)


# --------------------------------------------------------------------------- search, then confirm


def _trial(uri, exp_id, parent, cfg, name, variant, stage, scores, outcome="completed", tables=None):
    """One trial run with per-target histories ``scores`` and optional evaluation tables {step: DataFrame}."""
    run_id = start_trial_run(uri, exp_id, parent, name, variant, cfg, trial_id=name, stage=stage)
    logger = RunLogger(uri, run_id)
    _log_evals(logger, scores)
    for step, table in (tables or {}).items():
        path = Path(tempfile.mkdtemp()) / f"step_{step:07d}.parquet"
        table.to_parquet(path)
        logger.log_artifact(path, "eval")
    tags = {OUTCOME_TAG: outcome}
    if outcome == "stopped_by_scheduler":
        tags["lamo_ray.stopped_at_step"] = max(next(iter(scores.values())))
    logger.set_tags(tags)
    logger.finish("FINISHED")


def test_search_then_confirm_is_scored_from_confirmation_trials_only(tmp_path):
    sweep = dict(SWEEP, name="sc", seeds=[0], confirm={"top_k": 1, "seeds": [10, 11]})
    sweep["base"] = dict(SWEEP["base"], data={"source": "lamo/reacher/mixed-v0", "sample_ratio": 0.1},
                         train={"steps": STEPS, "eval_every": 100, "lr": {"grid": [1e-4, 1e-3]}})
    cfg = SweepConfig.model_validate(sweep)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_sweep_run(uri, "sc", "sc", cfg)
    picked = {"lamo": 1e-3, "dt": 1e-4}     # each variant confirmed at its own best configuration
    selection = [{"variant": v, "params": {"train.lr": lr}, "rank": 1, "search_step": 1000.0,
                  "search_score": 99.0, "search_seeds": [0]} for v, lr in picked.items()]
    path = tmp_path / "confirm_selection.yaml"
    path.write_text(yaml.safe_dump(selection))
    RunLogger(uri, parent).log_artifact(path)
    resolved = {(row["variant"], row["params"]["train.lr"]): row["config"] for row in expand_trials(cfg)}
    for v, lr in picked.items():   # the search: the picked configuration scored 99, the other was stopped
        other = 1e-4 if lr == 1e-3 else 1e-3
        _trial(uri, exp_id, parent, resolved[(v, lr)], f"s_{v}_hi", v, "search", _flat(99.0, 1000))
        _trial(uri, exp_id, parent, resolved[(v, other)], f"s_{v}_lo", v, "search", _flat(1.0, 200),
               outcome="stopped_by_scheduler")
    for seed, (lamo, dt) in zip((10, 11), ((50, 40), (60, 44))):
        for v, score in (("lamo", lamo), ("dt", dt)):
            c = resolved[(v, picked[v])].model_copy(update={"seed": seed})
            _trial(uri, exp_id, parent, c, f"c_{v}_{seed}", v, "confirm", _flat(float(score), 1000))
    rep = generate_report(uri, "sc", tmp_path / "out", reps=REPS, log_to_mlflow=False)
    text = rep.path.read_text()
    # issue 31: the search's ASHA view and the confirmation trials' curves; one ratio, so no ratio axis
    assert set(rep.figures) == {"curves", "asha"}
    lines = [s for s in rep.figures["curves"].series if s.label != "band"]
    assert sorted(s.label for s in lines) == ["dt (train.lr=0.0001) (n=2)", "lamo (train.lr=0.001) (n=2)"]
    assert all(s.points == len(EVAL_STEPS) for s in lines)   # the confirmation trials only, every evaluation
    assert "2 trial(s) stopped" in text                       # the ASHA view is the search's: 2 of its 4 stopped
    # one sample ratio: no table has a sample ratio column, the ratio is said once (issue 31)
    assert "| sample ratio" not in text and "Every trial uses sample ratio 0.1" in text
    rows = {r[0]: r for r in _table_rows(text, "variant | seeds | mean")}
    # mean of the confirmation seeds only: the search's 99s and the stopped 1s are not in it
    assert rows["lamo (train.lr=0.001)"][1:3] == ["2", "55.00"] and rows["dt (train.lr=0.0001)"][1:3] == ["2", "42.00"]
    assert set(rows) == {"lamo (train.lr=0.001)", "dt (train.lr=0.0001)"}
    assert "scored from the 4 confirmation trials only" in text and "## Search" in text
    search = _table_rows(text, "variant | rank | configuration")
    assert search[0][:3] == ["lamo", "1", "train.lr=0.001"]
    trials = _table_rows(text, "trial")
    assert sum(r[1] == "search" for r in trials) == 4 and sum(r[1] == "confirm" for r in trials) == 4
    diff, ci = difference_ci([50, 60], [40, 44])
    comparison = _table_rows(text, "variant | baseline | difference")
    assert comparison[0][:4] == ["lamo (train.lr=0.001)", "dt (train.lr=0.0001)", f"{diff:+.2f}",
                                 f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"]


def test_single_seed_arms_are_compared_over_their_episodes_and_say_so(tmp_path):
    import numpy as np
    import pandas as pd

    sweep = dict(SWEEP, name="one", seeds=[0])
    sweep["base"] = dict(SWEEP["base"], data={"source": "lamo/reacher/mixed-v0", "sample_ratio": 0.1})
    cfg = SweepConfig.model_validate(sweep)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_sweep_run(uri, "one", "one", cfg)
    rng = np.random.default_rng(0)
    episodes = {"lamo": rng.normal(60, 10, 20), "dt": rng.normal(50, 10, 20)}
    for row in expand_trials(cfg):
        v = row["variant"]
        tables = {}
        for step in (900, 1000):    # the final window; target 20 is the best, target 10 scores 0
            tables[step] = pd.DataFrame({"target_return": [20.0] * 20 + [10.0] * 20, "seed": list(range(40)),
                                         "return": 0.0, "normalized_score": list(episodes[v]) + [0.0] * 20})
        mean = float(episodes[v].mean())
        scores = {"20": {s: mean for s in EVAL_STEPS}, "10": {s: 0.0 for s in EVAL_STEPS}}
        _trial(uri, exp_id, parent, row["config"], f"t_{v}", v, "main", scores, tables=tables)
    text = generate_report(uri, "one", tmp_path / "out", reps=REPS, log_to_mlflow=False).path.read_text()
    diff, (low, high) = difference_ci(episodes["lamo"], episodes["dt"])
    assert f"difference {diff:+.1f}, 95% CI [{low:+.1f}, {high:+.1f}] (20 vs 20 episodes)" in text
    assert "covers evaluation noise only" in text


def test_variants_are_compared_task_by_task(tmp_path):
    """A sweep with `tasks`: each variant's arm per task, compared with the baseline's arm on the same task
    (not with the baseline on another task), and the best config fixes the task."""
    sweep = dict(SWEEP, name="tk", seeds=[0, 1])
    sweep["base"] = dict(SWEEP["base"], data={"source": "lamo/reacher/mixed-v0", "sample_ratio": 0.1},
                         task={"grid": ["easy", "hard"]})
    sweep["tasks"] = {"easy": {"eval": {"target_returns": [10]}}, "hard": {"eval": {"target_returns": [20]}}}
    cfg = SweepConfig.model_validate(sweep)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_sweep_run(uri, "tk", "tk", cfg)
    # (variant, task) -> scores of seeds 0, 1: lamo beats dt by 10 on easy and loses by 20 on hard
    scores = {("lamo", "easy"): (90, 92), ("dt", "easy"): (80, 82), ("lamo", "hard"): (10, 12), ("dt", "hard"): (30, 32)}
    for row in expand_trials(cfg):
        c = row["config"]
        target = str(int(c.eval.target_returns[0]))
        score = float(scores[(row["variant"], c.task)][row["seed"]])
        _trial(uri, exp_id, parent, c, f"t_{row['variant']}_{c.task}_{row['seed']}", row["variant"], "main",
               {target: {s: score for s in EVAL_STEPS}})
    text = generate_report(uri, "tk", tmp_path / "out", reps=REPS, log_to_mlflow=False).path.read_text()
    rows = {r[0]: r for r in _table_rows(text, "variant | baseline | difference")}
    assert set(rows) == {"lamo (task=easy)", "lamo (task=hard)"}
    assert rows["lamo (task=easy)"][1] == "dt (task=easy)" and rows["lamo (task=easy)"][2] == "+10.00"
    assert rows["lamo (task=hard)"][1] == "dt (task=hard)" and rows["lamo (task=hard)"][2] == "-20.00"
    best = yaml.safe_load((tmp_path / "out" / "best_config.yaml").read_text())
    assert best["base"]["task"] == "easy" and list(best["variants"]) == ["lamo"]
    # issue 31: a per-task breakdown, and sentences that name the task once instead of in both labels
    per_task = {r[0]: r for r in _table_rows(text, "task | dt | lamo")}
    d, ci = mean_ci([80, 82])
    assert per_task["easy"][1] == f"{d:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] (n=2)" and per_task["hard"][2].startswith("11.00 ")
    diff, (low, high) = difference_ci([90, 92], [80, 82])
    assert (f"task=easy: lamo scores higher than dt here: difference {diff:+.1f}, 95% CI [{low:+.1f}, {high:+.1f}] "
            "(2 vs 2 seeds).") in text
