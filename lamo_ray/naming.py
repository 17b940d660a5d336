"""What a sweep's MLflow runs are called and what they say (`lamo_ray.tracking` writes them): a trial run's
name from what sets it apart (`trial_run_name`) and the parent run's description of the sweep
(`sweep_description`); and where the report's files go on the parent run (`REPORT_ARTIFACT_DIR`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamo_ray.config import SweepConfig, find_domains

#: where `lamo_ray.report` logs its files on the parent run (``report/report.html``, ``report/report.md``, ...)
REPORT_ARTIFACT_DIR = "report"


def _short_value(value: Any) -> str:
    """A swept value as a run name shows it: floats to 4 significant digits, the rest as ``str``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_run_name(variant: str, params: Mapping[str, Any], seed: int, stage: str = "main") -> str:
    """A trial's MLflow run name: what sets the trial apart from the sweep's other trials, so the
    MLflow UI's runs table tells them apart without extra columns (Tune's own name,
    ``run_trial_9c945_00000``, says nothing; it stays in the run's ``trial_name`` tag).

    Parts, joined by `` · ``: the variant; the task (the value of the swept ``task`` key); every
    other swept value (``params``: {key path: value}, as `lamo_ray.config.tune_variant_and_params`
    gives them) as ``key=value`` in key-path order, the key shown by its last component unless two
    swept keys share it (then the whole path), floats to 4 significant digits; ``seed N``; and the
    stage when it is ``search`` or ``confirm`` (a sweep without confirmation has only ``main``).

    Example: ``lamo · hopper-medium · sample_ratio=0.1 · seed 2``; ``l2m · seed 0``.
    """
    parts = [variant]
    if "task" in params:
        parts.append(_short_value(params["task"]))
    others = sorted(k for k in params if k != "task")
    last = [k.rsplit(".", 1)[-1] for k in others]
    for key, short in zip(others, last):
        shown = short if last.count(short) == 1 else key
        parts.append(f"{shown}={_short_value(params[key])}")
    parts.append(f"seed {seed}")
    if stage != "main":
        parts.append(stage)
    return " · ".join(parts)


def _overrides(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key.path=value`` for each leaf of a (possibly dotted-key) override mapping, in its order."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out += _overrides(value, path)
        else:
            out.append(f"{path}={value}")
    return out


def _domain_text(domain: Mapping[str, Any]) -> str:
    """A search domain as the description shows it: ``0.01, 0.1`` for a grid, ``loguniform(1e-05, 0.001)``."""
    kind, args = next(iter(domain.items()))
    if kind == "grid":
        return ", ".join(_short_value(a) for a in args)
    if kind == "choice":
        return "one of " + ", ".join(_short_value(a) for a in args)
    return f"{kind}({', '.join(_short_value(a) for a in args)})"


def sweep_description(sweep: SweepConfig, run_name: str) -> str:
    """The parent run's description (`lamo_ray.tracking.NOTE_TAG`, Markdown): what the sweep ``run_name`` compares.

    Its variants (what each sets, and which is the report's baseline, ``report_baseline``), its
    tasks, the swept values (``base``'s search domains), its seeds, the scheduler, the number of
    trials (with the confirmation stage's, if any) and where the report will be: this run's
    artifacts ``report/report.html`` (`lamo_ray.report` logs it there at the end of the sweep).
    Someone opening the run in the MLflow UI learns from it what the child runs are."""
    if sweep.report_baseline in sweep.variants:
        against = f"the report compares each with the baseline **{sweep.report_baseline}**"
    else:
        against = (f"the report's baseline `{sweep.report_baseline}` (`report_baseline`) is not one of them, "
                   "so the report makes no comparisons with it")
    lines = [f"**Sweep `{run_name}`** compares {len(sweep.variants)} variant(s); {against}:", ""]
    for name, overrides in sweep.variants.items():
        what = ", ".join(f"`{o}`" for o in _overrides(overrides)) or "the base config"
        lines.append(f"- **{name}**{' (baseline)' if name == sweep.report_baseline else ''}: {what}")
    lines.append("")
    domains = find_domains(sweep.base)
    task = sweep.base.get("task")
    if "task" in domains:
        lines.append(f"- tasks: {_domain_text(domains['task'])}")
    elif task is not None:
        lines.append(f"- task: {task}")
    for path, domain in domains.items():
        if path != "task":
            lines.append(f"- `{path}`: {_domain_text(domain)}")
    lines.append(f"- seeds: {', '.join(map(str, sweep.seeds))}"
                 + (f"; {sweep.num_samples} samples of the random values per grid point" if sweep.num_samples > 1
                    else ""))
    sched = sweep.scheduler
    if sched.type == "asha":
        rungs = sched.rungs(max(r["config"].total_steps for r in sweep.trials))
        lines.append(f"- scheduler: ASHA on `{sched.metric}` ({sched.mode}); it may stop a trial at step "
                     f"{', '.join(map(str, rungs)) or '(none: no trial is long enough)'} (grace period "
                     f"{sched.grace_period}, reduction factor {sched.reduction_factor:g})")
    else:
        lines.append(f"- scheduler: FIFO, every trial runs to its end (metric `{sched.metric}`, {sched.mode})")
    trials = len(sweep.trials) * sweep.num_samples
    if sweep.confirm is None:
        lines.append(f"- trials: {trials}")
    else:
        confirm = len(sweep.variants) * sweep.confirm.top_k * len(sweep.confirm.seeds)
        best = "configuration" if sweep.confirm.top_k == 1 else f"{sweep.confirm.top_k} configurations"
        lines.append(f"- trials: {trials} in the search, then up to {confirm} confirming the best {best} of each "
                     f"variant with seeds {', '.join(map(str, sweep.confirm.seeds))}, run to the end (the report "
                     "scores only these)")
    experiment = sweep.tracking.experiment or sweep.name
    lines += ["", f"Report: this run's artifacts, `{REPORT_ARTIFACT_DIR}/report.html` (and `report.md`), written "
              f"when the sweep ends (again with `python -m lamo_ray.report {experiment}`)."]
    text = "\n".join(lines)
    return text if len(text) <= 8000 else text[:7990] + "\n\n(...)"  # MLflow's tag value limit
