"""A real 2-node Ray cluster, a real MLflow server and their real web UIs, end to end.

What runs (once per module, shared by every test here):

- a Ray cluster started with the CLI as a user starts one: ``ray start --head`` plus a second node
  ``ray start --address=...`` on this machine, 1 CPU each, token auth on (``RAY_AUTH_MODE=token``
  with a fresh token in ``RAY_AUTH_TOKEN``: ``~/.ray/auth_token`` is never read or written),
  non-default ports and its own temp dir, so it clashes with no other cluster on the machine;
- ``mlflow server`` on a free loopback port with a sqlite store and proxied artifacts in a tmp dir;
- a tiny scripted Kitchen dataset (``python -m lamo_ray.collect kitchen``) in a tmp Minari store;
- ONE sweep submitted with ``ray job submit --working-dir <repo>`` (2 trials: LaMo-style and DT on
  FrankaKitchen-v1), ``MLFLOW_TRACKING_URI`` / ``MINARI_DATASETS_PATH`` passed in
  ``--runtime-env-json``.

Then: the job SUCCEEDED; MLflow (queried over HTTP) holds the sweep's parent run and one FINISHED
child run per trial with metrics; the trials' ``ray.node_id`` tags (set by the rank-0 Train worker)
are the two node ids of the cluster, i.e. the trials really ran on both nodes; headless Chromium
finds the trial runs in the MLflow UI and the submitted job in the Ray dashboard (after typing the
cluster's token into the dashboard's token dialog). Screenshots go to ``$LAMO_TEST_ARTIFACTS``
(default ``<repo>/test-artifacts/``, gitignored), with the jobs' driver logs.

Last, a node is removed mid-sweep (issue 6): every process of the second node is SIGKILLed while
a trial trains there; the job must still succeed with every trial terminated and reported. What
happens to the trials that were on that node (seen here): a trial whose Tune trial driver was on
it ends FAILED with the "actor is unavailable" error in MLflow, because the sweep sets no Tune
``FailureConfig`` (``train.max_failures`` is Ray Train's: it restarts the worker group from the last
checkpoint only while the trial driver lives). Which pieces land on which node is up to Ray: a
trial whose driver was on the head node and only its Train worker on the lost node is retried by
Ray Train on the head node: seen resuming from its step-40 checkpoint and completing there
(``train/restored_from_step`` 40, ``ray.node_id`` now the head), while the other trial, whose driver
was on the lost node, FAILED. (Before RAY_ADDRESS was passed, see `submit_sweep`, the retry waited
forever for the 0.01 CPU held by the dead trial's placement group.) The test accepts either for
the hit trial. Trials started after the loss run on the head node; one that Tune started on the
dying node before the GCS marked it dead (seen once) errors before `run_trial` creates its MLflow
run, and the sweep's finalizer then creates a FAILED run for it, so MLflow lists all 3 trials.

Why the nodes are 127.0.0.2 and 127.0.0.3 and not ``--node-ip-address=127.0.0.1``: Ray 2.60
rewrites 127.0.0.1 / localhost to the machine's routable address (``resolve_ip_for_localhost``),
so the cluster would talk over the external interface. Other loopback addresses are kept as given:
both nodes stay on loopback and have distinct IPs, like two hosts. The dashboard (and the job API)
listens on 127.0.0.1.

Why trials ask for 0.99 CPU for the Tune trial driver and 0.01 for its Train worker (1 CPU in all,
one trial per 1-CPU node): Ray places placement groups best-fit, so with the usual 0.01 driver /
0.99 worker split both drivers land on one node, both workers then need the other node and the
trials run one after the other on the same node. With 0.99 / 0.01 each node can hold only one
0.99 driver and has exactly 0.01 left, so the two Train workers are on different nodes whatever
the placement order. (Ray does not cap a process at its CPU share: the worker still trains with
one thread.)

Teardown never runs ``ray stop``: it stops every Ray process of the user on the machine (other
tests' and other people's clusters too). Instead every process of this cluster carries the env
tag ``LAMO_RAY_TEST_TAG=<unique>`` (inherited from ``ray start`` by raylets, workers and job
drivers) and teardown terminates exactly those, SIGTERM then SIGKILL.

The browser: Debian's ``chromium`` at /usr/bin/chromium driven by Playwright (``pip install -e
'.[test]'``; never ``playwright install``). When either is missing the browser test FAILS with the
command to install it (``.ci/run`` installs chromium), it does not skip: a silently skipped UI test
would look green while testing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from browser import browser_page  # noqa: F401 - a fixture
from processes import free_port, kill_tagged, tagged_pids, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.serial]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
DATASET_ID = "test/kitchen/tiny-v0"
SWEEP_NAME = "cluster_e2e"
JOB_TIMEOUT_S = 900  # ~1-2 min alone on 2 cores; generous for a loaded machine

# Tiny Kitchen sweep: 2 trials (LaMo-style, DT), 1 CPU each, 60 steps, one evaluation of one
# 280-step FrankaKitchen-v1 episode.
SWEEP = {
    "name": SWEEP_NAME,
    "seeds": [0],
    "trial_cpus": 0.99,
    "base": {
        "data": {"source": DATASET_ID, "sample_ratio": 1.0, "rtg_scale": 1, "context_length": 10, "max_ep_len": 300},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1},
        "train": {"steps": 60, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "eval_every": 60, "log_every": 20,
                  "cpus_per_worker": 0.01},
        "eval": {"target_returns": [4], "episodes": 1, "num_actors": 1, "envs_per_actor": 1},
    },
    "scheduler": {"type": "fifo"},
    "variants": {
        "lamo": {"model": {"finetune": "lora", "embedding": "mlp"}},
        "dt": {"model": {"finetune": "full", "embedding": "linear"}},
    },
}
# Never uploaded with the working dir (Ray also honours .gitignore; this is belt and braces for
# CI's .venv inside the clone).
EXCLUDES = [".venv", ".git", "test-artifacts", "*.db", "mlartifacts", "mlruns", ".hypothesis", ".pytest_cache",
            "__pycache__"]


# --------------------------------------------------------------------------- processes


def http_json(url: str, token: str | None = None, timeout: float = 10.0):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- cluster


@dataclass
class RayCluster:
    """A 2-node Ray cluster started with ``ray start``; every process carries LAMO_RAY_TEST_TAG."""

    tag: str
    root: Path
    token: str
    env: dict[str, str]
    gcs_address: str = ""
    dashboard: str = ""
    nodes: dict[str, str] = field(default_factory=dict)  # node label ("head", "b") -> node id

    def ray(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        return proc

    def start_node(self, label: str, ip: str, head: bool = False) -> str:
        """Start one node; returns its node id."""
        args = ["start", f"--node-ip-address={ip}", "--num-cpus=1", f"--temp-dir={self.root / label}",
                "--object-store-memory=200000000", "--disable-usage-stats",
                f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
        if head:
            gcs_port, dash_port = free_port(), free_port()
            self.gcs_address = f"{ip}:{gcs_port}"
            self.dashboard = f"http://127.0.0.1:{dash_port}"
            args += ["--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                     f"--ray-client-server-port={free_port()}"]
        else:
            args += [f"--address={self.gcs_address}"]
        before = set(self.alive_nodes())
        # each node its own (empty) Hugging Face cache and $LAMO_RAY_HOME, as separate machines have
        env = dict(self.env, LAMO_RAY_TEST_NODE=f"{self.tag}-{label}", HF_HOME=str(self.home(label) / "hf"),
                   LAMO_RAY_HOME=str(self.home(label) / "lamo_ray"))
        proc = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"ray {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        deadline = time.time() + 60
        while time.time() < deadline:
            new = {n: i for n, i in self.alive_nodes().items() if n not in before and i == ip}
            if new:
                self.nodes[label] = next(iter(new))
                return self.nodes[label]
            time.sleep(1)
        raise AssertionError(f"node {label} ({ip}) did not register: {self.alive_nodes()}")

    def home(self, label: str) -> Path:
        """The node's own HF_HOME / LAMO_RAY_HOME parent."""
        return self.root / f"{label}-home"

    def list_nodes(self) -> list[dict]:
        if not self.dashboard:
            return []
        try:
            out = self.ray("list", "nodes", "--address", self.dashboard, "--format", "json", timeout=60)
        except AssertionError:
            return []
        return json.loads(out.stdout)

    def alive_nodes(self) -> dict[str, str]:
        """node id -> node IP of the ALIVE nodes (``ray list nodes``)."""
        return {n["node_id"]: n["node_ip"] for n in self.list_nodes() if n["state"] == "ALIVE"}

    def stop(self) -> None:
        kill_tagged("LAMO_RAY_TEST_TAG", self.tag)
        deadline = time.time() + 10
        while tagged_pids("LAMO_RAY_TEST_TAG", self.tag) and time.time() < deadline:
            time.sleep(0.5)  # SIGKILLed processes take a moment to go
        left = tagged_pids("LAMO_RAY_TEST_TAG", self.tag)
        assert not left, f"processes of the test cluster still running: {left}"


