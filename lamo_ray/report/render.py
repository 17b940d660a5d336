"""The report as a document (`lamo_ray.report`): `ReportContent` (everything `generate_report` computed)
laid out as `Section`s of text, tables, figures and code (`build_sections`, the continual trials' part
in `continual_sections`), what the data support in words (`supported_findings`), rendered to Markdown
and to a self-contained HTML page; and the per-trial ``final_scores.csv``.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Run

from lamo_ray.intervals import FORGETTING_RANGE, SUCCESS_RANGE, TRANSFER_RANGE, Comparison, spans_range
from lamo_ray.report.continual import REFERENCE_METHOD, ContinualArm, ForgettingComparison
from lamo_ray.report.load import (CONTINUAL, COMPLETED, FINAL_WINDOW, RUNNING, STOPPED, TrialResult, _steps_run,
                                  arm_label)
from lamo_ray.report.stats import (CI_UNAVAILABLE, FEW_FOR_BOOTSTRAP, MIN_BOOTSTRAP_SEEDS, NO_CI, TOO_FEW, ArmStats,
                                   AshaSummary, Improvement, rung_of)


@dataclass
class Section:
    """A piece of the report, rendered to Markdown and HTML alike: text, table, figure or code."""

    kind: str                     # "heading" | "text" | "table" | "figure" | "code"
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci: tuple[float, float] | None, arm: ArmStats | None = None,
            bounds: tuple[float, float] | None = None) -> str:
    """A CI as text; for a bounded metric (``bounds``, or the arm's) a CI that is its whole range is
    stated as too few seeds (`lamo_ray.intervals.spans_range`), not printed as an estimate."""
    if spans_range(ci, bounds if bounds is not None else getattr(arm, "bounds", None)):
        return TOO_FEW
    if ci is not None and ci[0] == ci[1] and (arm is not None or bounds is not None):   # a mean over equal seeds
        return f"no spread: every seed {ci[0]:.2f}"
    if ci is not None:
        return f"[{ci[0]:.2f}, {ci[1]:.2f}]"
    if arm is None:
        return "-"
    if not arm.complete:
        return "none: incomplete arm"
    return NO_CI if arm.n == 1 else CI_UNAVAILABLE


def _trial_status(t: TrialResult, asha: AshaSummary) -> str:
    if t.outcome == STOPPED:
        rung = rung_of(t.stopped_at_step or 0, asha.rungs)
        return f"stopped at step {_steps_run(t)}" + (f" (rung {rung})" if rung else "")
    if t.outcome == RUNNING:
        return f"running (step {t.last_step or 0} of {t.steps})"
    return t.outcome


@dataclass
class ReportContent:
    """Everything `build_sections` renders (computed by `generate_report`)."""

    sweep_name: str
    parent: Run
    trials: list[TrialResult]                 # every trial run of the sweep
    scored: list[TrialResult]                 # the trials the arms are scored from
    search: list[TrialResult]                 # the search stage's trials (empty without confirm)
    stats: list[ArmStats]
    comparisons: list[tuple[float, Comparison]]
    improvements: list[Improvement]
    asha: AshaSummary
    figures: dict[str, Path]
    best: ArmStats | None
    best_check: Comparison | None
    best_yaml: str | None
    selection: list[dict[str, Any]]
    notes: list[str]
    baseline: str
    continual: list[ContinualArm] = field(default_factory=list)
    forgetting: list[ForgettingComparison] = field(default_factory=list)


def _shared_setting(c: Comparison) -> tuple[str, Comparison]:
    """``("task=easy", comparison of the bare variants)`` when both arms carry the same other swept values
    (`lamo_ray.report.load.arm_label`: ``lamo (task=easy)`` vs ``dt (task=easy)``), so a sentence names them
    once, first; ``("", c)`` otherwise."""
    label, _, setting = c.label.partition(" (")
    base, _, base_setting = c.baseline.partition(" (")
    if setting and setting == base_setting:
        return setting.rstrip(")"), dataclasses.replace(c, label=label, baseline=base)
    return "", c


def supported_findings(content: ReportContent) -> list[str]:
    """The report's conclusions in words: one sentence per comparison with the baseline, and why an
    arm is not compared (incomplete, or no baseline at its sample ratio)."""
    lines = []
    # a sentence names the sample ratio only when the sweep varies it (issue 31)
    ratios = {r for r, _ in content.comparisons} | {a.sample_ratio for a in content.stats} | \
        {f.sample_ratio for f in content.forgetting}
    several = len(ratios) > 1
    for ratio, c in content.comparisons:
        where, c = _shared_setting(c)
        where = ([f"Sample ratio {ratio:g}"] if several else []) + ([where] if where else [])
        lines.append(f"{', '.join(where)}: {c.sentence()}" if where else c.sentence())   # labels keep their case
    for f in content.forgetting:
        where, shared = _shared_setting(f.comparison)
        sentence = dataclasses.replace(f, comparison=shared).sentence(with_ratio=several)
        lines.append(f"{where}: {sentence}" if where else sentence)
    for arm in content.stats:
        if not arm.complete and arm.planned:
            why = (", ".join(f"{v} {k}" for k, v in sorted(arm.counts.items()) if k != COMPLETED)
                   or f"{arm.counts.get(COMPLETED, 0)} completed without a normalized score: no reference scores "
                      "for the env, or no evaluation")
            at = f" at sample ratio {arm.sample_ratio:g}" if several else ""
            lines.append(f"{arm.label}{at} has {arm.seeds_text} scored ({why}): "
                         "its mean is over the seeds that finished, so it is not compared.")
    if not content.comparisons and content.stats and not any(c for c in lines):
        lines.append(f"No comparison: no complete arm has a complete baseline ({content.baseline!r}) arm at its "
                     "sample ratio.")
    return lines


def build_sections(content: ReportContent) -> list[Section]:
    """The report's content, in order: what the data support, the tables, figures, the search, trials,
    best config."""
    c = content
    counts = Counter(t.outcome for t in c.trials)
    sec = [Section("heading", f"Sweep report: {c.sweep_name}"),
           Section("text", f"Parent MLflow run `{c.parent.info.run_id}` ({c.parent.info.status}); generated "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Trials: {len(c.trials)}"
                           + (f" ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})." if c.trials else "."))]
    if c.search:
        sec.append(Section("text", f"Search, then confirm: the arms below are scored from the {len(c.scored)} "
                                   "confirmation trials only (the search's best configurations, trained again with "
                                   f"fresh seeds, none stopped); the {len(c.search)} search trials are in \"Search\"."))
    findings = supported_findings(c)
    if findings:
        sec += [Section("heading", "What the data support")] + [Section("text", line) for line in findings]
    kinds = {t.kind for t in c.scored}
    protocol = []
    if kinds - {CONTINUAL}:
        protocol.append("Final score (LaMo protocol, docs/references/lamo.md \"Evaluation\"): mean of the evaluations "
                        f"in the last {FINAL_WINDOW:.0%} of the trial's train.steps (plus its online updates, for a "
                        "trial with an online phase) at the best target return (the target with the highest such "
                        "mean); normalized score x100. Only completed trials have one.")
    if CONTINUAL in kinds:
        protocol.append(("A continual trial's final score is instead" if len(kinds) > 1 else "Final score:")
                        + " its average success after the last stage, x100, in [0, 100] (\"Continual learning\" "
                          "below).")
    protocol.append("Per arm: mean with its 95% Student-t CI over seeds (for a final score with a range, an average "
                    "success, the interval intersected with [0, 100], which keeps its coverage; \"" + TOO_FEW + "\" "
                    "where that is all of it), IQM with its 95% stratified-bootstrap CI (rliable). Comparisons: "
                    "difference of means with Welch's 95% CI; a difference is supported when its CI excludes 0. No "
                    "correction for multiple comparisons.")
    sec.append(Section("text", " ".join(protocol)))
    sec += [Section("text", f"**Note:** {n}") for n in c.notes]
    sec += [Section("heading", "Final score per variant and sample ratio"),
            Section("table", headers=["variant", "sample ratio", "seeds", "mean", "mean 95% CI", "IQM", "IQM 95% CI",
                                      "not scored"],
                    rows=[[s.label, f"{s.sample_ratio:g}", s.seeds_text, _fmt(s.mean), _fmt_ci(s.mean_ci, s),
                           _fmt(s.iqm), FEW_FOR_BOOTSTRAP if s.complete and 2 <= s.n < MIN_BOOTSTRAP_SEEDS
                           else _fmt_ci(s.iqm_ci, s),
                           ", ".join(f"{v} {k}" for k, v in sorted(s.counts.items()) if k != COMPLETED) or "-"]
                          for s in c.stats])]
    sec += _per_task(c)
    if c.comparisons:
        sec += [Section("heading", f"Comparison with {c.baseline}"),
                Section("table", headers=["variant", "baseline", "sample ratio", "difference", "95% CI", "over",
                                          "the data say"],
                        rows=[[cmp.label, cmp.baseline, f"{ratio:g}", f"{cmp.difference:+.2f}",
                               "-" if cmp.ci is None else f"[{cmp.ci[0]:+.2f}, {cmp.ci[1]:+.2f}]",
                               f"{cmp.n} vs {cmp.n_baseline} {cmp.unit}", cmp.verdict]
                              for ratio, cmp in c.comparisons])]
    if c.improvements:
        sec += [Section("heading", "Probability of improvement over the baseline"),
                Section("text", "P(X > Y): the chance that a seed of the variant scores above a seed of the baseline "
                                "(rliable; 0.5 = no difference); arms with at least 2 seeds on both sides."),
                Section("table", headers=["variant", "baseline", "sample ratio", "P(variant > baseline)", "95% CI"],
                        rows=[[i.label, i.baseline, "all (average)" if i.sample_ratio is None else f"{i.sample_ratio:g}",
                               f"{i.probability:.3f}", i.note or _fmt_ci(i.ci)] for i in c.improvements])]
    if c.continual:
        sec += continual_sections(c)
    titles = {"score": "Final score vs sample ratio", "curves": "Learning curves (offline trials)",
              "online": "Online fine-tuning: score vs online transitions, critic beside"}
    sec += [Section("figure", title, path=c.figures[key]) for key, title in titles.items() if key in c.figures]
    if c.search:
        sec += [Section("heading", "Search"),
                Section("text", "The search's configurations, ranked per variant by the furthest step reached, then "
                                "the last evaluation's score; these scores are not estimates of the arms (selection "
                                "and early stopping bias them upward). Picked for confirmation:"),
                Section("table", headers=["variant", "rank", "configuration", "search step", "search score",
                                          "search seeds"],
                        rows=[[r["variant"], str(r["rank"]),
                               ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in r["params"].items()),
                               f"{r['search_step']:g}", _fmt(r["search_score"]), str(r["search_seeds"])]
                              for r in c.selection])]
    if c.asha.rungs:
        sec += [Section("heading", "ASHA"),
                Section("text", (f"Rung milestones (steps): {', '.join(map(str, c.asha.rungs))}. {c.asha.stopped} "
                                 f"trial(s) stopped; compute saved: {c.asha.saved_steps:,} of {c.asha.total_steps:,} "
                                 f"trial-steps ({c.asha.saved_share:.0%}) compared with running every trial to its "
                                 "train.steps.")),
                Section("figure", "ASHA: steps run per trial", path=c.figures["asha"])]
    sec += [Section("heading", "Trials"),
            Section("table", headers=["trial", "stage", "variant", "sample ratio", "seed", "status", "final score",
                                      "best target", "last eval score", "last eval 95% CI", "MLflow run"],
                    rows=[[t.name, t.stage, t.label, f"{t.sample_ratio:g}", str(t.seed), _trial_status(t, c.asha),
                           _fmt(t.final_score), t.best_target or "-", _fmt(t.curve[-1][1] if t.curve else None),
                           _fmt_ci(t.curve_ci.get(t.curve[-1][0])) if t.curve else "-", t.run_id]
                          for t in sorted(c.trials, key=lambda t: (t.stage != "search", t.label, t.sample_ratio,
                                                                    t.seed))]),
            Section("heading", "Best config")]
    if c.best is None:
        sec.append(Section("text", "No complete arm yet: no best config."))
    else:
        text = (f"{c.best.label} at sample ratio {c.best.sample_ratio:g}: mean final score {c.best.mean:.2f} "
                f"{_fmt_ci(c.best.mean_ci, c.best)} over {c.best.n} seed(s), the highest mean. Saved as "
                "`best_config.yaml`.")
        if c.best_check is not None:
            text += (" It is a finding only if it beats the runner-up: " + c.best_check.sentence()
                     if c.best_check.verdict != "higher" else " " + c.best_check.sentence())
        sec.append(Section("text", text))
        if c.best_yaml:
            sec.append(Section("code", c.best_yaml))
    return sec if several_ratios(c) else _without_ratio(sec, c)


def several_ratios(c: ReportContent) -> bool:
    """Whether the sweep's trials span more than one sample ratio (else no table or sentence names it)."""
    return len({t.sample_ratio for t in c.trials}) > 1


def _without_ratio(sections: list[Section], c: ReportContent) -> list[Section]:
    """The sections without their "sample ratio" columns and with "and sample ratio" dropped from
    headings, for a sweep of one ratio; the ratio is said once, under the first heading (issue 31)."""
    out = []
    for s in sections:
        if s.kind == "table" and "sample ratio" in s.headers:
            i = s.headers.index("sample ratio")
            s = Section("table", headers=s.headers[:i] + s.headers[i + 1:], rows=[r[:i] + r[i + 1:] for r in s.rows])
        elif s.kind == "heading" and " and sample ratio" in s.text:
            s = Section("heading", s.text.replace(" and sample ratio", ""))
        out.append(s)
    ratio = next(iter({t.sample_ratio for t in c.trials}), None)
    if ratio is not None:
        out.insert(2, Section("text", f"Every trial uses sample ratio {ratio:g} (`data.sample_ratio`)."))
    return out


def _per_task(c: ReportContent) -> list[Section]:
    """For a sweep over ``tasks:`` (the swept key ``task``): one row per task (and sample ratio, when
    varied), one column per variant (with its other swept values), each cell the arm's mean final score,
    its 95% CI and seeds, so a variant is read across tasks at a glance. Empty for other sweeps."""
    tasks = {t.label: dict(t.setting).get("task") for t in c.scored}
    if not any(tasks.values()):
        return []
    def column(label: str) -> str:   # the arm's label without its task
        t = next(t for t in c.scored if t.label == label)
        return arm_label(t.variant, tuple((k, v) for k, v in t.setting if k != "task"))
    columns = sorted({column(s.label) for s in c.stats})
    ratios = sorted({s.sample_ratio for s in c.stats})
    cells = {(tasks[s.label], s.sample_ratio, column(s.label)): s for s in c.stats}
    rows = []
    for task in sorted({v for v in tasks.values() if v}):
        for ratio in ratios:
            row = [task] + ([f"{ratio:g}"] if len(ratios) > 1 else [])
            for col in columns:
                arm = cells.get((task, ratio, col))
                row.append("-" if arm is None or arm.mean is None else
                           f"{arm.mean:.2f} {_fmt_ci(arm.mean_ci, arm)} (n={arm.seeds_text})")
            rows.append(row)
    return [Section("heading", "Per task"),
            Section("text", "Mean final score per task and variant, with its 95% CI over seeds (the comparisons "
                            "below are task by task)."),
            Section("table", headers=["task"] + (["sample ratio"] if len(ratios) > 1 else []) + columns, rows=rows)]


def success_rule_sentence(rules: list[str]) -> str:
    """What the continual success rates count, from the rules the trials logged (``continual.success_rule``)."""
    from lamo_ray.continual import SUCCESS_RULE_MEANING as SUCCESS_RULES

    if len(rules) == 1 and rules[0] in SUCCESS_RULES:
        return f"An episode is a success by `continual.success_rule: {rules[0]}`: {SUCCESS_RULES[rules[0]]}."
    if len(rules) == 1:
        return ("The trials did not log `continual.success_rule` (runs before it existed counted a success at any "
                "step): the success rule of these numbers is not recorded.")
    return ("The arms were scored by different success rules (`continual.success_rule`, the column 'success rule': "
            + "; ".join(f"{r}: {SUCCESS_RULES.get(r, 'not recorded')}" for r in rules)
            + "): their success rates are not comparable across rules.")


def continual_sections(c: ReportContent) -> list[Section]:
    """The continual trials' part of the report: definitions, per-arm table, forgetting comparisons,
    success-matrix heatmaps."""
    rows = []
    for a in c.continual:
        success, success_ci = a.ci(a.average_success, SUCCESS_RANGE)
        forget, forget_ci = a.ci(a.forgetting, FORGETTING_RANGE)
        why = "none: incomplete arm" if not a.complete else NO_CI
        row = [a.label, f"{a.sample_ratio:g}", str(a.n) if a.complete else f"{a.n} of {a.planned} seeds",
               _fmt(success), _fmt_ci(success_ci, bounds=SUCCESS_RANGE) if success_ci else why,
               _fmt(forget), _fmt_ci(forget_ci, bounds=FORGETTING_RANGE) if forget_ci else why]
        if a.forward_transfer is not None:
            transfer, transfer_ci = a.ci(a.forward_transfer, TRANSFER_RANGE)
            row += [_fmt(transfer), _fmt_ci(transfer_ci) if transfer_ci else why]
        else:
            row += ["reference" if any(t.label == a.label and t.continual_method == REFERENCE_METHOD
                                       for t in c.trials) else "-", "-"]
        rows.append(row)
    rules = sorted({r for a in c.continual for r in a.success_rules})
    if len(rules) > 1:      # arms scored by different rules: each row says its own
        for a, row in zip(c.continual, rows):
            row.insert(3, ", ".join(a.success_rules))
    sec = [Section("heading", "Continual learning (Continual World metrics)"),
           Section("text", success_rule_sentence(rules)),
           Section("text", "Success matrix: the success rate of each evaluated task (rows) at the end of each stage "
                           "(columns). Average success: the mean over the sequence's tasks after the last stage (the "
                           "final score of a continual trial, x100). Forgetting: per task, its success at the end of "
                           "its own stage minus its success at the end of the sequence, averaged over the sequence's "
                           "tasks (the last task's is 0 by construction), x100; lower is better (Continual World's "
                           "definitions, `lamo_ray.continual.metrics`). Per arm: mean with its 95% Student-t CI over "
                           "seeds, intersected with the metric's range (average success [0, 100], forgetting "
                           "[-100, 100]; an interval intersected with the range its parameter must lie in keeps its "
                           "95% coverage); where that is the whole range the table says too few seeds. Forgetting is "
                           "compared with the baseline by Welch's 95% CI of the difference, within [-200, 200]. Forward "
                           "transfer (x100): per task (AUC - AUC_ref) / (1 - AUC_ref), AUC its mean success over its "
                           "own stage and AUC_ref the same for the `single` variant (each task trained alone from the "
                           "pre-trained weights, mean over its seeds), averaged over the tasks; only where the sweep "
                           "has a `single` variant."),
           Section("table", headers=["variant", "sample ratio", "seeds", *(["success rule"] if len(rules) > 1 else []),
                                     "average success", "95% CI", "forgetting", "95% CI", "forward transfer", "95% CI"],
                   rows=rows)]
    if c.forgetting:
        sec.append(Section("table", headers=["variant", "baseline", "sample ratio", "forgetting difference", "95% CI",
                                             "over", "the data say"],
                           rows=[[f.comparison.label, f.comparison.baseline, f"{f.sample_ratio:g}",
                                  f"{f.comparison.difference:+.2f}",
                                  "-" if f.comparison.ci is None
                                  else f"[{f.comparison.ci[0]:+.2f}, {f.comparison.ci[1]:+.2f}]",
                                  f"{f.comparison.n} vs {f.comparison.n_baseline} seeds", f.verdict]
                                 for f in c.forgetting]))
    if "continual" in c.figures:
        sec.append(Section("figure", "Success per task over the sequence, stages marked", path=c.figures["continual"]))
    sec.append(Section("figure", "Success matrix per variant", path=c.figures["matrix"]))
    return sec


def render_markdown(sections: list[Section]) -> str:
    """Markdown with figures linked by file name (they sit beside report.md)."""
    out = []
    for s in sections:
        if s.kind == "heading":
            out.append(("# " if not out else "## ") + s.text)
        elif s.kind == "text":
            out.append(s.text)
        elif s.kind == "table":
            cells = [[c.replace("|", "\\|") for c in row] for row in [s.headers] + s.rows]
            out.append("\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(s.headers)]
                                 + ["| " + " | ".join(r) + " |" for r in cells[1:]]))
        elif s.kind == "figure":
            out.append(f"![{s.text}]({s.path.name})")
        elif s.kind == "code":
            out.append(f"```yaml\n{s.text}```")
    return "\n\n".join(out) + "\n"


