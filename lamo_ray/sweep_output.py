"""What the sweep driver prints (`lamo_ray.sweep`): the trial table before a sweep, the configurations a search
picked for confirmation, and the closing per-trial table."""

from __future__ import annotations

import math
from typing import Any

from lamo_ray.config import TrialConfig


TABLE_FIELDS = [("backbone", "model.backbone"), ("pre", "model.pretrained"), ("finetune", "model.finetune"),
                ("embed", "model.embedding"), ("co_lambda", "language.co_lambda"), ("ratio", "data.sample_ratio"),
                ("K", "data.context_length"), ("steps", "train.steps"), ("workers", "train.num_workers"),
                ("launcher", "train.resolved_launcher"), ("online", "online.method"),
                ("online_iters", "online.iterations")]


def _get(cfg: TrialConfig, dotted: str) -> Any:
    """``cfg``'s value at ``dotted``; None below an unset optional section (``online`` offline)."""
    node: Any = cfg
    for part in dotted.split("."):
        if node is None:
            return None
        node = getattr(node, part)
    return node


def format_trial_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (pandas): one line per trial with its variant, seed, key settings and the
    values (or search domains) of the swept key paths."""
    import pandas as pd

    extra = sorted({k for r in rows for k in r["params"] if k not in dict(TABLE_FIELDS).values()})
    # the online columns only for sweeps with online trials
    fields = [(h, path) for h, path in TABLE_FIELDS if any(_get(r["config"], path) is not None for r in rows)]
    table = pd.DataFrame([{"variant": r["variant"], "seed": r["seed"],
                           **{h: str(_get(r["config"], path)) for h, path in fields},
                           **{k: str(r["params"].get(k, "")) for k in extra}} for r in rows])
    return table.to_string()




def format_selection(selection: list[dict[str, Any]]) -> str:
    """The configurations the search picked, one line each, for the console."""
    lines = ["confirmation: re-running the search's best configurations with fresh seeds, every trial to the end"]
    for r in selection:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"  {r['variant']} #{r['rank']}: {params} (search: step {r['search_step']:g}, "
                     f"score {r['search_score']:.2f} over seeds {r['search_seeds']})")
    return "\n".join(lines)


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The closing per-trial table: stage, variant, seed, outcome, last evaluated step and its
    normalized score with the 95% CI over that evaluation's episodes."""
    import pandas as pd

    def ci(row: dict[str, Any]) -> str:
        low, high = row.get("ci_low"), row.get("ci_high")
        if low is None or high is None or math.isnan(low) or math.isnan(high):
            return "-"
        return f"[{low:.1f}, {high:.1f}]"

    table = pd.DataFrame([{"trial": r.get("trial"), "stage": r.get("stage", "main"), "variant": r.get("variant"),
                           "seed": r.get("seed"), "outcome": r.get("outcome"),
                           "step": "-" if r.get("step") is None else int(r["step"]),
                           "last score": "-" if r.get("normalized_score") is None else f"{r['normalized_score']:.1f}",
                           "95% CI (episodes)": ci(r)} for r in summary])
    return table.to_string(index=False) if len(table) else "(no trials)"
