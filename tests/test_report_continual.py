"""The report on continual trials (`lamo_ray.report` "Continual learning"): a hand-made MLflow store laid
out as `lamo_ray.continual.trial` logs it, with known Continual World metrics and success matrices."""

import json
import time

import numpy as np
import pytest
from mlflow.entities import Metric

from lamo_ray.config import SweepConfig, expand_trials
from lamo_ray.intervals import FORGETTING_RANGE, SUCCESS_RANGE, TRANSFER_RANGE, difference_ci, mean_ci
from lamo_ray.report import continual_arms, generate_report
from lamo_ray.tracking import OUTCOME_TAG, RunLogger, start_sweep_run, start_trial_run

TASKS = ["faucet-close", "window-close"]
SWEEP = {
    "name": "cl",
    "seeds": [0, 1, 2],
    "base": {"data": {"source": "lamo/metaworld/{task}-v0", "context_length": 3, "max_ep_len": 200},
             "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1, "finetune": "full"},
             "train": {"steps": 10},
             "continual": {"pretrain_tasks": ["reach"], "tasks": TASKS, "steps_per_task": 10, "eval_every": 5}},
    "scheduler": {"type": "fifo"},
    "report_baseline": "ft",
    "variants": {"l2m": {"continual": {"method": "l2m"}}, "ft": {"continual": {"method": "ft"}},
                 "lora": {"continual": {"method": "lora"}}, "single": {"continual": {"method": "single"}}},
}
# (variant, seed) -> success matrix [task][stage]; forgetting = S[t, own stage] - S[t, last]
MATRICES = {
    ("ft", 0): [[0.8, 0.0], [0.0, 0.9]], ("ft", 1): [[1.0, 0.2], [0.1, 1.0]], ("ft", 2): [[0.9, 0.1], [0.0, 0.8]],
    ("l2m", 0): [[0.8, 0.8], [0.0, 0.9]], ("l2m", 1): [[1.0, 0.9], [0.1, 1.0]], ("l2m", 2): [[0.9, 0.9], [0.0, 0.7]],
    ("lora", 0): [[0.5, 0.1], [0.0, 0.6]], ("lora", 1): [[0.7, 0.3], [0.0, 0.5]],   # seed 2 fails
    ("single", 0): [[0.6, 0.0], [0.0, 0.6]], ("single", 1): [[0.6, 0.0], [0.0, 0.5]], ("single", 2): [[0.5, 0.0], [0.0, 0.5]],
}
# (variant, seed) -> {task: AUC} (mean success over the task's own stage)
AUCS = {("ft", 0): [0.5, 0.7], ("ft", 1): [0.6, 0.8], ("ft", 2): [0.55, 0.6], ("l2m", 0): [0.3, 0.4],
        ("l2m", 1): [0.35, 0.5], ("l2m", 2): [0.2, 0.45], ("lora", 0): [0.3, 0.3], ("lora", 1): [0.3, 0.3],
        ("single", 0): [0.4, 0.5], ("single", 1): [0.5, 0.4], ("single", 2): [0.3, 0.6]}
REFERENCE = [float(np.mean([AUCS[("single", s)][i] for s in range(3)])) for i in range(len(TASKS))]


def _transfer(variant, seed):
    return 100 * float(np.mean([(a - r) / (1 - r) for a, r in zip(AUCS[(variant, seed)], REFERENCE)]))