@pytest.fixture(scope="module")
def cluster():
    """Module scope (not session): the two nodes are torn down as soon as this module is done
    instead of idling through the rest of the suite on a 2-core machine."""
    tag = f"cluster-e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # short root: Ray's unix socket paths must stay under 107 characters
    root = Path(tempfile.mkdtemp(prefix="lrc-", dir="/tmp"))
    token = uuid.uuid4().hex + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, LAMO_RAY_TEST_TAG=tag,
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    c = RayCluster(tag=tag, root=root, token=token, env=env)
    # a SIGTERM (e.g. from `timeout`) ends pytest like Ctrl-C, so this teardown still runs
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        c.start_node("head", "127.0.0.2", head=True)
        c.start_node("b", "127.0.0.3")
        yield c
    finally:
        try:
            c.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------- MLflow server, data


@dataclass
class MlflowServer:
    uri: str
    root: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # no GenAI job runner: it starts 7 huey consumer processes that tracking does not use
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, uri, root / "server.log", timeout_s=120, poll_s=0.5)
        yield MlflowServer(uri, root)
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):  # the whole process group, only ours
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        log.close()


@pytest.fixture(scope="module")
def minari_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("minari")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(store))
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "kitchen", "--dataset", "complete",
                           "--dataset-id", DATASET_ID, "--episodes", "3"],
                          env=env, cwd=store, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return store


