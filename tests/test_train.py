"""`lamo_ray.train.train_loop_per_worker` without Ray: a fake session (rank 0 of 1, records reports and
copies their checkpoints), a fake `Evaluator` (no rollout actors) and a small in-memory dataset whose
actions are a fixed function of the states, so the model can learn them in a few hundred steps."""

from __future__ import annotations

import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray.train
import torch
from safetensors.torch import load_file

from lamo_ray import train
from lamo_ray.checkpoint import MODEL_FILE, load_checkpoint, load_optimizer_state
from lamo_ray.config import TrialConfig, validate_trial
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset, state_stats
from lamo_ray.model import action_loss
from lamo_ray.train import NonFiniteLossError, train_loop_per_worker

OBS_DIM, ACT_DIM, SEED = 10, 2, 3
SUMMARY = {"normalized_score": 0.25, "normalized_score_ci_low": 0.2, "normalized_score_ci_high": 0.3,
           "return_mean": -12.0}


def learnable_dataset(n: int = 16, length: int = 24, nan_rewards: bool = False) -> TrajectoryDataset:
    """``n`` trajectories of random states; each action is ``tanh(W s)`` for one fixed ``W``."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(OBS_DIM, ACT_DIM)).astype(np.float32) / math.sqrt(OBS_DIM)
    trajectories = []
    for _ in range(n):
        states = rng.normal(size=(length, OBS_DIM)).astype(np.float32)
        actions = np.tanh(states @ weights).astype(np.float32)
        rewards = -np.abs(actions).sum(axis=1).astype(np.float32)
        if nan_rewards:
            rewards[:] = np.nan
        trajectories.append(Trajectory(states, actions, rewards, terminated=False))
    return TrajectoryDataset(trajectories, (OBS_DIM,), ACT_DIM, discrete_actions=False, ref_min_score=-40.0,
                             ref_max_score=0.0, env_id=None, source="in-memory")


def trial(steps: int, eval_every: int, precision: str = "auto") -> TrialConfig:
    return validate_trial({"seed": SEED,
            "data": {"source": "in-memory", "context_length": 4, "max_ep_len": 32, "rtg_scale": 10.0},
            "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1,
                      "dropout": 0.0, "finetune": "full"},
            "train": {"steps": steps, "batch_size": 32, "lr": 1e-3, "warmup_steps": 10, "eval_every": eval_every,
                      "log_every": 10, "precision": precision},
            "eval": {"env_id": "Reacher-v5", "episodes": 2, "target_returns": [0.0]}})


class FakeSession:
    """The `TrainSession` interface on one CPU process; ``report`` copies each checkpoint (the loop
    deletes its own copy after the report) to ``<out>/checkpoint_<step>``."""

    rank, world_size = 0, 1
    device = torch.device("cpu")

    def __init__(self, out: Path, checkpoint: Path | None = None):
        self.out = out
        self.checkpoint = checkpoint
        self.started = time.time()
        self.reports: list[tuple[dict[str, Any], Path | None]] = []
        self.prepared: dict[str, torch.Tensor] = {}

    def get_checkpoint(self):
        return None if self.checkpoint is None else ray.train.Checkpoint.from_directory(str(self.checkpoint))

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        self.prepared = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None, step: int = 0) -> None:
        saved = None
        if checkpoint_dir is not None:
            saved = self.out / f"checkpoint_{step:07d}"
            shutil.copytree(checkpoint_dir, saved)
        self.reports.append((dict(metrics), saved))

    def steps(self) -> list[int]:
        return [m["step"] for m, _ in self.reports]


class FakeEvaluator:
    """Stands in for the rollout actors: records the mode the policy was in and whether it was shut down."""

    def __init__(self, spec, eval_cfg, env_id, refs, seed, env_kwargs=None):
        self.env_id, self.refs = env_id, refs
        self.policy_training: list[bool] = []
        self.shut_down = False

    def __call__(self, policy: torch.nn.Module):
        self.policy_training.append(policy.training)
        return dict(SUMMARY), [{"target_return": 0.0, "return": -12.0, "length": 50, "normalized_score": 0.25}]

    def shutdown(self) -> None:
        self.shut_down = True


class SpySampler(SegmentSampler):
    """`SegmentSampler` that remembers every batch it drew and every reseed."""

    instances: list[SpySampler] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[dict[str, np.ndarray]] = []
        self.reseeds: list[Any] = []
        SpySampler.instances.append(self)

    def reseed(self, seed) -> None:
        self.reseeds.append(seed)
        super().reseed(seed)

    def sample(self, batch_size: int, **kwargs) -> dict[str, np.ndarray]:
        batch = super().sample(batch_size, **kwargs)
        self.batches.append({k: v.copy() for k, v in batch.items()})
        return batch


@pytest.fixture
def fakes(monkeypatch):
    """Patch the loop's data source, rollout actors and sampler; returns (datasets by source, evaluators)."""
    datasets = {"in-memory": learnable_dataset()}
    evaluators: list[FakeEvaluator] = []

    def make_evaluator(*args, **kwargs):
        evaluators.append(FakeEvaluator(*args, **kwargs))
        return evaluators[-1]

    monkeypatch.setattr(train, "load_dataset", lambda source: datasets[source])
    monkeypatch.setattr(train, "Evaluator", make_evaluator)
    monkeypatch.setattr(train, "SegmentSampler", SpySampler)
    monkeypatch.setattr(SpySampler, "instances", [])
    threads = torch.get_num_threads()  # the loop sets it for its worker process
    yield datasets, evaluators
    torch.set_num_threads(threads)


