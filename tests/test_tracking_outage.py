"""The MLflow tracking server going away mid-sweep: a real ``mlflow server`` (sqlite store, proxied
artifacts) is killed (or frozen with SIGSTOP) while `RunLogger`, `MLflowTrialFinalizer` and
`finish_sweep_run` write to it. No write raises, each returns within the HTTP budget, what could not
be logged lands in the outbox with its original timestamps, and it reaches MLflow exactly once:
flushed by the next write after a restart, or by ``python -m lamo_ray.tracking replay``."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from processes import free_port
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from lamo_ray import tracking
from lamo_ray.outbox import HTTP_BUDGET, Outbox, outage_tolerant
from lamo_ray.tracking import (OUTCOME_TAG, MLflowTrialFinalizer, RunLogger, TrackingError, finish_sweep_run,
                               trial_outcomes)

BIN = Path(sys.executable).parent
# a write to a dead server (refused connection; one retry without back-off) took 0.12 s here, against
# 247 s with MLflow's own retries; the bound leaves room for a machine loaded by other sweeps
DEAD_SERVER_BOUND_S = 10.0


class Server:
    """``mlflow server`` on a fixed loopback port and sqlite file, so it can be restarted as the same server."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with open(self.root / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.root}/db", "--artifacts-destination",
                 str(self.root / "artifacts"), "--workers", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300  # slow when the machine is loaded
        while True:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            assert time.time() < deadline, (self.root / "server.log").read_text()[-3000:]
            time.sleep(0.3)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.signal(signal.SIGCONT)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def server(mlflow_server, monkeypatch):
    """The module's server, running (each test kills and restarts it)."""
    for var in HTTP_BUDGET:  # the budget applies only where the user has not set these
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_down_until", {})  # outage state is per process: start clean
    monkeypatch.setattr(tracking, "PROBE_INTERVAL_S", 0.5)
    if mlflow_server.proc is None or mlflow_server.proc.poll() is not None:
        mlflow_server.start()
    return mlflow_server


def new_run(uri: str, name: str = "trial") -> str:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("outage") or client.get_experiment(client.create_experiment("outage"))
    return client.create_run(exp.experiment_id, run_name=name).info.run_id


def timed_log(logger: RunLogger, step: int, value: float, windows: dict[int, tuple[int, int]]) -> float:
    """Log ``loss`` at ``step``; remember the wall-clock window (ms) the call ran in; return its duration (s)."""
    t0, lo = time.monotonic(), int(time.time() * 1000)
    logger.log_metrics({"loss": value}, step=step)
    windows[step] = (lo, int(time.time() * 1000))
    return time.monotonic() - t0


def assert_history(uri: str, run_id: str, windows: dict[int, tuple[int, int]]) -> None:
    """Every step exactly once, with the value logged and a timestamp from the original call."""
    history = MlflowClient(uri).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == sorted(windows)
    for m in history:
        lo, hi = windows[m.step]
        assert m.value == float(m.step)
        assert lo <= m.timestamp <= hi, (m.step, m.timestamp, windows[m.step])


def outbox_records(outbox: Path, run_id: str) -> list[dict]:
    return [json.loads(line) for line in (outbox / f"{run_id}.jsonl").read_text().splitlines()]


def test_short_outage_is_flushed_by_the_next_write(server, tmp_path, caplog):
    run_id, quiet_run, parent = new_run(server.uri), new_run(server.uri), new_run(server.uri, "sweep")
    outbox = tmp_path / "outbox"
    logger = RunLogger(server.uri, run_id, outbox_dir=outbox)
    windows: dict[int, tuple[int, int]] = {}
    for step in (1, 2):
        timed_log(logger, step, float(step), windows)
    assert not outbox.exists()  # nothing queued while the server is up

    server.kill()
    caplog.set_level(logging.WARNING, logger="lamo_ray.tracking")
    durations = [timed_log(logger, step, float(step), windows) for step in (3, 4, 5)]
    table = tmp_path / "step_0000005.parquet"
    table.write_bytes(b"eval table at step 5")
    t0 = time.monotonic()
    logger.log_artifact(table, "eval")
    logger.log_params({"lr": 0.001})
    logger.set_tags({"phase": "outage"})
    durations.append(time.monotonic() - t0)
    table.unlink()  # the caller's file was temporary: the outbox must hold its own copy
    RunLogger(server.uri, quiet_run, outbox_dir=outbox).log_metrics({"loss": 7.0}, step=7)  # never writes again
    assert max(durations) < DEAD_SERVER_BOUND_S, durations
    assert [r["kind"] for r in outbox_records(outbox, run_id)] == ["metrics"] * 3 + ["artifact", "params", "tags"]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # once per outage, not per call
    assert str(outbox) in warnings[0].getMessage()

    time.sleep(1.1)  # the flushed metrics must keep their own timestamps, not the flush time
    server.start()
    time.sleep(tracking.PROBE_INTERVAL_S)
    timed_log(logger, 6, 6.0, windows)
    logger.set_tags({"phase": "after"})

    assert not (outbox / f"{run_id}.jsonl").exists()
    assert not list((outbox / "artifacts").iterdir())  # stashed copy removed once sent
    assert_history(server.uri, run_id, windows)
    run = MlflowClient(server.uri).get_run(run_id)
    assert run.data.params == {"lr": "0.001"}
    assert run.data.tags["phase"] == "after"  # queued tag sent before the newer one, not after it
    local = MlflowClient(server.uri).download_artifacts(run_id, "eval/step_0000005.parquet", str(tmp_path))
    assert Path(local).read_bytes() == b"eval table at step 5"
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1

    # the run that wrote nothing after the outage is sent when the sweep closes
    assert Outbox(outbox).pending() == {quiet_run: 1}
    finish_sweep_run(server.uri, parent, [], wall_s=3.0, num_errors=0, outbox_dir=outbox)
    assert Outbox(outbox).pending() == {} and not list(outbox.glob("*.jsonl"))
    assert [m.value for m in MlflowClient(server.uri).get_metric_history(quiet_run, "loss")] == [7.0]
    assert MlflowClient(server.uri).get_run(parent).info.status == "FINISHED"