# --------------------------------------------------------------------------- the job


@dataclass
class Job:
    submission_id: str
    status: dict
    logs: str
    experiment: str
    wall_s: float


def submit_sweep(cluster: RayCluster, mlflow_uri: str, store: Path, sweep: dict, workdir: Path,
                 submission_id: str) -> None:
    sweep_file = workdir / f"{sweep['name']}.yaml"
    sweep = dict(sweep, storage_path=str(workdir / "ray_results"))
    sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))
    # RAY_ADDRESS for every worker of the job: Ray Train's PlacementGroupCleaner calls the state API
    # without an address, which then scans the machine for gcs_server processes and raises "Found
    # multiple active Ray instances" when another cluster runs on the machine (seen here); the
    # cleaner then never removes a dead trial's placement group and a restarted trial waits forever.
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_uri, "MINARI_DATASETS_PATH": str(store),
                                "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": cluster.gcs_address},
                   "excludes": EXCLUDES}
    cluster.ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id, "--no-wait",
                "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
                "--", "python", "-m", "lamo_ray.sweep", str(sweep_file), timeout=180)


def wait_for_job(cluster: RayCluster, submission_id: str, timeout_s: float = JOB_TIMEOUT_S,
                 on_poll=None) -> dict:
    deadline = time.time() + timeout_s
    while True:
        status = http_json(f"{cluster.dashboard}/api/jobs/{submission_id}", cluster.token)
        if status["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        if on_poll is not None:
            on_poll()
        if time.time() > deadline:
            cluster.ray("job", "stop", "--address", cluster.dashboard, submission_id, check=False)
            return status
        time.sleep(2)


def job_logs(cluster: RayCluster, submission_id: str) -> str:
    """The job's driver log, also saved as ``<artifacts>/<submission_id>.log``."""
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, submission_id, check=False).stdout
    (artifacts_dir() / f"{submission_id}.log").write_text(logs)
    return logs


