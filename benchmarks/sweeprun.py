"""Helpers for the sweep-level benchmarks (B5 `asha.py`, B6 `ddp.py`): run the real sweep CLI
(``python -m lamo_ray.sweep FILE --set ...``) in a subprocess with its own local Ray, its own
MLflow SQLite store and its own Tune storage under a work directory, then read the trials back
from MLflow.

Isolation: ``RAY_ADDRESS`` is removed from the child's environment (the CLI then starts a local Ray
bound to 127.0.0.1 and shuts it down at exit); ``MLFLOW_TRACKING_URI`` is
``sqlite:///<workdir>/mlflow.db``; ``storage_path`` is ``<workdir>/ray``. Everything else in the
environment (``MINARI_DATASETS_PATH`` included) is passed through, and the process's niceness is
inherited (run the benchmark under ``nice -n 19`` on a shared machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class SweepRunError(RuntimeError):
    """The sweep CLI exited non-zero or timed out; the message ends with its log's tail."""


def run_sweep_cli(sweep_file: str | Path, overrides: list[str], workdir: str | Path,
                  timeout_s: float = 3600.0) -> dict[str, Any]:
    """Run one sweep to completion in a subprocess; returns ``{"uri", "workdir", "log", "cli_wall_s"}``.

    ``cli_wall_s`` is the whole command's wall time (Ray start, preflight, Tune, report, Ray stop).
    On timeout the child's process group (started here, in its own session) gets SIGTERM, then SIGKILL.

    Raises:
        SweepRunError: non-zero exit or timeout.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-m", "lamo_ray.sweep", str(Path(sweep_file).resolve()),
           "--set", f"storage_path={workdir / 'ray'}"]
    for o in overrides:
        cmd += ["--set", o]
    log_path = workdir / "sweep.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise SweepRunError(f"sweep timed out after {timeout_s:.0f} s: {' '.join(cmd)}\n{_tail(log_path)}")
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SweepRunError(f"sweep exited {rc}: {' '.join(cmd)}\n{_tail(log_path)}")
    info = {"uri": uri, "workdir": str(workdir), "log": str(log_path), "cli_wall_s": wall, "cmd": cmd}
    (workdir / "run.json").write_text(json.dumps(info, indent=2))
    return info


def load_run(workdir: str | Path) -> dict[str, Any]:
    """What `run_sweep_cli` returned for a finished run in ``workdir`` (from its ``run.json``)."""
    return json.loads((Path(workdir) / "run.json").read_text())


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group of a child this module started."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int = 3000) -> str:
    text = Path(path).read_text(errors="replace")
    return text[-n:]


def read_trials(uri: str, experiment: str) -> dict[str, Any]:
    """The sweep's parent run and one dict per trial, read from MLflow.

    Returns ``{"wall_time_s": Tune fit wall time logged by the sweep (``sweep/wall_time_s``),
    "trials": [...]}``; each trial: ``trial``, ``variant``, ``seed``, ``outcome``, ``params`` (the
    resolved config, flattened), ``eval_step`` and ``score`` (last ``normalized_score``),
    ``trained_step`` (largest step of any training or evaluation metric the trial logged: with
    ``train.log_every`` small this also counts steps trained after the last report, e.g. after
    ASHA's stop decision and before the workers were torn down), ``start_time`` (ms), ``metrics``
    (full histories of ``train/time_s`` and ``train/samples_per_s`` as ``[(step, value)]``).
    """
    from mlflow import MlflowClient

    from lamo_ray.tracking import ROLE_TAG, trial_outcomes

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SweepRunError(f"no MLflow experiment {experiment!r} in {uri}")
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SweepRunError(f"no sweep run in experiment {experiment!r} of {uri}")
    parent = parents[0]
    wall = parent.data.metrics.get("sweep/wall_time_s")
    trials = []
    for row in trial_outcomes(uri, exp.experiment_id, parent.info.run_id):
        run = client.get_run(row["mlflow_run_id"])
        steps = [row["step"] or 0]
        histories = {}
        for key in ("train/action_loss", "train/time_s", "train/samples_per_s"):
            h = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
            histories[key] = [(m.step, m.value) for m in h]
            steps += [m.step for m in h]
        trials.append({**row, "params": dict(run.data.params), "eval_step": row["step"], "score": row["normalized_score"],
                       "trained_step": max(steps), "start_time": run.info.start_time, "metrics": histories})
    trials.sort(key=lambda t: t["start_time"])
    return {"wall_time_s": wall, "trials": trials, "parent_run_id": parent.info.run_id}
