"""What reproducibility tests compare (issue 30): a sweep's trial runs read back from its MLflow store,
every metric at every step, with the metrics of the machine (times, rates, memory, restarts) left out."""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.tracking import MlflowClient

#: metrics of the machine, not of the trial: they differ between any two runs
MACHINE_METRICS = re.compile(r"(^time/|_s$|_per_s|^memory/|seconds|restarts|^system/)")


def trial_histories(db: Path, experiment: str) -> dict[str, dict[str, dict[int, float]]]:
    """{variant: {metric: {step: value}}} of the trial runs of ``experiment`` in the sqlite store ``db``."""
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id], "tags.`lamo_ray.role` = 'trial'"):
        out[run.data.tags["variant"]] = {
            key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            for key in run.data.metrics if not MACHINE_METRICS.search(key)}
    return out
