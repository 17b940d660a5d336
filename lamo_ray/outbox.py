"""Tracking outages: MLflow writes that wait on disk while the tracking store is unreachable.

- `is_outage`: is an error the store being unreachable or overloaded (retry later), or a rejected
  write (retrying would fail the same way)?
- `outage_tolerant`: runs MLflow calls within `HTTP_BUDGET` and turns an outage into a fallback
  (the code after the ``with`` block) and an optional warning; other errors propagate.
- `Outbox`: the writes that could not be made, one fsync'd JSON-lines file per run, sent in order
  later (`send_record` makes the MLflow call a record stands for).
- `replay`: sends what an outbox holds; ``python -m lamo_ray.tracking replay DIR`` runs it.

`lamo_ray.tracking.RunLogger` decides when a write goes to the outbox (see `lamo_ray.tracking`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

#: MLflow's HTTP settings for the calls inside `outage_tolerant` (MLflow reads them from the
#: environment at each request; its defaults retry 7 times with back-off, ~4 min per call on a dead
#: server). A refused connection now fails in well under a second and a hung server after 2 x 10 s;
#: the outbox is the retry. Variables the user has set themselves win.
HTTP_BUDGET = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
DEFAULT_OUTBOX = Path.home() / ".cache" / "lamo_ray" / "mlflow_outbox"
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def is_outage(err: BaseException) -> bool:
    """Is ``err`` the tracking store being unreachable or overloaded (retry later), rather than a
    rejected write (bad value, deleted run: retrying would fail the same way)?

    MLflow turns refused/reset connections, timeouts and exhausted 5xx retries into an
    `MlflowException` with ``INTERNAL_ERROR``, and a database it cannot reach into
    ``TEMPORARILY_UNAVAILABLE``; artifact uploads raise `requests` errors."""
    if isinstance(err, MlflowException):
        return err.error_code in _TRANSIENT_CODES
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return err.response.status_code >= 500 or err.response.status_code in (408, 429)
    return isinstance(err, (requests.RequestException, ConnectionError, TimeoutError))


@dataclass
class Outage:
    """What `outage_tolerant` caught: ``error`` is the outage error its block raised (None if the
    block completed)."""

    error: Exception | None = None

    @property
    def detail(self) -> str:
        """The error's message, cut to 300 characters (for log lines)."""
        return str(self.error)[:300]


