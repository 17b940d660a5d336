"""Sweep report: final scores by LaMo's protocol, ablation tables with bootstrap CIs, figures, best config.

    python -m lamo_ray.report SWEEP_NAME_OR_MLFLOW_EXPERIMENT [--out DIR] [--tracking-uri URI]
                              [--parent-run-id ID] [--baseline VARIANT] [--reps N]

Reads one sweep from MLflow (layout in `lamo_ray.tracking`: the parent run tagged
``lamo_ray.role=sweep`` with its ``sweep.yaml``, one child run per trial), writes into ``--out``:

- ``report.md`` and ``report.html`` (self-contained: figures embedded as base64 PNG),
- the figures that fit the sweep (`_figures`): ``score_vs_sample_ratio.png`` (LaMo Fig. 1 style; more than one
  sample ratio), ``learning_curves.png`` (offline trials), ``online_curves.png`` (trials with an online phase:
  score vs online transitions, critic loss and Q beside), ``continual_curves.png`` and ``success_matrix.png``
  (continual trials: each task's success over the sequence with its stages, a success matrix per variant),
  ``asha.png`` (ASHA sweeps only),
- ``final_scores.csv`` (one row per trial), ``best_config.yaml`` (a sweep file with only the best
  variant at its best sample ratio, ready for ``python -m lamo_ray.sweep``),

and logs them as artifacts ``report/`` of the sweep's parent run.

Protocol (docs/references/lamo.md "Evaluation"): a trial's *final score* is the mean of its evaluations in the
last 20% of its configured ``train.steps`` (LaMo: the last 20k of 100k steps, i.e. the evaluations
at steps > 80k), taken at the best target return, the target whose such mean is highest. Only trials
that ran to completion get one: trials ASHA stopped are listed with their rung, failed and still
running trials are listed as such. Scores are D4RL-normalised x100, as logged by `lamo_ray.evaluate`.

A continual trial (``continual:``, `lamo_ray.continual.trial`) is scored by Continual World's average
success after its last stage, x100; the report adds its forgetting per arm with CIs, the forgetting
difference from the baseline, and the success matrices. Metrics with a range (success rates, forgetting)
get their interval intersected with it (`lamo_ray.intervals.within`), and "too few seeds" where that is
the whole range. Tables and sentences name the sample ratio only when the sweep varies it.

Which trials score the arms: in a sweep with a confirmation stage (``confirm:``), only the
confirmation trials (every seed trained to the end); the search (ASHA) is shown on its own, since
an ASHA arm is a mean over the seeds that survived and the best of many searched configurations is
biased upward by its selection. Otherwise all trials. An arm with a stopped, failed or unfinished
trial is listed as "n of m seeds" and gets no interval and no comparison.

Statistics are stated, never implied (`lamo_ray.intervals`): every score comes with its 95% CI;
each variant is compared with the baseline variant (DT by default) by the difference of their mean
final scores with Welch's 95% CI over seeds (over evaluation episodes when each arm has one seed,
which then says that it covers evaluation noise only), and one sentence says whether the data
support a difference. Per arm also the interquartile mean (IQM) with its 95% stratified-bootstrap
CI (Agarwal et al. 2021, ``rliable``), and the probability of improvement where both arms have at
least 2 seeds. Learning curves draw the 95% CI as a band: over seeds, or over the episodes of each
evaluation for a single seed.

The package, by concern (each module imports only those before it):

- `lamo_ray.report.load`: the sweep's MLflow runs read into `TrialResult`s; names of params, metrics, outcomes;
- `lamo_ray.report.stats`: arms, CIs, comparisons with the baseline, ASHA summary, best config;
- `lamo_ray.report.continual`: Continual World's metrics per arm, forgetting comparisons;
- `lamo_ray.report.plots`: the figures;
- `lamo_ray.report.render`: the document's sections, Markdown and HTML, ``final_scores.csv``;
- here: `generate_report`, the CLI (`main`, run by ``__main__``) and their public names re-exported.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lamo_ray.config import DEFAULT_BASELINE, ConfigError, find_domains
from lamo_ray.report.continual import (REFERENCE_METHOD, ContinualArm, ForgettingComparison, compare_forgetting,
                                       continual_arms, reference_aucs, trial_forward_transfer)
from lamo_ray.report.load import (AUC_METRIC, AVERAGE_SUCCESS, COMPLETED, CONTINUAL_PARAM, FAILED, FINAL_WINDOW,
                                  FORGETTING, MATRIX_ARTIFACT, OFFLINE, ONLINE_PARAMS, RATIO_PARAM, RUNNING,
                                  STEPS_PARAM,
                                  STOPPED, SUCCESS_RULE_PARAM, TARGET_SCORE, UNFINISHED, ReportError, TrialResult,
                                  _download_text, _read_selection, arm_label, episode_scores, final_score,
                                  find_sweep_run, load_trial, metric_by_step, planned_steps)
from lamo_ray.report.plots import (OUTCOME_COLORS, Drawn, Series, _colors, plot_asha, plot_continual_curves,
                                   plot_learning_curves, plot_online_curves, plot_score_vs_ratio,
                                   plot_success_matrices)
from lamo_ray.report.render import (ReportContent, Section, build_sections, continual_sections, render_html,
                                    render_markdown, success_rule_sentence, supported_findings, write_scores_csv)
from lamo_ray.report.stats import (BOOTSTRAP_REPS, CI_UNAVAILABLE, NO_CI, ArmStats, AshaSummary, Improvement, arm_stats,
                                   asha_summary, baseline_pairs, best_arm, best_config_yaml, best_versus_runner_up,
                                   bootstrap_library, compare_with_baseline, probability_of_improvement, rung_of)
from lamo_ray.tracking import BASELINE_PARAM, ROLE_TAG, RUNGS_PARAM, resolve_tracking_uri

__all__ = ["AUC_METRIC", "AVERAGE_SUCCESS", "ArmStats", "AshaSummary", "BOOTSTRAP_REPS", "CI_UNAVAILABLE", "COMPLETED",
           "CONTINUAL_PARAM", "ContinualArm", "Drawn", "FAILED", "FINAL_WINDOW", "FORGETTING", "ForgettingComparison",
           "Improvement", "MATRIX_ARTIFACT", "NO_CI", "ONLINE_PARAMS", "OUTCOME_COLORS", "RATIO_PARAM",
           "REFERENCE_METHOD", "RUNNING", "Report", "ReportContent", "ReportError", "STEPS_PARAM", "STOPPED", "Series",
           "SUCCESS_RULE_PARAM", "Section", "TARGET_SCORE", "TrialResult", "UNFINISHED", "arm_label", "arm_stats",
           "asha_summary", "baseline_pairs", "best_arm", "best_config_yaml", "best_versus_runner_up",
           "bootstrap_library", "build_sections", "compare_forgetting", "compare_with_baseline", "continual_arms",
           "continual_sections", "episode_scores", "final_score", "find_sweep_run", "generate_report", "load_trial",
           "main", "metric_by_step", "planned_steps", "plot_asha", "plot_learning_curves", "plot_online_curves",
           "plot_score_vs_ratio", "plot_success_matrices", "probability_of_improvement", "reference_aucs",
           "render_html", "render_markdown", "rung_of", "success_rule_sentence", "supported_findings",
           "trial_forward_transfer", "write_scores_csv"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """A written report: ``path`` of its ``report.md`` (``report.html`` beside it), its ``findings``,
    the sentences of "What the data support" (`supported_findings`), and its ``figures`` by key
    (`_figures`: what each drew)."""

    path: Path
    findings: list[str]
    figures: dict[str, Drawn] = field(default_factory=dict)


def generate_report(tracking_uri: str, experiment: str, out_dir: str | Path, parent_run_id: str | None = None,
                    baseline_variant: str | None = None, *, reps: int = BOOTSTRAP_REPS, seed: int = 0,
                    log_to_mlflow: bool = True) -> Report:
    """Write the sweep report into ``out_dir`` and log it as artifacts ``report/`` of the parent run.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment name (the sweep name by default) or id.
        out_dir: directory for the files (created).
        parent_run_id: the sweep's parent run; default the latest ``lamo_ray.role=sweep`` run.
        baseline_variant: variant every other variant is compared with; default the sweep's
            ``report_baseline`` as its parent run recorded it. When absent from the trials the
            comparisons are skipped with a note in the report.
        reps: bootstrap replicates per CI.
        seed: seed of the bootstrap, so the same store gives the same CIs.
        log_to_mlflow: log the files to the parent run (the sweep driver and CLI do).

    Returns:
        `Report`: the path of ``report.md`` and the findings in words.

    Raises:
        ReportError: experiment or sweep run not found.
    """
    import tempfile

    client = MlflowClient(tracking_uri)
    parent = find_sweep_run(client, experiment, parent_run_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweep_yaml = _download_text(client, parent.info.run_id, "sweep.yaml", Path(tmp))
    sweep = yaml.safe_load(sweep_yaml)
    recorded = parent.data.params
    baseline_variant = baseline_variant or recorded.get(BASELINE_PARAM, DEFAULT_BASELINE)
    rungs = [int(r) for r in recorded.get(RUNGS_PARAM, "").split(",") if r]
    swept = [p for p in find_domains(sweep.get("base", {})) if p != RATIO_PARAM]
    runs = client.search_runs([parent.info.experiment_id], max_results=10_000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                            f"and tags.`{ROLE_TAG}` = 'trial'")
    trials = [load_trial(client, r, swept) for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            if t.continual and t.outcome == COMPLETED:
                try:
                    t.success_matrix = json.loads(_download_text(client, t.run_id, MATRIX_ARTIFACT, Path(tmp)))
                except (MlflowException, OSError, ValueError) as err:
                    log.warning("trial %s: no readable %s (%s)", t.name, MATRIX_ARTIFACT, err)
    log.info("sweep %s: %d trial runs under parent run %s", sweep.get("name"), len(trials), parent.info.run_id)
    # a sweep with a confirmation stage is scored from its confirmation trials only (module docstring)
    search = [t for t in trials if t.stage == "search"]
    scored = [t for t in trials if t.stage != "search"]
    selection = _read_selection(client, parent.info.run_id) if search else []

    notes = _notes(trials, scored, baseline_variant)
    stats = arm_stats(scored, reps=reps, seed=seed)
    has_baseline = any(t.variant == baseline_variant for t in scored)
    comparisons = compare_with_baseline(stats, scored, baseline_variant,
                                        episodes=functools.partial(episode_scores, client)) if has_baseline else []
    improvements = probability_of_improvement(stats, scored, baseline_variant, reps, seed) if has_baseline else []
    asha = asha_summary(search or trials, rungs)
    colors = _colors(sorted({t.label for t in trials}))
    drawn = _figures(out, trials, scored, search, stats, asha, colors)
    continual = continual_arms(scored)
    if continual:
        drawn["matrix"] = plot_success_matrices(continual, out / "success_matrix.png")
    figures = {key: d.path for key, d in drawn.items()}
    best = best_arm(stats)
    best_yaml = None
    files = [*figures.values(), write_scores_csv(trials, out / "final_scores.csv")]
    if best is not None:
        try:
            best_yaml = best_config_yaml(sweep_yaml, best, scored)
        except (ConfigError, ValueError, KeyError) as err:
            notes.append(f"the best config could not be written as a sweep file: {err}")
            log.warning("best config not written: %s", err)
        else:
            files.append(out / "best_config.yaml")
            files[-1].write_text(best_yaml)
    content = ReportContent(sweep.get("name", experiment), parent, trials, scored, search, stats, comparisons,
                            improvements, asha, figures, best, best_versus_runner_up(stats, best) if best else None,
                            best_yaml, selection, notes, baseline_variant, continual,
                            compare_forgetting(continual, scored, baseline_variant) if has_baseline else [])
    sections = build_sections(content)
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(sections))
    page.write_text(render_html(sections))
    files += [md, page]
    if log_to_mlflow:
        for f in files:
            client.log_artifact(parent.info.run_id, str(f), "report")
        log.info("report logged to run %s as report/", parent.info.run_id)
    return Report(md, supported_findings(content), drawn)


FIGURE_FILES = ("score_vs_sample_ratio.png", "learning_curves.png", "online_curves.png", "continual_curves.png",
                "asha.png", "success_matrix.png")


def _figures(out: Path, trials: list[TrialResult], scored: list[TrialResult], search: list[TrialResult],
             stats: list[ArmStats], asha: AshaSummary, colors: dict) -> dict[str, Drawn]:
    """The figures that fit what the sweep is (issue 31), by key:

    - ``score``: final score vs sample ratio, only when the sweep has more than one sample ratio;
    - ``curves``: score vs training step of the offline trials (none for online or continual trials,
      whose x axes are online transitions and the continual sequence);
    - ``online``: score vs online transitions, critic loss and Q beside (trials with an online phase);
    - ``continual``: each evaluated task's success over the continual sequence with its stages;
    - ``asha``: steps run per trial, only for an ASHA sweep (or its search stage).

    The success matrices (``matrix``) are drawn by the caller from the continual arms."""
    drawn: dict[str, Drawn] = {}
    for name in FIGURE_FILES:   # a figure an earlier report of another shape left here would read as this one's
        (out / name).unlink(missing_ok=True)
    if len({s.sample_ratio for s in stats}) > 1:
        drawn["score"] = plot_score_vs_ratio(stats, out / "score_vs_sample_ratio.png", colors)
    offline = [t for t in scored if t.kind == OFFLINE]
    if offline:
        drawn["curves"] = plot_learning_curves(offline, out / "learning_curves.png", colors)
    online = plot_online_curves(scored, out / "online_curves.png", colors)
    if online is not None:
        drawn["online"] = online
    sequence = plot_continual_curves(scored, out / "continual_curves.png")
    if sequence is not None:
        drawn["continual"] = sequence
    if asha.rungs:
        drawn["asha"] = plot_asha(search or trials, asha, out / "asha.png")
    return drawn


def _notes(trials: list[TrialResult], scored: list[TrialResult], baseline_variant: str) -> list[str]:
    """What a reader must know before trusting the tables: unfinished sweep, failures, single seeds."""
    notes = []
    running = [t for t in trials if t.outcome in (RUNNING, UNFINISHED)]
    if not trials:
        notes.append("this sweep has no trial runs yet.")
    if running:
        notes.append(f"{len(running)} trial(s) not finished (MLflow still shows RUNNING, or the sweep was "
                     "interrupted): the numbers below are preliminary.")
    failed = [t for t in trials if t.outcome == FAILED]
    if failed:
        notes.append(f"{len(failed)} trial(s) failed: {', '.join(t.name for t in failed)}.")
    if any(t.outcome == STOPPED for t in scored):
        notes.append("the scheduler (ASHA) stopped trials inside the arms below: those arms are incomplete and not "
                     "compared. For a method comparison run every seed to the end (scheduler.type: fifo), or add a "
                     "confirmation stage (confirm:) after an ASHA search.")
    if trials and not any(t.variant == baseline_variant for t in scored):
        notes.append(f"no variant named {baseline_variant!r}: no comparison (choose one with --baseline VARIANT).")
    per_arm: dict[tuple[str, float], int] = defaultdict(int)
    for t in scored:
        per_arm[(t.label, t.sample_ratio)] += t.final_score is not None
    if bootstrap_library()[0] is None and any(n > 1 for n in per_arm.values()):
        notes.append(f"IQM confidence intervals unavailable: rliable's bootstrap cannot be imported "
                     f"({bootstrap_library()[1]}); rliable 1.2 needs arch < 8, which needs pandas < 3.")
    if any(n == 1 for n in per_arm.values()):
        notes.append(f"some arms have one scored seed ({NO_CI}): their numbers are single training runs, and a "
                     "comparison between two of them covers evaluation noise only.")
    return notes


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lamo_ray.report", description=__doc__.split("\n")[0])
    p.add_argument("experiment", metavar="SWEEP_NAME_OR_MLFLOW_EXPERIMENT")
    p.add_argument("--out", help="output directory (default: reports/<experiment>)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
    p.add_argument("--parent-run-id", help="the sweep's parent run (default: the latest sweep run)")
    p.add_argument("--baseline", help="variant every other variant is compared with (default: the sweep's "
                   "report_baseline)")
    p.add_argument("--reps", type=int, default=BOOTSTRAP_REPS, help=f"bootstrap replicates per CI (default: {BOOTSTRAP_REPS})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        report = generate_report(uri, args.experiment, args.out or Path("reports") / args.experiment,
                                 args.parent_run_id, args.baseline, reps=args.reps)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report.findings))
    print(f"report: {report.path}\nhtml:   {report.path.with_suffix('.html')}")
    return 0
