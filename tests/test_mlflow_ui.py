"""A sweep's MLflow store as a user meets it in the MLflow UI (issue 31): a real ``mlflow server`` on a
small sqlite store laid out by `lamo_ray.tracking`, opened in headless Chromium.

What the user must see: the experiment's runs table (not MLflow 3's GenAI overview of traces, "No
data available") with the trial runs named by what sets them apart (`trial_run_name`: ``lamo ·
sample_ratio=0.1 · seed 0``, not Tune's ``run_trial_9c945_00000``), and on the sweep's parent run
page its description (`sweep_description`: variants, baseline, swept values, where the report goes).

The experiment is opened with `EXPERIMENT_RUNS_PAGE` (``?workflowType=machine_learning``): MLflow
3.17.2's UI chooses between its GenAI and model-training pages by its sidebar switch (URL parameter,
else the browser's saved choice, GenAI in a fresh browser) and does not read the
``mlflow.experimentKind`` tag the experiment carries (checked here through the API only).

Browser: Debian's /usr/bin/chromium driven by Playwright, as tests/test_cluster_e2e.py drives it (its
``browser_page`` fixture: it FAILS, never skips, without either). Screenshots go to
``$LAMO_TEST_ARTIFACTS`` (default ``<repo>/test-artifacts/``). About 30 s: the server starts in ~4 s,
each page renders in a few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from browser import browser_page  # noqa: F401 - a fixture
from processes import wait_healthy
from test_cluster_e2e import artifacts_dir, free_port

from lamo_ray.config import SweepConfig
from lamo_ray.naming import trial_run_name
from lamo_ray.tracking import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, EXPERIMENT_RUNS_PAGE, NOTE_TAG, start_sweep_run,
                               start_trial_run)

pytestmark = pytest.mark.slow  # as the other browser test (a server and a browser: ~30 s)

SWEEP = {"name": "ui", "seeds": [0],
         "base": {"data": {"source": "lamo/reacher/mixed-v0", "sample_ratio": {"grid": [0.01, 0.1]}},
                  "model": {"pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1},
                  "train": {"steps": 400, "eval_every": 100}},
         "variants": {"lamo": {"model": {"finetune": "lora"}}, "dt": {"model": {"finetune": "full"}}},
         "scheduler": {"type": "asha", "grace_period": 100}}
SERVER_START_S = 60


def _build_store(root: Path) -> tuple[str, str, str, list[str]]:
    """The sweep's parent run and its 4 trial runs, laid out as `lamo_ray.sweep` lays them out.
    Returns (sqlite uri, experiment id, parent run id, trial run names)."""
    uri = f"sqlite:///{root}/mlflow.db"
    sweep = SweepConfig.model_validate(SWEEP)
    exp_id, parent = start_sweep_run(uri, "ui", "ui", sweep)
    names = []
    for i, row in enumerate(sweep.trials):
        names.append(trial_run_name(row["variant"], row["params"], row["seed"]))
        start_trial_run(uri, exp_id, parent, f"run_trial_9c945_{i:05d}", row["variant"], row["config"],
                        trial_id=f"9c945_{i:05d}", run_name=names[-1])
    return uri, exp_id, parent, names


def _start_server(uri: str, root: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on a free loopback port over ``uri``, up (``/health`` answers) or failing."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no GenAI job runner processes
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                                 "--port", str(port), "--backend-store-uri", uri, "--workers", "1"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the server's own process group (it was started in a new session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass


def test_the_mlflow_ui_shows_named_trial_runs_and_the_sweep_description(tmp_path, browser_page):
    page = browser_page
    shots = artifacts_dir()
    uri, exp_id, parent, names = _build_store(tmp_path)
    client = MlflowClient(uri)
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert len(set(names)) == 4 and "lamo · sample_ratio=0.1 · seed 0" in names
    proc, base = _start_server(uri, tmp_path)
    try:
        wait_healthy(proc, base, tmp_path / "server.log", SERVER_START_S)

        # the experiment's runs table: the sweep's parent run, expanded to its trial runs
        page.goto(f"{base}/{EXPERIMENT_RUNS_PAGE.format(experiment_id=exp_id)}")
        parent_cell = page.locator("[role=gridcell][col-id='attributes.`Run Name`']").filter(
            has=page.get_by_role("link", name="ui", exact=True))
        parent_cell.wait_for(timeout=30_000)
        parent_cell.locator("button").first.click()  # the +/- expander of the parent's child runs
        for name in names:
            page.get_by_role("link", name=name, exact=True).wait_for(timeout=20_000)
        body = page.inner_text("body")
        assert "No data available" not in body and "run_trial_" not in body, body[:2000]
        page.screenshot(path=str(shots / "mlflow_ui_runs.png"), full_page=True)

        # the parent run's page shows the sweep's description (Markdown rendered)
        parent_cell.get_by_role("link", name="ui", exact=True).click()  # (the experiment is "ui" too)
        page.wait_for_url(f"**/runs/{parent}**", wait_until="commit")
        page.get_by_text("report/report.html").first.wait_for(timeout=20_000)
        body = page.inner_text("body")
        for text in ("compares 2 variant(s); the report compares each with the baseline dt",
                     "data.sample_ratio: 0.01, 0.1", "trials: 4"):
            assert text in body, (text, body[:3000])
        assert "**" not in body.split("Description", 1)[-1][:500]  # rendered, not shown as Markdown source
        assert client.get_run(parent).data.tags[NOTE_TAG].startswith("**Sweep `ui`**")
        page.screenshot(path=str(shots / "mlflow_ui_sweep_run.png"), full_page=True)
    finally:
        _stop(proc)