def _values(matrix):
    m = np.asarray(matrix)
    return 100 * m[:, -1].mean(), 100 * float(np.mean([m[i, i] - m[i, -1] for i in range(len(TASKS))]))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cl")
    uri = f"sqlite:///{tmp}/mlflow.db"
    cfg = SweepConfig.model_validate(SWEEP)
    exp_id, parent = start_sweep_run(uri, "cl", "cl", cfg)
    for i, row in enumerate(expand_trials(cfg)):
        key = (row["variant"], row["seed"])
        run_id = start_trial_run(uri, exp_id, parent, f"run_trial_{i:05d}", row["variant"], row["config"],
                                 trial_id=f"t{i:05d}")
        logger = RunLogger(uri, run_id)
        ts = int(time.time() * 1000)
        total = row["config"].total_steps
        if key not in MATRICES:
            logger.client.log_batch(run_id, metrics=[Metric("normalized_score", 10.0, ts, 15)])
            logger.set_tags({OUTCOME_TAG: "failed"})
            logger.finish("FAILED")
            continue
        m = np.asarray(MATRICES[key])
        success, forget = _values(m)
        # per-task success as the trial logs it at each evaluation (`lamo_ray.continual.trial`): after
        # pre-training (step 10), mid-stage (15, 25) and at each stage's end (20, 30: the matrix's columns)
        curves = {10: [0.0, 0.0], 15: list(m[:, 0] / 2), 20: list(m[:, 0]), 25: list((m[:, 0] + m[:, 1]) / 2),
                  30: list(m[:, 1])}
        logger.client.log_batch(run_id, metrics=[
            Metric(f"eval/{task}/success_rate", float(v[i]), ts, step)
            for step, v in curves.items() for i, task in enumerate(TASKS)])
        logger.client.log_batch(run_id, metrics=[
            Metric("normalized_score", 100 * m[:, 0].mean(), ts, 20), Metric("normalized_score", success, ts, total),
            Metric("continual/average_success", success / 100, ts, total),
            Metric("continual/forgetting", forget / 100, ts, total),
            *[Metric(f"continual/auc/{t}", a, ts, total) for t, a in zip(TASKS, AUCS[key])]])
        path = tmp / run_id / "success_matrix.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"stages": TASKS, "tasks": TASKS, "success": m.tolist(), "sequence": TASKS}))
        logger.client.log_artifact(run_id, str(path), "continual")
        logger.set_tags({OUTCOME_TAG: "completed"})
        logger.finish("FINISHED")
    rep = generate_report(uri, "cl", tmp / "out", reps=200, log_to_mlflow=False)
    return tmp, rep


def _rows(text: str, header: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header}"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_per_arm_average_success_and_forgetting_with_their_intervals(report):
    _, rep = report
    # one sample ratio: the tables have no sample ratio column (issue 31)
    rows = _rows(rep.path.read_text(), "variant | seeds | average success")
    for variant in ("ft", "l2m"):
        success, forget = zip(*(_values(MATRICES[(variant, s)]) for s in range(3)))
        # intervals within each metric's range (issue 31): success in [0, 100], forgetting in [-100, 100]
        (ms, (ls, hs)), (mf, (lf, hf)) = mean_ci(success, SUCCESS_RANGE), mean_ci(forget, FORGETTING_RANGE)
        mt, (lt, ht) = mean_ci([_transfer(variant, s) for s in range(3)], TRANSFER_RANGE)
        def shown(low, high):   # seeds that all gave the same value have no spread to bound
            return f"no spread: every seed {low:.2f}" if low == high else f"[{low:.2f}, {high:.2f}]"

        assert rows[variant][1:] == ["3", f"{ms:.2f}", shown(ls, hs), f"{mf:.2f}", shown(lf, hf),
                                     f"{mt:.2f}", shown(lt, ht)]
        assert 0 <= ls <= hs <= 100 and -100 <= lf <= hf <= 100 and ht <= 100
    assert rows["lora"][1] == "2 of 3 seeds" and rows["lora"][3] == "none: incomplete arm"
    assert rows["single"][6] == "reference"    # forward transfer is measured against it