def test_outage_until_the_end_is_recovered_by_replay(server, tmp_path, caplog, monkeypatch):
    uri, outbox = server.uri, tmp_path / "outbox"
    parent, run_id = new_run(uri, "sweep"), new_run(uri)
    exp_id = MlflowClient(uri).get_run(parent).info.experiment_id
    logger = RunLogger(uri, run_id, outbox_dir=outbox)
    windows: dict[int, tuple[int, int]] = {}
    timed_log(logger, 1, 1.0, windows)
    ckpt = tmp_path / "train" / "checkpoint_0000010"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights at step 10")

    server.kill()
    for step in (2, 3):
        assert timed_log(logger, step, float(step), windows) < DEAD_SERVER_BOUND_S
    # the sweep driver closes the trial and then the sweep while the server is still down
    finalizer = MLflowTrialFinalizer(uri, outbox_dir=outbox)
    trial = SimpleNamespace(trial_id="t1", last_result={"mlflow_run_id": run_id, "step": 10, "steps_total": 10,
                                                        CHECKPOINT_PATH_KEY: str(ckpt)})
    closed = (int(time.time() * 1000), None)
    t0 = time.monotonic()
    finalizer.on_trial_complete(0, [], trial)
    closed = (closed[0], int(time.time() * 1000))
    # a failed trial whose run id is unknown: the lookup fails, the driver carries on
    finalizer.on_trial_error(0, [], SimpleNamespace(trial_id="t2", last_result={}, error_file=None))
    # reading the outcomes back keeps MLflow's own patience (~4 min); none here, to see the error
    with monkeypatch.context() as env, pytest.raises(TrackingError, match=f"lamo_ray.tracking replay {outbox}"):
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        trial_outcomes(uri, exp_id, parent, outbox_dir=outbox)
    summary = [{"trial": "t1", "outcome": "completed", "step": 10}]
    caplog.set_level(logging.WARNING, logger="lamo_ray.tracking")
    finish_sweep_run(uri, parent, summary, wall_s=12.5, num_errors=0, outbox_dir=outbox)
    assert time.monotonic() - t0 < 3 * DEAD_SERVER_BOUND_S
    assert any("replay" in r.getMessage() and "still holds" in r.getMessage() for r in caplog.records)
    assert [r["kind"] for r in outbox_records(outbox, run_id)] == ["metrics", "metrics", "artifact", "tags", "status"]
    assert Outbox(outbox).pending() == {run_id: 5, parent: 3}
    # Ray deletes old checkpoints (num_to_keep): the outbox's copy must not depend on the original
    (ckpt / "model.safetensors").unlink()
    ckpt.rmdir()

    # replay while the server is still down: nothing is lost, exit 1
    assert tracking.main(["replay", str(outbox)]) == 1
    assert Outbox(outbox).pending() == {run_id: 5, parent: 3}

    server.start()
    cmd = [sys.executable, "-m", "lamo_ray.tracking", "replay", str(outbox)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "replayed 8 record(s); 0 left" in first.stdout
    assert not list(outbox.glob("*.jsonl")) and not list((outbox / "artifacts").iterdir())

    client = MlflowClient(uri)
    assert_history(uri, run_id, windows)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert closed[0] <= run.info.end_time <= closed[1]  # the original close time, not the replay's
    assert run.data.tags[OUTCOME_TAG] == "completed"
    local = client.download_artifacts(run_id, "checkpoint/model.safetensors", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == b"weights at step 10"
    sweep_run = client.get_run(parent)
    assert sweep_run.info.status == "FINISHED"
    assert sweep_run.data.metrics["sweep/wall_time_s"] == 12.5
    table = client.download_artifacts(parent, "trial_outcomes.yaml", str(tmp_path / "dl"))
    assert yaml.safe_load(Path(table).read_text()) == summary

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "replayed 0 record(s); 0 left" in second.stdout
    assert_history(uri, run_id, windows)


def test_hung_server_blocks_a_write_only_for_the_http_budget(server, tmp_path, monkeypatch):
    """SIGSTOP: connections are accepted but never answered, so each attempt waits for the timeout
    (10 s in `lamo_ray.outbox.HTTP_BUDGET`, 2 s here to keep the test short): 2 attempts, then the outbox."""
    monkeypatch.setitem(HTTP_BUDGET, "MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setattr(tracking, "PROBE_INTERVAL_S", 5.0)
    run_id = new_run(server.uri)
    outbox = tmp_path / "outbox"
    logger = RunLogger(server.uri, run_id, outbox_dir=outbox)
    windows: dict[int, tuple[int, int]] = {}
    timed_log(logger, 1, 1.0, windows)
    server.signal(signal.SIGSTOP)
    try:
        blocked = timed_log(logger, 2, 2.0, windows)
        assert 2 <= blocked < 12, blocked  # 2 attempts x 2 s (20 s with the default budget)
        assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ  # the budget is scoped to our calls
        # known down: the next write does not wait again (until the next probe, which waits 2 s)
        quick = timed_log(logger, 3, 3.0, windows)
        assert quick < 1.5, quick
        assert len(outbox_records(outbox, run_id)) == 2
    finally:
        server.signal(signal.SIGCONT)
    time.sleep(tracking.PROBE_INTERVAL_S)
    timed_log(logger, 4, 4.0, windows)
    assert not (outbox / f"{run_id}.jsonl").exists()
    assert_history(server.uri, run_id, windows)


def test_flush_resumes_after_the_last_record_sent_and_sets_rejected_records_aside(tmp_path):
    """The persisted offset: a flush cut short by an outage resends nothing already sent; a record the
    store rejects for good is moved to ``<run>.rejected.jsonl`` instead of blocking the ones after it."""
    outbox = Outbox(tmp_path)
    records = [{"kind": "metrics", "uri": "http://x", "run_id": "r", "timestamp": i, "step": i, "values": {"a": i}}
               for i in range(4)]
    records.insert(2, {"kind": "bogus", "uri": "http://x", "run_id": "r", "timestamp": 9})
    for r in records:
        outbox.append(r)
    sent = []

    def send_until_outage(record):
        if len(sent) == 2 and record["kind"] != "bogus":
            raise MlflowException("API request failed: connection refused")  # INTERNAL_ERROR: an outage
        if record["kind"] == "bogus":
            raise ValueError("unknown kind")
        sent.append(record)

    with pytest.raises(MlflowException):
        outbox.flush("r", send_until_outage)
    assert sent == records[:2]
    assert outbox.pending() == {"r": 2}  # the rejected record is no longer pending
    rejected = [json.loads(line) for line in (tmp_path / "r.rejected.jsonl").read_text().splitlines()]
    assert [x["record"] for x in rejected] == [records[2]] and "unknown kind" in rejected[0]["error"]

    assert outbox.flush("r", sent.append) == 2
    assert sent == records[:2] + records[3:]
    assert outbox.pending() == {} and not outbox.file("r").exists()
    assert outbox.flush("r", sent.append) == 0


def test_outage_tolerant_catches_only_outages_within_the_budget(monkeypatch, caplog):
    """The one guard every tolerant MLflow call goes through: an outage is kept and logged, the code after
    the block runs; a rejected call still raises; the budget is set only inside and never over the user's."""
    for var in HTTP_BUDGET:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    caplog.set_level(logging.WARNING, logger="lamo_ray.outbox")
    with outage_tolerant("run r stays queued") as outage:
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
        raise MlflowException("API request failed: connection refused")  # INTERNAL_ERROR: an outage
    assert isinstance(outage.error, MlflowException)
    assert [r.getMessage() for r in caplog.records] == ["run r stays queued (API request failed: connection refused)"]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"

    with pytest.raises(MlflowException, match="bad value"), outage_tolerant("never logged"):
        raise MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE)  # rejected: retrying cannot help
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and len(caplog.records) == 1
    with outage_tolerant(http_budget=False) as outage:
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert outage.error is None