def run(tmp_path: Path, steps: int, eval_every: int, checkpoint: Path | None = None,
        name: str = "run", precision: str = "auto") -> FakeSession:
    session = FakeSession(tmp_path / name, checkpoint)
    session.out.mkdir()
    train_loop_per_worker({"trial": trial(steps, eval_every, precision)}, session)
    return session


def record_losses(monkeypatch, nan_at_step: int | None = None, autocast: list | None = None) -> list[float]:
    """Wrap the loop's `action_loss`: returns the list of each step's loss (made NaN at step ``nan_at_step``);
    appends (autocast enabled, autocast dtype) on the CPU at each call to ``autocast``."""
    losses: list[float] = []

    def recording_loss(*args):
        if autocast is not None:
            autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        loss = action_loss(*args)
        if len(losses) + 1 == nan_at_step:
            loss = loss * float("nan")
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(train, "action_loss", recording_loss)
    return losses


def test_action_loss_decreases_on_a_learnable_dataset(tmp_path, fakes, monkeypatch):
    losses = record_losses(monkeypatch)
    session = run(tmp_path, steps=150, eval_every=50)
    assert len(losses) == 150
    early, late = np.mean(losses[:10]), np.mean(losses[-10:])
    assert late < 0.3 * early, (early, late)
    # each report carries the loss of its own step's batch
    assert [m["train/action_loss"] for m, _ in session.reports] == [losses[49], losses[99], losses[149]]


def test_nan_loss_fails_the_trial_naming_the_step(tmp_path, fakes, monkeypatch):
    _, evaluators = fakes
    record_losses(monkeypatch, nan_at_step=7)
    session = FakeSession(tmp_path)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 7: action loss nan"):
        train_loop_per_worker({"trial": trial(steps=20, eval_every=5)}, session)
    assert session.steps() == [5]  # the NaN step is neither evaluated nor checkpointed
    assert evaluators[0].shut_down  # the rollout actors are released on the way out


def test_nan_rewards_in_the_data_fail_at_the_first_step(tmp_path, fakes):
    datasets, _ = fakes
    datasets["in-memory"] = learnable_dataset(nan_rewards=True)  # NaN returns-to-go
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 1:"):
        train_loop_per_worker({"trial": trial(steps=5, eval_every=5)}, FakeSession(tmp_path))