def test_forgetting_is_compared_with_the_baseline_in_words(report):
    _, rep = report
    forget = {v: [_values(MATRICES[(v, s)])[1] for s in range(3)] for v in ("l2m", "ft")}
    diff, (low, high) = difference_ci(forget["l2m"], forget["ft"])
    assert high < 0   # the store is built so that l2m forgets less
    # one sample ratio in the sweep: the sentence does not name it (issue 31)
    sentence = (f"Forgetting: l2m forgets less than ft here: difference {diff:+.1f}, "
                f"95% CI [{low:+.1f}, {high:+.1f}] (3 vs 3 seeds).")
    assert sentence in rep.findings
    assert not any(f.startswith("Sample ratio") or "at sample ratio 1:" in f for f in rep.findings)   # not varied
    assert not any("lora" in f and f.startswith("Forgetting") for f in rep.findings)   # incomplete: not compared


def test_the_final_score_of_a_continual_trial_is_its_average_success(report):
    _, rep = report
    rows = _rows(rep.path.read_text(), "variant | seeds | mean |")
    success = [_values(MATRICES[("l2m", s)])[0] for s in range(3)]
    assert rows["l2m"][2] == f"{np.mean(success):.2f}"


def test_success_matrices_are_averaged_over_seeds_and_drawn(report):
    tmp, rep = report
    assert (tmp / "out" / "success_matrix.png").stat().st_size > 5000
    assert not (tmp / "out" / "asha.png").exists()   # a FIFO sweep gets no ASHA view (issue 31)
    assert "![Success matrix per variant](success_matrix.png)" in rep.path.read_text()


def test_continual_arms_average_the_matrices():
    from lamo_ray.report import TrialResult

    trials = [TrialResult(run_id=str(s), name=str(s), variant="ft", setting=(), seed=s, sample_ratio=1.0, steps=30,
                          outcome="completed", last_step=30, average_success=50.0, forgetting=10.0, continual=True,
                          success_matrix={"tasks": TASKS, "stages": TASKS, "success": MATRICES[("ft", s)]})
              for s in range(3)]
    (arm,) = continual_arms(trials)
    assert np.allclose(arm.matrix, np.mean([MATRICES[("ft", s)] for s in range(3)], axis=0))
    assert arm.tasks == TASKS and arm.complete and arm.n == 3


def test_forgetting_without_spread_draws_no_conclusion():
    """Every seed of both arms forgets the same (e.g. a method that learned nothing forgets 0 each
    time): the Welch interval is a point, and the report says so instead of 'forgets less'."""
    from lamo_ray.intervals import compare
    from lamo_ray.report import ForgettingComparison

    flat = ForgettingComparison(1.0, compare("l2p", "ft", [0.0, 0.0, 0.0], [40.0, 40.0, 40.0]))
    assert flat.verdict == "no spread"
    assert flat.sentence() == ("Forgetting, l2p vs ft at sample ratio 1: difference -40.0 (3 vs 3 seeds), but every "
                               "seed of both gave the same forgetting, so there is no spread to build a confidence "
                               "interval on: no conclusion.")


def test_the_report_says_which_success_rule_its_rates_count(report):
    """Issue 28, point 9: a success rate means a different thing under L2M's last-step rule and Continual
    World's any-step rule; the report names the rule its trials logged (this store: the default,
    any_step), and arms scored by different rules get a column and a warning that they do not compare."""
    from lamo_ray.report import ContinualArm, ReportContent, continual_sections

    _, rep = report
    assert "An episode is a success by `continual.success_rule: any_step`: info['success'] at any step" \
        in rep.path.read_text()
    mixed = [ContinualArm("l2m", 1.0, 1, np.array([50.0]), np.array([0.0]), success_rules=("last_step",)),
             ContinualArm("ft", 1.0, 1, np.array([40.0]), np.array([0.0]), success_rules=("any_step",))]
    content = ReportContent.__new__(ReportContent)
    content.continual, content.trials, content.forgetting, content.figures = mixed, [], [], {"matrix": "m.png"}
    sections = continual_sections(content)
    table = next(s for s in sections if s.kind == "table")
    assert table.headers[3] == "success rule" and [r[3] for r in table.rows] == ["last_step", "any_step"]
    assert any("not comparable across rules" in s.text for s in sections if s.kind == "text")