@pytest.fixture(scope="module")
def sweep_job(cluster, mlflow_server, minari_store, tmp_path_factory) -> Job:
    workdir = tmp_path_factory.mktemp("job")
    submission_id = f"lamo-cluster-e2e-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    submit_sweep(cluster, mlflow_server.uri, minari_store, SWEEP, workdir, submission_id)
    status = wait_for_job(cluster, submission_id)
    wall = time.time() - t0
    print(f"job {submission_id}: {status['status']} after {wall:.0f} s")
    return Job(submission_id, status, job_logs(cluster, submission_id), SWEEP_NAME, wall)


def sweep_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lamo_ray.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("lamo_ray.role") == "trial"]
    return client, exp, parents, trials


# --------------------------------------------------------------------------- tests


def test_cluster_has_two_nodes_with_token_auth(cluster):
    alive = cluster.alive_nodes()
    assert sorted(alive.values()) == ["127.0.0.2", "127.0.0.3"], alive
    assert set(alive) == set(cluster.nodes.values())
    # the job API refuses requests without the token
    with pytest.raises(urllib.error.HTTPError) as err:
        http_json(f"{cluster.dashboard}/api/jobs/")
    assert err.value.code == 401


def test_job_succeeds(sweep_job):
    assert sweep_job.status["status"] == "SUCCEEDED", (sweep_job.status, sweep_job.logs[-8000:])
    assert "normalized_score" in sweep_job.logs  # the sweep's summary table


def test_mlflow_holds_the_sweep_and_trials_ran_on_both_nodes(sweep_job, cluster, mlflow_server):
    assert sweep_job.status["status"] == "SUCCEEDED", sweep_job.logs[-8000:]
    client, _, parents, trials = sweep_runs(mlflow_server.uri, sweep_job.experiment)
    assert len(parents) == 1 and len(trials) == 2, ([r.info.run_name for r in parents + trials])
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics.get("sweep/trials_completed") == 2
    assert {r.data.tags["variant"] for r in trials} == {"lamo", "dt"}
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["lamo_ray.outcome"] == "completed"
        score = client.get_metric_history(run.info.run_id, "normalized_score")
        assert [m.step for m in score] == [60]
        assert 0.0 <= score[0].value <= 100.0  # Kitchen: subtasks completed of 4, x100 / 4
        assert len(client.get_metric_history(run.info.run_id, "train/action_loss")) >= 3
        assert {"checkpoint", "config.yaml", "eval"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    node_tags = {r.data.tags.get("ray.node_id") for r in trials}
    print(f"trial nodes: {node_tags}; cluster nodes: {cluster.nodes}")
    assert node_tags == set(cluster.nodes.values()), (node_tags, cluster.nodes)


# --------------------------------------------------------------------------- browser


def artifacts_dir() -> Path:
    path = Path(os.environ.get("LAMO_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_browser_shows_trials_in_mlflow_and_job_in_ray_dashboard(sweep_job, cluster, mlflow_server, browser_page):
    page = browser_page
    shots = artifacts_dir()
    _, exp, parents, trials = sweep_runs(mlflow_server.uri, sweep_job.experiment)
    parent = parents[0]
    trial_names = sorted(r.info.run_name for r in trials)
    assert len(trial_names) == 2

    # MLflow UI: experiments list -> "Model training" view (MLflow 3 opens experiments in its GenAI
    # view) -> the sweep's experiment -> expand the sweep's parent run -> its trial runs
    page.goto(f"{mlflow_server.uri}/#/experiments")
    page.get_by_text("Model training", exact=True).first.click()
    page.get_by_role("link", name=sweep_job.experiment, exact=True).first.click()
    page.wait_for_url(f"**/experiments/{exp.experiment_id}/runs**")
    close_assistant = page.get_by_role("button", name="Close")
    if close_assistant.count() == 1:  # the "MLflow Assistant" side panel, only in the way of the screenshot
        close_assistant.click()
    parent_cell = page.locator("[role=gridcell][col-id='attributes.`Run Name`']").filter(
        has=page.get_by_role("link", name=parent.info.run_name, exact=True))
    parent_cell.locator("button").first.click()  # the +/- expander of the parent's child runs
    for name in trial_names:
        page.get_by_role("link", name=name, exact=True).wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "mlflow_runs.png"), full_page=True)
    # a trial's run page shows which Ray node it ran on
    first = min(trials, key=lambda r: r.info.run_name)
    page.get_by_role("link", name=first.info.run_name, exact=True).click()
    page.get_by_text(first.data.tags["ray.node_id"]).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "mlflow_trial_run.png"), full_page=True)

    # Ray dashboard: token dialog (auth is on), then the Jobs page lists the submitted job
    page.goto(f"{cluster.dashboard}/#/jobs")
    token_box = page.get_by_role("textbox", name="Authentication Token")
    token_box.wait_for(timeout=30_000)
    token_box.fill(cluster.token)
    page.get_by_role("button", name="Submit").click()
    row = page.get_by_role("row").filter(has_text=sweep_job.submission_id)
    row.first.wait_for(timeout=30_000)
    assert "SUCCEEDED" in row.first.inner_text()
    page.screenshot(path=str(shots / "ray_dashboard_jobs.png"), full_page=True)

    # Cluster page: both nodes
    page.goto(f"{cluster.dashboard}/#/cluster")
    for ip in ("127.0.0.2", "127.0.0.3"):
        page.get_by_text(ip).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "ray_dashboard_cluster.png"), full_page=True)
    print(f"screenshots in {shots}")


