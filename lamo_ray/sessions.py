"""Where a trial's training reports to (`lamo_ray.train`, `lamo_ray.continual.trial`): rank, device,
checkpoint to resume from, DDP model preparation and reports with checkpoints, for a Ray Train worker
(`TrainSession`) and for a Tune trial training in its own process (`TuneTrialSession`); and the
rehearsal's wrapper that stops a trial once after its first checkpoint so its restart resumes from it
(`InterruptAfterFirstCheckpoint`, ``--rehearse``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from lamo_ray.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)


#: a continual trial's checkpoint: the runner's state (`lamo_ray.continual.trial`) and its step beside it
CONTINUAL_FILE, CONTINUAL_STEP_FILE = "continual.pt", "continual_step.json"


def checkpoint_step(directory: Path) -> int:
    """The training step of a checkpoint folder: a continual trial's (`CONTINUAL_STEP_FILE` beside
    `CONTINUAL_FILE`) or a policy checkpoint's (`lamo_ray.checkpoint.load_checkpoint`). Before, only the
    latter was recognised, so a restarted continual trial skipped every checkpoint as "not a lamo_ray
    checkpoint" and started over (found by ``--rehearse`` on sweeps/l2m_local.yaml).

    Raises:
        CheckpointError: neither kind, or an unreadable one.
    """
    import json

    if (directory / CONTINUAL_FILE).is_file():
        try:
            return int(json.loads((directory / CONTINUAL_STEP_FILE).read_text())["step"])
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"{directory}: a continual checkpoint without a readable "
                                  f"{CONTINUAL_STEP_FILE} ({err})") from None
    return load_checkpoint(directory).step


class TrainSession:
    """Ray Train's session (a `TorchTrainer` worker): rank, device, checkpoint, DDP, report."""

    def __init__(self):
        import psutil

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.started = psutil.Process().create_time()  # the worker process was started for this trial

    @property
    def device(self) -> torch.device:
        return ray.train.torch.get_device()

    def get_checkpoint(self):
        return ray.train.get_checkpoint()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None, step: int = 0) -> None:
        """``ray.train.report`` (a barrier across the workers); the checkpoint as ``checkpoint_<step>``."""
        ray.train.report(metrics, checkpoint=None if checkpoint_dir is None else
                         ray.train.Checkpoint.from_directory(str(checkpoint_dir)),
                         checkpoint_dir_name=f"checkpoint_{step:07d}")


class TuneTrialSession:
    """A Tune function trial training in its own process (``train.launcher`` 'in_trial'): rank 0 of 1,
    checkpoints and metrics through ``ray.tune.report``; restarted by Tune after a failure
    (``FailureConfig``) or ``--resume``, it continues from its newest checkpoint (`get_checkpoint`).

    ``storage_dir``: the trial's directory in Tune's storage, where Tune keeps its ``checkpoint_*``;
    ``trial_id``: Tune's id of the trial (its other directories beside ``storage_dir`` are searched too).

    Raises:
        RuntimeError: ``use_gpu`` without a CUDA device visible to the trial.
    """

    rank, world_size = 0, 1

    def __init__(self, use_gpu: bool, started: float, storage_dir: Path | None = None, trial_id: str | None = None):
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("train.use_gpu is true but the Tune trial sees no CUDA device "
                               f"(CUDA_VISIBLE_DEVICES={ray.get_gpu_ids()})")
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.started = started
        self.storage_dir = storage_dir
        self.trial_id = trial_id

    def _trial_dirs(self) -> list[Path]:
        """``storage_dir`` and the other directories of the same trial beside it (Tune names a trial's
        directory ``<trainable>_<trial id>_<index>_<params>_<start time>``)."""
        if self.storage_dir is None:
            return []
        dirs = [self.storage_dir] if self.storage_dir.is_dir() else []
        if self.trial_id and self.storage_dir.parent.is_dir():
            dirs += [d for d in sorted(self.storage_dir.parent.glob(f"*_{self.trial_id}_*"))
                     if d.is_dir() and d != self.storage_dir]
        return dirs

    def get_checkpoint(self):
        """The newest (by training step) of Tune's registered checkpoint and the complete
        ``checkpoint_*`` folders of this trial's directories (`_trial_dirs`); None if there is none.
        Tune saves its experiment state only every few seconds, so after the sweep driver was killed
        ``ray.tune.get_checkpoint()`` can be older than what the trial had written (seen: none at all,
        and the trial would have started over), and a trial that started after the last save is
        restarted in a new directory, its checkpoints left in the old one (seen: the killed-driver
        test, 3 runs of 3 with its whole file, the trial killed ~15 s after it started)."""
        from ray import tune

        registered = tune.get_checkpoint()
        candidates = [c for c in [registered] if c is not None]
        for trial_dir in self._trial_dirs():
            candidates += [tune.Checkpoint.from_directory(str(d)) for d in sorted(trial_dir.glob("checkpoint_*"))
                           if d.is_dir()]
        newest, newest_step = None, -1
        for candidate in candidates:
            try:
                with candidate.as_directory() as d:
                    step = checkpoint_step(Path(d))
            except CheckpointError as err:  # a folder Tune was still writing when its process died
                log.warning("skipping checkpoint %s: %s", candidate.path, err)
                continue
            if step > newest_step:
                newest, newest_step = candidate, step
        if newest is not None and newest is not registered:
            log.info("resuming from %s (step %d): newer than the checkpoint Tune registered (%s)", newest.path,
                     newest_step, None if registered is None else registered.path)
        return newest

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None, step: int = 0) -> None:
        """``ray.tune.report``; Tune copies ``checkpoint_dir`` into the trial's storage."""
        from ray import tune

        tune.report(metrics, checkpoint=None if checkpoint_dir is None else
                    tune.Checkpoint.from_directory(str(checkpoint_dir)))


class RehearsalInterrupt(RuntimeError):
    """Raised on purpose by `InterruptAfterFirstCheckpoint`: the trial stops once so that its restart
    resumes from the checkpoint it just wrote (``--rehearse``, `lamo_ray.rehearse`)."""


class InterruptAfterFirstCheckpoint:
    """A session (`TrainSession`, `TuneTrialSession`) that raises `RehearsalInterrupt` right after the
    first report of a trial that started without a checkpoint, on every rank, so Tune (or Ray Train)
    restarts it from that checkpoint: the resume path of a real run, exercised by a rehearsal. A trial
    that started from a checkpoint (the restart) runs through. Everything else is the wrapped session's."""

    def __init__(self, session):
        self._session = session
        self._fresh = session.get_checkpoint() is None

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None, step: int = 0) -> None:
        self._session.report(metrics, checkpoint_dir=checkpoint_dir, step=step)
        if self._fresh:
            raise RehearsalInterrupt(f"rehearsal: stopped after the checkpoint of step {step} so that the restart "
                                     "resumes from it")