def test_a_continual_report_draws_the_sequence_per_task_and_no_offline_figure(report):
    """Issue 31: a continual sweep's figures are the per-task success over the sequence (one series per
    evaluated task and arm, every evaluation a point, bands inside [0, 100]) and the success matrices;
    no learning curves over LaMo's final-score window, no sample-ratio axis (one ratio), no ASHA view."""
    tmp, rep = report
    assert set(rep.figures) == {"continual", "matrix"}
    for name in ("learning_curves.png", "score_vs_sample_ratio.png", "online_curves.png", "asha.png"):
        assert not (tmp / "out" / name).exists()
    series = rep.figures["continual"].series
    lines = [s for s in series if s.label != "band"]
    # ft, l2m, single: 3 completed seeds; lora: 2 completed (its third failed); one line per task each
    assert sorted((s.panel.split(",")[0], s.label) for s in lines) == sorted(
        (v, t) for v in ("ft", "l2m", "lora", "single") for t in TASKS)
    assert all(s.points == 5 for s in lines)            # steps 10, 15, 20, 25, 30
    assert all(0 <= s.y_range[0] <= s.y_range[1] <= 100 for s in series)
    assert sum(s.label == "band" for s in series) == len(lines)   # every arm has >= 2 seeds: a band per task
    # ft's first task peaks at the end of its own stage (the matrix's first column), mean over seeds
    peak = 100 * np.mean([MATRICES[("ft", s)][0][0] for s in range(3)])
    assert any(s.label == TASKS[0] and s.panel.startswith("ft") and np.isclose(s.y_range[1], peak) for s in lines)
    text = rep.path.read_text()
    assert "![Success per task over the sequence, stages marked](continual_curves.png)" in text
    assert "learning_curves.png" not in text and "Final score (LaMo protocol" not in text


def test_stage_boundaries_and_planned_steps_come_from_the_trial_params():
    """The continual curves' x axis covers pre-training plus every stage (the issue's empty figure ended at
    the pre-training steps), and the stages start where `lamo_ray.continual.runner` starts them."""
    from lamo_ray.config import asdict_flat
    from lamo_ray.report.load import planned_steps, stage_starts

    row = expand_trials(SweepConfig.model_validate(SWEEP))[0]
    params = {k: str(v) for k, v in asdict_flat(row["config"]).items()}
    assert planned_steps(params) == row["config"].total_steps == 10 + 2 * 10
    assert stage_starts(params) == [(10, "faucet-close"), (20, "window-close")]


def test_too_few_seeds_for_an_interval_inside_the_range_is_said_not_printed():
    """Two seeds of average success 80 and 0: the Student-t interval is [-468, 548]; within [0, 100] it is
    the whole range, which the report states as too few seeds instead of printing a number."""
    from lamo_ray.report import ContinualArm, ReportContent, continual_sections
    from lamo_ray.report.stats import TOO_FEW

    arm = ContinualArm("ft", 1.0, 2, np.array([80.0, 0.0]), np.array([10.0, 12.0]), success_rules=("any_step",))
    assert mean_ci(arm.average_success)[1][0] < -400 and mean_ci(arm.average_success, SUCCESS_RANGE)[1] == (0, 100)
    content = ReportContent.__new__(ReportContent)
    content.continual, content.trials, content.forgetting, content.figures = [arm], [], [], {"matrix": "m.png"}
    table = next(s for s in continual_sections(content) if s.kind == "table")
    row = dict(zip(table.headers, table.rows[0]))
    assert row["average success"] == "40.00" and table.rows[0][4] == TOO_FEW
    low, high = mean_ci(arm.forgetting, FORGETTING_RANGE)[1]
    assert table.rows[0][6] == f"[{low:.2f}, {high:.2f}]" and -100 <= low < high <= 100   # narrow enough to state