# --------------------------------------------------------------------------- node loss (issue 6)

# 3 trials of 1 CPU (2 run at once, one per node); evaluations cut to 50 env steps so checkpoints
# (every 40 steps) come quickly; 480 steps so the kill after the first evaluation lands mid-training
# (a 1-worker trial trains in its own Tune trial process and reaches 160 steps within seconds).
NODE_LOSS_SWEEP = {
    "name": "cluster_node_loss",
    "seeds": [0, 1, 2],
    "trial_cpus": 0.99,
    "base": {
        "data": {"source": DATASET_ID, "sample_ratio": 1.0, "rtg_scale": 1, "context_length": 10, "max_ep_len": 300},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1,
                  "finetune": "full", "embedding": "linear"},
        "train": {"steps": 480, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "eval_every": 40, "log_every": 20,
                  "cpus_per_worker": 0.01},
        "eval": {"target_returns": [4], "episodes": 1, "num_actors": 1, "envs_per_actor": 1,
                 "max_episode_steps": 50},
    },
    "scheduler": {"type": "fifo"},
    "variants": {"dt": {}},
    "report_baseline": "dt",
}


# --------------------------------------------------------------------------- inputs only on the head node

NOCACHE_BACKBONE = "standin-org/tiny-gpt2"
NOCACHE_DATASET = "D4RL/pendulum/random-v0"
NOCACHE_SWEEP = {
    "name": "cluster_nocache",
    "seeds": [0],
    "trial_cpus": 0.99,
    "base": {
        "data": {"source": NOCACHE_DATASET, "rtg_scale": 100, "context_length": 5, "max_ep_len": 64},
        "model": {"backbone": NOCACHE_BACKBONE, "pretrained": True},
        "train": {"steps": 20, "batch_size": 8, "lr": 1e-3, "warmup_steps": 5, "eval_every": 20, "log_every": 10,
                  "cpus_per_worker": 0.01},
        "eval": {"target_returns": [-100], "episodes": 1, "num_actors": 1, "envs_per_actor": 1,
                 "ref_min_score": -700, "ref_max_score": 0},  # Pendulum has no D4RL reference scores
    },
    "scheduler": {"type": "fifo"},
    "variants": {"lamo": {"model": {"finetune": "lora", "embedding": "mlp"}},
                 "lamo_full": {"model": {"finetune": "full", "embedding": "linear"}}},
}


def publish_nocache_inputs(root: Path, made: Path) -> None:
    """A tiny pre-trained GPT-2 and a Minari Pendulum dataset on the stand-in hub."""
    from hub_standin import add_minari_dataset, add_model_repo, make_pendulum_dataset, make_tiny_gpt2

    make_tiny_gpt2(made / "model")
    add_model_repo(root, NOCACHE_BACKBONE, {p.name: p.read_bytes() for p in (made / "model").iterdir()})
    add_minari_dataset(root, NOCACHE_DATASET, make_pendulum_dataset(NOCACHE_DATASET, made / "minari", episodes=4,
                                                                    steps=40))