def test_reports_a_checkpoint_at_every_evaluation_and_at_the_last_step(tmp_path, fakes):
    _, evaluators = fakes
    session = run(tmp_path, steps=25, eval_every=10)
    assert session.steps() == [10, 20, 25]
    for metrics, ckpt in session.reports:
        assert ckpt is not None and load_checkpoint(ckpt).step == metrics["step"]
        assert load_checkpoint(ckpt).env_id == "Reacher-v5"
        assert metrics["steps_total"] == 25 and metrics["mlflow_run_id"] == ""
        assert {k: metrics[k] for k in SUMMARY} == SUMMARY
        assert metrics["eval/time_s"] >= 0 and metrics["train/time_s"] > 0
    [evaluator] = evaluators
    assert evaluator.env_id == "Reacher-v5" and evaluator.refs == (-40.0, 0.0)
    assert evaluator.policy_training == [False] * 3  # evaluated in eval mode (no dropout)
    assert evaluator.shut_down


def test_resume_continues_after_the_checkpoint_step_with_a_reseeded_sampler(tmp_path, fakes):
    fresh = run(tmp_path, steps=25, eval_every=10, name="fresh")
    fresh_sampler = SpySampler.instances[-1]
    assert fresh_sampler.reseeds == [] and len(fresh_sampler.batches) == 25
    at_10 = fresh.reports[0][1]

    resumed = run(tmp_path, steps=25, eval_every=10, checkpoint=at_10, name="resumed")
    sampler = SpySampler.instances[-1]
    assert resumed.steps() == [20, 25]  # steps 11..25, the configured total
    assert len(sampler.batches) == 15
    assert sampler.reseeds == [[SEED, 0, 10]]
    # new batches, not a replay of the fresh run's first ones, and reproducible from (seed, rank, step)
    assert not np.array_equal(sampler.batches[0]["states"], fresh_sampler.batches[0]["states"])
    dataset = learnable_dataset()
    mean, std = state_stats(dataset)
    expected = SegmentSampler(dataset, 4, 10.0, 32, mean, std, seed=0)
    expected.reseed([SEED, 0, 10])
    for key, value in expected.sample(32).items():
        np.testing.assert_array_equal(sampler.batches[0][key], value, err_msg=key)
    # the weights, optimiser and LR schedule continue from the checkpoint
    saved = load_file(str(at_10 / MODEL_FILE))
    assert saved and all(torch.equal(resumed.prepared[k], v) for k, v in saved.items())
    state = load_optimizer_state(resumed.reports[-1][1])
    assert state["scheduler"]["last_epoch"] == 25
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {25}


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_trains_under_autocast_with_fp32_weights(tmp_path, fakes, monkeypatch, precision, dtype):
    autocast: list = []
    losses = record_losses(monkeypatch, autocast=autocast)
    session = run(tmp_path, steps=150, eval_every=150, precision=precision)
    assert set(autocast) == {(True, dtype)}  # forward and loss ran under autocast in the asked dtype
    assert all(math.isfinite(x) for x in losses)
    early, late = np.mean(losses[:10]), np.mean(losses[-10:])
    assert late < 0.3 * early, (early, late)
    ckpt = session.reports[-1][1]
    assert {v.dtype for v in load_file(str(ckpt / MODEL_FILE)).values()} == {torch.float32}
    state = load_optimizer_state(ckpt)
    assert ("grad_scaler" in state) == (precision == "fp16")  # fp16's loss scale is resumed with the run
    if precision == "fp16":
        assert state["grad_scaler"]["scale"] > 0


def test_fp32_is_the_cpu_default_and_runs_without_autocast(tmp_path, fakes, monkeypatch):
    autocast: list = []
    record_losses(monkeypatch, autocast=autocast)
    session = run(tmp_path, steps=5, eval_every=5)
    assert {enabled for enabled, _ in autocast} == {False}
    assert "grad_scaler" not in load_optimizer_state(session.reports[-1][1])