@contextlib.contextmanager
def outage_tolerant(warning: str | None = None, http_budget: bool = True) -> Iterator[Outage]:
    """Like `contextlib.suppress`, for tracking outages only: an error of the block that `is_outage`
    is caught, kept in the yielded `Outage`, and logged as ``warning`` (with its message) when given;
    the code after the ``with`` is then the fallback::

        with outage_tolerant("the run of trial t2 cannot be found"):
            return lookup()
        return None  # only reached on an outage

    Any other error propagates. With ``http_budget`` (default) the MLflow calls inside wait at most
    `HTTP_BUDGET` (environment variables already set are left alone, and restored on exit); without
    it they keep MLflow's own retries (for a read the caller cannot do without).
    """
    outage = Outage()
    added = [k for k in HTTP_BUDGET if k not in os.environ] if http_budget else []
    os.environ.update({k: HTTP_BUDGET[k] for k in added})
    try:
        yield outage
    except Exception as err:  # noqa: BLE001 - sorted by is_outage; the others are raised again
        if not is_outage(err):
            raise
        outage.error = err
        if warning:
            log.warning("%s (%s)", warning, outage.detail)
    finally:
        for k in added:
            os.environ.pop(k, None)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same file system (Ray checkpoints next to the outbox): no copy
    except OSError:
        shutil.copy2(src, dst)
        with open(dst, "rb+") as f:
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """MLflow writes that could not be made, kept on disk in call order until they are sent.

    ``<dir>/<run_id>.jsonl``: one JSON record per call (``kind`` = metrics / params / tags /
    artifact / status, ``uri``, ``run_id``, ``timestamp`` in ms of the original call, and
    ``step`` + ``values``, ``values``, ``path`` + ``artifact_path`` + ``is_dir``, or ``status``),
    each appended with fsync. ``<run_id>.jsonl.sent`` holds the byte offset already sent, updated
    after every record, so a send that stops half-way (or a replay run twice) never sends a record
    twice; the files go once everything is sent. Artifacts are copied (hard-linked when possible)
    to ``artifacts/`` because the caller's file may be temporary. Records the store rejects for
    good (not an outage) move to ``<run_id>.rejected.jsonl`` with the error instead of blocking
    the queue. All changes hold an flock on ``<dir>/.lock``, so the Train worker, the sweep
    driver and ``replay`` can share a directory.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def file(self, run_id: str) -> Path:
        """The run's records file, ``<dir>/<run_id>.jsonl`` (it may not exist)."""
        return self.directory / f"{run_id}.jsonl"

    def files(self) -> list[Path]:
        """The runs' records files present, sorted (not the ``.rejected.jsonl`` ones)."""
        return sorted(p for p in self.directory.glob("*.jsonl") if not p.name.endswith(".rejected.jsonl"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` durably at the end of its run's file (artifacts are copied first)."""
        with self._locked():
            if record["kind"] == "artifact" and Path(record["path"]).is_absolute():
                src = Path(record["path"])
                rel = Path("artifacts") / uuid.uuid4().hex / src.name
                (self.directory / rel).parent.mkdir(parents=True)
                if record["is_dir"]:
                    shutil.copytree(src, self.directory / rel, copy_function=_link_or_copy)
                else:
                    _link_or_copy(str(src), str(self.directory / rel))
                record = {**record, "path": str(rel)}
            path = self.file(record["run_id"])
            new = not path.exists()
            torn = False  # a writer that died mid-line left no newline: start a new line
            if not new and path.stat().st_size:
                with open(path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            with open(path, "ab") as f:
                f.write((b"\n" if torn else b"") + json.dumps(record).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            if new:
                _fsync_dir(self.directory)

    def pending(self) -> dict[str, int]:
        """Unsent records per run id."""
        counts = {}
        for path in self.files():
            with open(path, "rb") as f:
                f.seek(self._offset(path))
                n = sum(1 for line in f if line.strip())
            if n:
                counts[path.stem] = n
        return counts

    @staticmethod
    def _offset(path: Path) -> int:
        try:
            return int(Path(f"{path}.sent").read_text())
        except (OSError, ValueError):
            return 0

    @staticmethod
    def _save_offset(path: Path, offset: int) -> None:
        tmp = Path(f"{path}.sent.tmp")
        with open(tmp, "w") as f:
            f.write(str(offset))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, f"{path}.sent")

    def flush(self, run_id: str, send: Callable[[dict[str, Any]], None]) -> int:
        """Send the run's records in order with ``send``; returns how many were sent.

        Raises:
            Exception: the first outage error `send` raised (`is_outage`); the records from that
                one on stay in the outbox.
        """
        path = self.file(run_id)
        if not path.exists():
            return 0
        sent = 0
        with self._locked():
            if not path.exists():
                return 0
            offset = self._offset(path)
            with open(path, "rb") as f:
                f.seek(offset)
                for line in f:
                    if line.strip():
                        try:
                            record = json.loads(line)
                            send(record)
                        except Exception as err:  # noqa: BLE001 - sorted into outage / rejected
                            if is_outage(err):
                                raise
                            self._reject(line, err)
                        else:
                            sent += 1
                            if record["kind"] == "artifact" and not Path(record["path"]).is_absolute():
                                shutil.rmtree((self.directory / record["path"]).parent, ignore_errors=True)
                    offset += len(line)
                    self._save_offset(path, offset)
            path.unlink()
            Path(f"{path}.sent").unlink(missing_ok=True)
            _fsync_dir(self.directory)
        return sent

    def _reject(self, line: bytes, err: Exception) -> None:
        try:
            record: Any = json.loads(line)
        except ValueError:
            record, run_id = line.decode(errors="replace"), "unreadable"
        else:
            run_id = record.get("run_id", "unreadable")
        log.warning("MLflow rejected an outbox record for run %s (kept in %s): %s", run_id,
                    self.directory / f"{run_id}.rejected.jsonl", err)
        with open(self.directory / f"{run_id}.rejected.jsonl", "a") as f:
            f.write(json.dumps({"record": record, "error": f"{type(err).__name__}: {err}"}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def send_record(client: MlflowClient, record: dict[str, Any], base: Path) -> None:
    """Make the MLflow call an outbox record stands for (artifact paths are relative to ``base``).

    Raises:
        ValueError: an unknown record ``kind``.
        MlflowException, requests.RequestException: the call failed (`is_outage` tells which can be retried).
    """
    run_id, kind = record["run_id"], record["kind"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, record["timestamp"], record["step"])
                                          for k, v in record["values"].items()])
    elif kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in record["values"].items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["values"].items()])
    elif kind == "artifact":
        log_fn = client.log_artifacts if record["is_dir"] else client.log_artifact
        log_fn(run_id, str(base / record["path"]), record["artifact_path"])
    elif kind == "status":
        client.set_terminated(run_id, record["status"], end_time=record["timestamp"])
    else:
        raise ValueError(f"unknown outbox record kind {kind!r}")


def replay(path: str | Path, tracking_uri: str | None = None) -> tuple[int, dict[str, int]]:
    """Send what an outbox (a directory, or one ``<run_id>.jsonl`` in it) holds, in order, to each
    record's tracking URI (or ``tracking_uri``). Returns (records sent, records left per run id)."""
    path = Path(path)
    one_file = path.is_file()
    outbox = Outbox(path.parent if one_file else path)
    files = [path] if one_file else outbox.files()
    clients: dict[str, MlflowClient] = {}

    def send(record: dict[str, Any]) -> None:
        uri = tracking_uri or record["uri"]
        send_record(clients.setdefault(uri, MlflowClient(uri)), record, outbox.directory)

    sent = 0
    for file in files:
        with outage_tolerant(f"outbox {outbox.directory}: tracking store unreachable, {file.name} stays"):
            sent += outbox.flush(file.stem, send)
    left = outbox.pending()
    return sent, {k: v for k, v in left.items() if not one_file or k == path.stem}