def test_inputs_on_the_head_only_a_node_without_caches_trains_from_the_object_store(
        cluster, mlflow_server, tmp_path_factory):
    """Issue 16: a sweep whose backbone and dataset are on no node. The job's driver (head node)
    fetches both from a stand-in hub on 127.0.0.1 (HF_ENDPOINT; Minari's hf:// remote) and puts the
    backbone's files in Ray's object store; the trial on the second node, whose HF cache and
    $LAMO_RAY_HOME are empty, trains from there: nothing is downloaded twice and nothing lands in
    its HF cache. Runs before the node-loss test (which removes the second node)."""
    from hub_standin import HubStandin

    workdir = tmp_path_factory.mktemp("nocache")
    publish_nocache_inputs(workdir / "hub", workdir / "made")
    store = workdir / "minari_empty"
    submission_id = f"lamo-nocache-{uuid.uuid4().hex[:8]}"
    with HubStandin(workdir / "hub") as hub:
        sweep_file = workdir / "cluster_nocache.yaml"
        sweep_file.write_text(yaml.safe_dump(dict(NOCACHE_SWEEP, storage_path=str(workdir / "ray_results"))))
        runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_server.uri, "MINARI_DATASETS_PATH": str(store),
                                    "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
                                    "RAY_ADDRESS": cluster.gcs_address},
                       "excludes": EXCLUDES}
        cluster.ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id, "--no-wait",
                    "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
                    "--", "python", "-m", "lamo_ray.sweep", str(sweep_file), timeout=180)
        status = wait_for_job(cluster, submission_id)
        logs = job_logs(cluster, submission_id)
        requests = list(hub.requests)
    assert status["status"] == "SUCCEEDED", (status, logs[-8000:])
    assert "inputs: fetching 2 missing input(s) before any compute" in logs, logs[-8000:]
    assert f"backbone {NOCACHE_BACKBONE}: config, weights" in logs and "in Ray's object store" in logs

    _, _, parents, trials = sweep_runs(mlflow_server.uri, NOCACHE_SWEEP["name"])
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.metrics.get("normalized_score") is not None for r in trials)  # trained and evaluated
    assert {r.data.tags.get("ray.node_id") for r in trials} == set(cluster.nodes.values())
    # the weights crossed the network once: to the driver; the second node got them from the object store
    assert sum(r.startswith("GET /lfs/") and "model.safetensors" in r for r in requests) == 1, requests
    b_home = cluster.home("b")
    assert not list((b_home / "hf").rglob("*.safetensors"))
    (received,) = (b_home / "lamo_ray" / "received").iterdir()
    assert received.name.startswith("standin-org_tiny-gpt2-")
    assert sorted(p.name for p in received.iterdir()) == ["config.json", "generation_config.json",
                                                          "lamo_ray_received.json", "model.safetensors"]
    assert list((cluster.home("head") / "hf" / "hub").glob("models--standin-org--tiny-gpt2"))


