"""DDP in `lamo_ray.train.train_loop_per_worker` (issue 30), without Ray: two worker processes joined by
torch.distributed (gloo, CPU), each with a session that wraps the model in DistributedDataParallel as
Ray Train's ``prepare_model`` does. Checked against one worker given the two ranks' batches concatenated:
- the ranks draw different samples (per-rank sampler seeds), half the trial's batch each;
- one DDP step equals the one-worker step on the concatenated batch (the loss is normalised by the real
  positions of the whole batch, not each rank's own);
- the logged training loss is the whole batch's, not rank 0's."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from processes import free_port, gloo_group
from safetensors.torch import load_file

from lamo_ray import train
from lamo_ray.checkpoint import MODEL_FILE
from lamo_ray.config import validate_trial

OBS_DIM, ACT_DIM, SEED, BATCH = 6, 2, 5, 8


def dataset():
    """Trajectories of different lengths, so segments near a trajectory's start are left-padded and the
    two ranks' batches hold different numbers of real positions."""
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset

    rng = np.random.default_rng(0)
    trajs = [Trajectory(rng.normal(size=(n, OBS_DIM)).astype(np.float32),
                        rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
                        rng.normal(size=n).astype(np.float32), False) for n in (3, 2, 9, 4, 2, 7)]
    return TrajectoryDataset(trajs, (OBS_DIM,), ACT_DIM, False, -10.0, 0.0, None, "in-memory")


def config(workers: int):
    return validate_trial({"seed": SEED,
                           "data": {"source": "in-memory", "context_length": 4, "max_ep_len": 16, "rtg_scale": 10.0},
                           "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1,
                                     "dropout": 0.0, "finetune": "full", "embedding": "linear"},
                           "train": {"steps": 1, "batch_size": BATCH, "lr": 1e-2, "warmup_steps": 1, "eval_every": 1,
                                     "log_every": 1, "num_workers": workers},
                           "eval": {"env_id": "Reacher-v5", "episodes": 1, "target_returns": [0.0]}})


class Session:
    def __init__(self, out: Path, rank: int, world: int):
        self.rank, self.world_size, self.device = rank, world, torch.device("cpu")
        self.out, self.started, self.reports = out, time.time(), []

    def get_checkpoint(self):
        return None

    def prepare_model(self, model):
        return torch.nn.parallel.DistributedDataParallel(model) if self.world_size > 1 else model

    def report(self, metrics, checkpoint_dir=None, step=0):
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, self.out / f"rank{self.rank}")
        self.reports.append(dict(metrics))


class Evaluator:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, policy):
        return {"normalized_score": 0.0, "normalized_score_ci_low": 0.0, "normalized_score_ci_high": 0.0,
                "return_mean": 0.0}, []

    def shutdown(self):
        pass


class Logger:
    """MLflow's RunLogger stand-in: what rank 0 logs."""
    logged: list = []

    def __init__(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=0):
        Logger.logged.append((step, dict(metrics)))

    def set_tags(self, tags):
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None


def _worker(rank: int, world: int, port: int, out: str, batches=None):
    """One training process: rank ``rank`` of ``world``; ``batches``: force these sampled batches."""
    import lamo_ray.tracking as tracking
    from lamo_ray.data.sampling import SegmentSampler

    drawn = []

    class Recording(SegmentSampler):
        def sample(self, batch_size, **kwargs):
            batch = batches.pop(0) if batches else super().sample(batch_size, **kwargs)
            drawn.append({k: v.copy() for k, v in batch.items()})
            return batch

    train.load_dataset = lambda source: dataset()
    train.Evaluator = Evaluator
    train.SegmentSampler = Recording
    tracking.RunLogger = Logger
    session = Session(Path(out), rank, world)
    with gloo_group(rank, world, port):
        train.train_loop_per_worker({"trial": config(world), "mlflow_uri": "sqlite://", "mlflow_run_id": "x"}, session)
    np.savez(Path(out) / f"batch{rank}.npz", **drawn[0])
    if rank == 0:
        torch.save(Logger.logged, Path(out) / "logged.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ddp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(ddp)), nprocs=2, join=True)
    parts = [dict(np.load(ddp / f"batch{r}.npz")) for r in (0, 1)]
    whole = {k: np.concatenate([parts[0][k], parts[1][k]]) for k in parts[0]}
    one = tmp_path_factory.mktemp("one")   # its own process too: the workers patch lamo_ray's modules
    mp.spawn(_worker, args=(1, 0, str(one), [whole]), nprocs=1, join=True)
    return ddp, one, parts


def test_the_ranks_draw_different_halves_of_the_batch(runs):
    _, _, parts = runs
    assert all(len(p["states"]) == BATCH // 2 for p in parts)
    assert not np.array_equal(parts[0]["states"], parts[1]["states"])
    assert parts[0]["attention_mask"].sum() != parts[1]["attention_mask"].sum()   # the test's point: uneven masks


def test_a_ddp_step_equals_one_worker_on_the_concatenated_batch(runs):
    ddp, one, _ = runs
    a, b = load_file(ddp / "rank0" / MODEL_FILE), load_file(one / "rank0" / MODEL_FILE)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, worst


def test_the_logged_loss_is_the_whole_batchs(runs):
    ddp, one, _ = runs
    def merged(path):
        out = {}
        for step, m in torch.load(path, weights_only=False):
            out.setdefault(step, {}).update(m)
        return out

    logged, reference = merged(ddp / "logged.pt"), merged(one / "logged.pt")
    assert logged[1]["train/action_loss"] == pytest.approx(reference[1]["train/action_loss"], rel=1e-5)