def test_an_offline_trial_with_the_same_seed_repeats_exactly(tmp_path, fakes):
    """Issue 30 (reproducibility): the same offline trial in two fresh sessions draws the same batches
    and reports the same losses and metrics, bit for bit."""
    first = run(tmp_path, 6, 3, name="first")
    batches = [b for s in SpySampler.instances for b in s.batches]
    SpySampler.instances.clear()
    second = run(tmp_path, 6, 3, name="second")
    again = [b for s in SpySampler.instances for b in s.batches]
    assert len(batches) == len(again) == 6
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(batches, again) for k in a)
    def measured(session):   # wall-clock timings aside
        return [{k: v for k, v in m.items() if not k.endswith("time_s")} for m, _ in session.reports]

    assert measured(first) == measured(second) and len(first.reports) == 2


def session_on(device: torch.device, out: Path) -> FakeSession:
    """A `FakeSession` whose device is ``device``, reporting into ``out`` (created)."""
    session = FakeSession(out)
    session.out.mkdir()
    session.device = device
    return session


def assert_asks_for_cuda(cfg: TrialConfig, tmp_path: Path) -> None:
    """The trial ``cfg`` given a CUDA session: on this CPU-only torch an error naming CUDA before any step
    is reported, never a silent CPU run (skips where a CUDA device is present: the trial would run)."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the trial would run")
    session = session_on(torch.device("cuda"), tmp_path / "cuda")
    with pytest.raises((RuntimeError, AssertionError), match="CUDA|NVIDIA"):
        train_loop_per_worker({"trial": cfg}, session)
    assert session.reports == []


def test_an_offline_trial_on_a_cuda_session_asks_for_cuda(tmp_path, fakes):
    """Issue 29: the device comes from the session (``train.use_gpu``); an offline trial given a CUDA
    session moves its model and batches there."""
    assert_asks_for_cuda(trial(4, 2), tmp_path)


def test_auto_precision_is_bf16_or_fp16_on_cuda_and_fp32_on_cpu(monkeypatch):
    from lamo_ray.train import MixedPrecision

    assert MixedPrecision.for_device("auto", torch.device("cpu")).name == "fp32"
    assert MixedPrecision.for_device("bf16", torch.device("cpu")).name == "bf16"
    for supported, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        with warnings.catch_warnings():  # without a GPU, torch warns that the fp16 GradScaler is disabled
            warnings.simplefilter("ignore")
            resolved = MixedPrecision.for_device("auto", torch.device("cuda"))
        assert resolved.name == expected and (resolved.scaler is not None) == (expected == "fp16")
    with pytest.raises(ValueError, match="train.precision.*'fp8'"):
        MixedPrecision.for_device("fp8", torch.device("cpu"))


@pytest.mark.parametrize("rl_from_start", [False, True])
def test_rl_from_start_puts_the_critic_term_into_the_offline_steps(tmp_path, fakes, monkeypatch, rl_from_start):
    """online.rl_from_start (the authors' AntMaze): each offline actor step's loss is sup_coeff x MSE +
    rl_coeff x (-Q1) through the critic training beside it; without it the offline steps are supervised.
    The online phase itself is stubbed out: only the offline steps run."""
    import lamo_ray.online.critic as critic_module

    calls = []
    real = critic_module.actor_rl_loss

    def spy(critic, states, actions, mask):
        out = real(critic, states, actions, mask)
        calls.append((out.item(), actions.requires_grad))
        return out

    monkeypatch.setattr(critic_module, "actor_rl_loss", spy)

    class NoOnline:
        def shutdown(self):
            pass

    monkeypatch.setattr(train, "_online_phase", lambda *a, **k: NoOnline())
    monkeypatch.setattr(train, "_run_online", lambda *a, **k: None)
    cfg = trial(steps=12, eval_every=12).model_dump()
    cfg["online"] = {"method": "td3_odt", "iterations": 1, "target_return": 0.0, "rl_from_start": rl_from_start}
    session = FakeSession(tmp_path / "s")
    session.out.mkdir()
    train_loop_per_worker({"trial": validate_trial(cfg)}, session)
    if rl_from_start:
        assert len(calls) == 12 and all(grad for _, grad in calls)   # every offline actor step, through the DT
    else:
        assert calls == []