def test_node_removed_mid_sweep_the_sweep_completes(sweep_job, cluster, mlflow_server, minari_store,
                                                     tmp_path_factory):
    """Kill every process of the second node (SIGKILL: a crashed machine) while a trial trains on
    it, after its first checkpoint; the job must still succeed and every trial be terminated and
    reported in MLflow. Runs after the main job (it depends on it) since it leaves one node."""
    workdir = tmp_path_factory.mktemp("node_loss")
    submission_id = f"lamo-node-loss-{uuid.uuid4().hex[:8]}"
    node_b = cluster.nodes["b"]
    client = MlflowClient(mlflow_server.uri)
    killed: dict = {}

    def kill_node_b_once_a_trial_trains_there() -> None:
        if killed:
            return
        exp = client.get_experiment_by_name(NODE_LOSS_SWEEP["name"])
        if exp is None:
            return
        for run in client.search_runs([exp.experiment_id], filter_string="tags.`lamo_ray.role` = 'trial'"):
            if run.data.tags.get("ray.node_id") == node_b and run.data.metrics.get("normalized_score") is not None:
                killed["runs"] = {r.info.run_id: r.data.tags.get("ray.node_id") for r in client.search_runs(
                    [exp.experiment_id], filter_string="tags.`lamo_ray.role` = 'trial'")}
                killed["run_on_b"] = run.info.run_id
                killed["pids"] = kill_tagged("LAMO_RAY_TEST_NODE", f"{cluster.tag}-b", grace_s=5, sig=signal.SIGKILL)
                killed["at"] = time.time()
                print(f"killed node b ({len(killed['pids'])} processes) while {run.info.run_name} trained there")
                return

    t0 = time.time()
    submit_sweep(cluster, mlflow_server.uri, minari_store, NODE_LOSS_SWEEP, workdir, submission_id)
    status = wait_for_job(cluster, submission_id, on_poll=kill_node_b_once_a_trial_trains_there)
    logs = job_logs(cluster, submission_id)
    print(f"node-loss job {submission_id}: {status['status']} after {time.time() - t0:.0f} s")
    assert killed, f"no trial ever trained on node b before the job ended:\n{logs[-5000:]}"
    assert status["status"] == "SUCCEEDED", (status, logs[-8000:])

    # the GCS marks a crashed node DEAD after its health checks time out, which can be after a short job ended
    deadline = time.time() + 120
    while True:
        nodes = {n["node_id"]: n["state"] for n in cluster.list_nodes()}
        if nodes[node_b] == "DEAD" or time.time() > deadline:
            break
        time.sleep(2)
    assert nodes[node_b] == "DEAD" and nodes[cluster.nodes["head"]] == "ALIVE", nodes

    # Tune's final table: all 3 trials ended (TERMINATED or ERROR), none left RUNNING / PENDING
    final = [line for line in logs.splitlines() if line.startswith("Trial status:")][-1]
    counts = {state: int(n) for n, state in (part.split() for part in final[len("Trial status:"):].split("|"))}
    assert set(counts) <= {"TERMINATED", "ERROR"} and sum(counts.values()) == 3, final

    _, _, parents, trials = sweep_runs(mlflow_server.uri, NODE_LOSS_SWEEP["name"])
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # every trial Tune ran has a run: one that errored before `run_trial` created its run (seen once:
    # Tune started it on node b before the GCS marked b dead) gets a FAILED run from the finalizer
    expected_runs = 3
    assert len(trials) == expected_runs, (final, parents[0].data.metrics, logs[-8000:])
    outcomes = {r.info.run_id: (r.info.status, r.data.tags.get("lamo_ray.outcome"), r.data.tags.get("ray.node_id"))
                for r in trials}
    print("trial outcomes (status, outcome, node):", outcomes, "node b:", node_b)
    counted = sum(v for k, v in parents[0].data.metrics.items() if k.startswith("sweep/trials_"))
    assert counted == expected_runs, parents[0].data.metrics
    head = cluster.nodes["head"]
    for run in trials:
        rid, tags = run.info.run_id, run.data.tags
        restored = client.get_metric_history(rid, "train/restored_from_step")
        print(f"  {run.info.run_name}: {run.info.status} {tags.get('lamo_ray.outcome')} on "
              f"{'head' if tags.get('ray.node_id') == head else 'b'}; restored from "
              f"{[m.value for m in restored]}; error: {tags.get('lamo_ray.error', '')[-400:]!r}")
        assert run.info.status in ("FINISHED", "FAILED"), outcomes
        if run.info.status == "FAILED":
            # only a trial that was running when the node went, or one Tune started on the dying node
            # (its run made by the finalizer: no worker ever tagged a node), can fail, and it says why
            assert tags["lamo_ray.outcome"] == "failed" and tags.get("lamo_ray.error"), outcomes
            assert rid in killed["runs"] or "ray.node_id" not in tags, outcomes
        else:
            assert tags["lamo_ray.outcome"] == "completed", outcomes
            assert max(m.step for m in client.get_metric_history(rid, "normalized_score")) == \
                NODE_LOSS_SWEEP["base"]["train"]["steps"]
        if rid not in killed["runs"] and "ray.node_id" in tags:  # started after the node went: ran on the head
            assert run.info.status == "FINISHED" and tags["ray.node_id"] == head, outcomes
        if rid == killed["run_on_b"]:  # the node loss hit this trial: it failed, or re-ran on the head node
            assert run.info.status == "FAILED" or restored or tags["ray.node_id"] == head, outcomes