def render_html(sections: list[Section]) -> str:
    """One self-contained HTML page: figures embedded as base64 PNG, no external files."""
    body = []
    for s in sections:
        text = html.escape(s.text)
        if s.kind == "heading":
            body.append(f"<h{1 if not body else 2}>{text}</h{1 if not body else 2}>")
        elif s.kind == "text":
            text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`(.+?)`", r"<code>\1</code>", text))
            body.append(f"<p>{text}</p>")
        elif s.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in s.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in s.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif s.kind == "figure":
            data = base64.b64encode(s.path.read_bytes()).decode()
            body.append(f'<figure><img alt="{text}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{text}</figcaption></figure>")
        elif s.kind == "code":
            body.append(f"<pre>{text}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
             "th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}")
    title = html.escape(sections[0].text if sections else "Sweep report")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_scores_csv(trials: list[TrialResult], path: Path) -> Path:
    """One row per trial: run id, variant, sample ratio, seed, outcome, steps, final score, best target."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "trial", "variant", "sample_ratio", "seed", "outcome", "train_steps", "steps_run",
                    "final_score", "best_target"])
        for t in trials:
            w.writerow([t.run_id, t.name, t.label, t.sample_ratio, t.seed, t.outcome, t.steps, _steps_run(t),
                        "" if t.final_score is None else t.final_score, t.best_target or ""])
    return path
