"""Training: the per-worker loop that Ray Train's `TorchTrainer` runs with DDP, or that a Tune trial
runs in its own process (``train.launcher`` 'in_trial', the default for 1 worker: no Train
controller or worker processes to start per trial).

One step (docs/references/lamo.md "Optimiser", "Loss"): sample a batch of K-step segments (length-weighted
trajectories, left-padded), predict actions from the state tokens, masked action MSE (or
cross-entropy for discrete actions) + ``co_lambda`` * language-modelling loss, backward, clip
gradients at ``grad_clip``, AdamW(eps 1e-6) with linear warm-up then constant LR.

Every ``eval_every`` steps (and at the last step) rank 0 evaluates with rollout actors
(`lamo_ray.evaluate.Evaluator`), writes a checkpoint and every worker calls ``ray.train.report``
(a barrier), which Tune sees through ``TuneReportCallback`` (in a Tune trial: ``ray.tune.report``).
Training metrics go to the trial's MLflow run every ``log_every`` steps.

Restores from the session's checkpoint (model, optimiser, scheduler, step), so a restarted worker
group, or a Tune trial restarted after a failure or ``--resume``, continues where the last
checkpoint left off.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from lamo_ray.checkpoint import (PolicySpec, load_checkpoint, load_optimizer_state, load_weights_into,
                                 save_checkpoint)
from lamo_ray.config import TrialConfig, torch_threads
from lamo_ray.data.loading import load_dataset
from lamo_ray.data.rewards import RewardTransform
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import state_stats, subsample
from lamo_ray.distributed import ddp_mean, ddp_share
from lamo_ray.envs import evaluation_env_kwargs
from lamo_ray.evaluate import Evaluator, reference_scores
from lamo_ray.model import DecisionTransformer, action_loss
from lamo_ray.learner import Learner
from lamo_ray.optim import (TEMPERATURE_GROUP, MixedPrecision, NonNoopActionLR, make_optimizer, make_scheduler,  # noqa: F401
                            warmup_lambda)
from lamo_ray.sessions import InterruptAfterFirstCheckpoint, TrainSession, TuneTrialSession

if TYPE_CHECKING:
    from lamo_ray.tracking import RunLogger

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message gives the step and loss terms."""


class _SetupClock:
    """Wall-clock phases of a worker's setup, logged to MLflow as ``time/setup/<phase>_s`` (the
    per-trial overhead of benchmarks/overhead.py B7): ``process_start`` (from ``since``, the worker
    process's creation or the Tune trial's start, to the training function: Ray actor start and
    imports), then each `lap`."""

    def __init__(self, entered: float, since: float):
        self.times = {"process_start": max(0.0, entered - since)}
        self.last = entered

    def lap(self, phase: str) -> None:
        now = time.time()
        self.times[phase] = now - self.last
        self.last = now

    def metrics(self) -> dict[str, float]:
        return {f"time/setup/{k}_s": v for k, v in self.times.items()}


def _batch_to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


def non_noop_actions(actions: torch.Tensor) -> int:
    """Actions with index > 0 in a batch of discrete ``actions`` ``(B, K)`` (pads are 0), summed over the DDP
    workers: the count LaMo's Atari loop feeds its schedule (``experiment-atari/core.py:170``,
    ``(actions > 0).sum()`` on its whole batch; `lamo_ray.optim.NonNoopActionLR`). Theirs also counts the
    padded steps of segments longer than their trajectory, which read the data's last action."""
    n = (actions > 0).sum()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(n)
    return int(n)


def train_loop_per_worker(loop_config: dict[str, Any], session: TrainSession | TuneTrialSession | None = None
                          ) -> None:
    """Ray Train worker entry point, and the loop of an 'in_trial' Tune trial (``session``).

    ``loop_config``: ``{"trial": the validated TrialConfig, "mlflow_uri": str | None, "mlflow_run_id": str | None,
    "mlflow_outbox": outbox directory for MLflow writes made during a tracking outage (optional),
    "dataset_ref": ObjectRef of the loaded dataset (optional; default: load ``data.source``)}``.
    ``session``: default `TrainSession` (inside a Ray Train worker).

    Raises:
        NonFiniteLossError: NaN/inf loss (the trial fails; Tune marks it ERROR, MLflow FAILED).
    """
    entered = time.time()
    cfg: TrialConfig = loop_config["trial"]
    session = session or TrainSession()
    if loop_config.get("interrupt_after_first_checkpoint"):   # a rehearsal (lamo_ray.rehearse)
        session = InterruptAfterFirstCheckpoint(session)
    if cfg.continual is not None:  # L2M's protocol: its own loop (lamo_ray.continual.trial)
        from lamo_ray.continual.trial import run_continual_trial

        run_continual_trial(loop_config, session)
        return
    rank, world = session.rank, session.world_size
    torch.set_num_threads(torch_threads(cfg.train.cpus_per_worker))
    torch.manual_seed(cfg.seed * 1000 + rank)
    device = session.device

    # ---- data: whole-trajectory sample ratio, normalisation from the kept data (docs/references/lamo.md "Data")
    setup = _SetupClock(entered, session.started)
    shipped = loop_config.get("backbone")  # the backbone's files from the sweep driver (any node, no cache needed)
    if shipped is not None:
        from lamo_ray.backbones import receive

        receive(shipped)
    ref = loop_config.get("dataset_ref")  # put in the object store by the sweep driver, else read the files
    dataset = subsample(ray.get(ref) if ref is not None else load_dataset(cfg.data.source), cfg.data.sample_ratio,
                        cfg.seed, weighting=cfg.data.subsample)
    dataset = RewardTransform.of(cfg.data).dataset(dataset)  # reward shift / delayed reward (ODT-TD3), if any
    mean, std = state_stats(dataset)
    image_obs = len(dataset.obs_shape) > 1
    sampler = SegmentSampler(dataset, cfg.data.context_length, cfg.data.rtg_scale, cfg.data.max_ep_len,
                             mean, std, seed=cfg.seed * 1000 + rank, segments=cfg.data.segments,
                             rtg_includes_current_reward=cfg.data.rtg_includes_current_reward)
    local_batch = cfg.train.batch_size // world
    setup.lap("data")

    # ---- model
    model = DecisionTransformer(cfg.model, tuple(dataset.obs_shape), dataset.act_dim, cfg.data.max_ep_len,
                                discrete_actions=dataset.discrete_actions,
                                language_loss=cfg.language.co_lambda > 0)
    counts = model.parameter_counts()
    text = None
    if cfg.language.co_lambda > 0:
        from lamo_ray.language import text_sampler

        text = text_sampler(cfg.language.corpus, cfg.model.backbone, cfg.language.block_size,
                            seed=cfg.seed * 1000 + rank)

    setup.lap("model")

    # ---- restore
    start_step = 0
    ckpt = session.get_checkpoint()
    optim_state = None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            loaded = load_checkpoint(d)
            load_weights_into(model, d)
            optim_state = load_optimizer_state(d)
            start_step = loaded.step
        log.info("rank %d restored step %d from checkpoint", rank, start_step)

    model = session.prepare_model(model)
    from lamo_ray.online.critic import td3_actor_loss
    from lamo_ray.online.loop import ONLINE_FILE, make_learner, stochastic_loss, temperature_parameters

    temperature = temperature_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad and not any(p is t for t in temperature)]
    precision = MixedPrecision.for_device(cfg.train.precision, device)
    # one optimiser step for every kind (lamo_ray.learner): DDP's backward averages, so no averaging here
    learner = Learner.build(params, cfg.train, precision, temperature=temperature)
    counts_actions = learner.counts_actions
    if counts_actions and not dataset.discrete_actions:
        raise ValueError(f"train.lr_schedule 'lamo_atari' counts non-NOOP actions: it needs discrete actions, and "
                         f"{cfg.data.source!r} has continuous ones")
    # TD3+ODT / TD3: the critic trains beside the offline steps (the authors' pretraining)
    td3 = make_learner(cfg, model, learner, int(np.prod(dataset.obs_shape)), dataset.act_dim, device)
    online_state = None
    if ckpt is not None and cfg.online is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / ONLINE_FILE).is_file():
                online_state = torch.load(Path(d) / ONLINE_FILE, map_location="cpu", weights_only=True)
    if td3 is not None and online_state is not None and online_state.get("learner") is not None:
        td3.load_state_dict(online_state["learner"])
    if optim_state is not None:
        learner.load_state_dict(optim_state)
        # a resumed run draws new batches, seeded by (seed, rank, step): reproducible, not a replay
        sampler.reseed([cfg.seed, rank, start_step])
        if text is not None:
            text.reseed([cfg.seed, rank, start_step, 1])

    # ---- rank-0 services: MLflow and rollout actors
    tracker = None
    evaluator = None
    spec = PolicySpec(trial=cfg, state_shape=tuple(dataset.obs_shape), act_dim=dataset.act_dim,
                      discrete_actions=dataset.discrete_actions,
                      state_mean=None if image_obs else mean, state_std=None if image_obs else std,
                      backbone_config=model.module.backbone_base_config if hasattr(model, "module")
                      else model.backbone_base_config)
    env_id = cfg.eval.env_id or dataset.env_id
    if env_id is None:
        raise ValueError(f"eval.env_id: not set and dataset {cfg.data.source!r} names no environment")
    env_kwargs = evaluation_env_kwargs(env_id, dataset.env_kwargs if env_id == dataset.env_id else None)
    refs = reference_scores(cfg.eval, env_id, (dataset.ref_min_score, dataset.ref_max_score))
    if rank == 0:
        if loop_config.get("mlflow_run_id"):
            from lamo_ray.tracking import DEVICE_TAG, NODE_ID_TAG, PRECISION_TAG, RunLogger  # rank 0 only: mlflow is ~1 s of imports

            tracker = RunLogger(loop_config["mlflow_uri"], loop_config["mlflow_run_id"],
                                outbox_dir=loop_config.get("mlflow_outbox"))
            # which Ray node trained this trial (set again by a restarted worker group, maybe elsewhere)
            tracker.set_tags({NODE_ID_TAG: ray.get_runtime_context().get_node_id(),
                              PRECISION_TAG: precision.name, DEVICE_TAG: device.type})
            tracker.set_phase(f"resume from the checkpoint of step {start_step}" if start_step > 0 else "setup")
            if start_step > 0:
                tracker.log_metrics({"train/restored_from_step": start_step}, step=start_step)
            else:
                tracker.log_metrics({"params/trainable": counts["trainable"], "params/total": counts["total"],
                                     "params/trainable_share": counts["trainable_share"],
                                     "data/num_trajectories": len(dataset.trajectories),
                                     "data/num_transitions": dataset.num_transitions}, step=0)
        evaluator = Evaluator(spec, cfg.eval, env_id, refs, cfg.seed, env_kwargs=env_kwargs)
    setup.lap("services")
    reporting = _Reporting(cfg, session, spec, env_id, env_kwargs, refs, evaluator, tracker,
                           loop_config.get("mlflow_run_id") or "", counts["trainable_share"])
    if tracker is not None:
        tracker.log_metrics(setup.metrics(), step=start_step)
    log.info("rank %d: %s training on %s", rank, precision.name, device)
    log.info("rank %d setup: %s", rank, ", ".join(f"{k.split('/')[-1]} {v:.1f}" for k, v in setup.metrics().items()))

    stochastic = getattr(model.module if hasattr(model, "module") else model, "stochastic", False)

    rl_from_start = td3 is not None and cfg.online.rl_from_start

    def supervised_step(batch: dict[str, torch.Tensor], step: int, with_text: bool = True,
                        rl_term: bool = False) -> dict[str, float]:
        """One optimiser step on a batch of segments: masked MSE / cross-entropy, or ODT's NLL - T x
        entropy (plus its temperature loss) for the stochastic head; + co_lambda x LM loss (offline).
        ``rl_term`` (``online.rl_from_start``): sup_coeff x MSE + rl_coeff x (-Q1), as the online actor."""
        info: dict[str, float] = {}
        with learner.autocast():
            rl = None
            if stochastic:
                loss, temperature_loss, info = stochastic_loss(model, batch)
            else:
                preds = model(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"],
                              batch["attention_mask"])
                temperature_loss = 0.0
                if rl_term:
                    total, loss, rl = td3_actor_loss(td3.critic, batch["states"], preds.float(), batch["actions"],
                                                     batch["attention_mask"], td3.online.sup_coeff,
                                                     td3.online.rl_coeff)
                else:
                    loss = action_loss(preds.float(), batch["actions"], batch["attention_mask"],
                                       dataset.discrete_actions)
                    if world > 1:
                        loss = loss * ddp_share(batch["attention_mask"], world)
            lm = None
            if rl is None:
                total = loss + temperature_loss
            if text is not None and with_text:
                module = model.module if hasattr(model, "module") else model
                lm = module.lm_loss(text.sample(cfg.language.batch_size).to(device)).float()
                total = total + cfg.language.co_lambda * lm
        if not torch.isfinite(total):
            raise NonFiniteLossError(f"non-finite loss at step {step}: action loss {loss.item()}, "
                                     f"lm loss {None if lm is None else lm.item()}")
        learner.update(total, non_noop_actions(batch["actions"]) if counts_actions else None)
        if world > 1:   # every rank logs the whole batch's values (a mean over the ranks of the shares above)
            loss, lm = ddp_mean(loss, world), None if lm is None else ddp_mean(lm, world)
        out = {"train/action_loss": loss.item(), **{f"train/{k}": v for k, v in info.items()}}
        if rl is not None:
            td3.critic.zero_grad(set_to_none=True)  # the actor's loss does not train the critic
            out["train/actor_rl_loss"] = rl.item()
        if lm is not None:
            out["train/lm_loss"] = lm.item()
        return out

    try:
        if tracker is not None:
            tracker.set_phase("offline steps")
        model.train()
        window_loss, window_lm, window_n, window_t0 = 0.0, 0.0, 0, time.perf_counter()
        train_time = 0.0
        for step in range(start_step + 1, cfg.train.steps + 1):
            t0 = time.perf_counter()
            if td3 is not None:  # the critic's policy_delay steps, then the (supervised) actor step
                for _ in range(td3.online.policy_delay):
                    raw = sampler.sample(local_batch, transitions=True)
                    critic_info = td3.critic_update(_batch_to_torch(raw, device))
                batch = _batch_to_torch({k: raw[k] for k in ("states", "actions", "returns_to_go", "timesteps",
                                                             "attention_mask")}, device)
            else:
                batch = _batch_to_torch(sampler.sample(local_batch), device)
            logged = supervised_step(batch, step, rl_term=rl_from_start)
            if td3 is not None:
                td3.soft_update_targets()
            train_time += time.perf_counter() - t0
            loss_value, lm_value = logged["train/action_loss"], logged.get("train/lm_loss")
            window_loss += loss_value
            window_lm += 0.0 if lm_value is None else lm_value
            window_n += 1

            if tracker is not None and (step % cfg.train.log_every == 0 or step == cfg.train.steps):
                elapsed = time.perf_counter() - window_t0
                metrics = {"train/action_loss": window_loss / window_n, "train/lr": learner.lr,
                           "train/samples_per_s": window_n * cfg.train.batch_size / max(elapsed, 1e-9),
                           "train/step_s": elapsed / window_n}   # wall seconds per step over the window
                if text is not None:
                    metrics["train/lm_loss"] = window_lm / window_n
                    metrics["train/lm_perplexity"] = math.exp(min(window_lm / window_n, 50.0))
                if stochastic:
                    metrics.update({k: logged[k] for k in ("train/entropy", "train/temperature")})
                if td3 is not None:
                    metrics.update({"train/critic_loss": critic_info["online/critic_loss"],
                                    "train/q1_mean": critic_info["online/q1_mean"]})
                if "train/actor_rl_loss" in logged:
                    metrics["train/actor_rl_loss"] = logged["train/actor_rl_loss"]
                tracker.log_metrics(metrics, step=step)
            if step % cfg.train.log_every == 0:
                window_loss, window_lm, window_n, window_t0 = 0.0, 0.0, 0, time.perf_counter()

            if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                reporting.evaluate_and_report(step, model, learner, loss_value, train_time,
                                              online_state=None if td3 is None else
                                              {"iteration": 0, "replay": None, "learner": td3.state_dict()})
                train_time = 0.0
        if cfg.online is not None:
            if tracker is not None:
                tracker.set_phase("online: start (collecting actors, replay)")
            phase = _online_phase(cfg, model, td3, dataset, mean, std, spec, env_id, env_kwargs,
                                  lambda batch: supervised_step(batch, cfg.train.steps, with_text=False), device)
            try:
                if online_state is not None and online_state.get("replay") is not None:
                    phase.load_state_dict(online_state)
                    log.info("resuming the online phase after iteration %d", phase.iteration)
                _run_online(phase, reporting, model, learner, tracker)
            finally:
                phase.shutdown()
        if tracker is not None:
            from lamo_ray.tracking import peak_memory_metrics

            tracker.log_metrics(peak_memory_metrics(device), step=cfg.total_steps)
    finally:  # also when Tune stops the trial (ASHA): its process may train the next trial
        if evaluator is not None:
            evaluator.shutdown()


def _online_phase(cfg: TrialConfig, model, learner, dataset, mean, std, spec: PolicySpec, env_id: str,
                  env_kwargs: dict[str, Any], supervised_step, device: torch.device):
    """The trial's `lamo_ray.online.loop.OnlinePhase` with its rollout actors."""
    from lamo_ray.online.loop import Collector, OnlinePhase

    module = model.module if hasattr(model, "module") else model
    collector = Collector(spec, env_id, cfg.online, cfg.seed, stochastic=getattr(module, "stochastic", False),
                          env_kwargs=env_kwargs, max_episode_steps=cfg.eval.max_episode_steps,
                          actor_cpus=cfg.eval.actor_cpus, gpus_per_actor=cfg.eval.gpus_per_actor)
    return OnlinePhase(cfg, model, learner, dataset, mean, std, collector, supervised_step, device)


def _run_online(phase, reporting: "_Reporting", model, learner: Learner, tracker) -> None:
    """The online iterations left (`OnlinePhase.run_iteration`), metrics to MLflow at each iteration's
    last step, evaluation + checkpoint (with the online state) every ``online.eval_every`` iterations
    and after the last."""
    online = phase.online
    model.train()
    train_time = 0.0
    while phase.iteration < online.iterations:
        if tracker is not None:
            tracker.set_phase(f"online iteration {phase.iteration + 1}: collection, critic and actor updates")
        t0 = time.perf_counter()
        metrics = phase.run_iteration()
        train_time += time.perf_counter() - t0
        step = phase.step_after(phase.iteration - 1)
        if tracker is not None:
            tracker.log_metrics({**metrics, "train/lr": learner.lr}, step=step)
        log.info("online iteration %d/%d: %d transitions, collected return %.2f", phase.iteration, online.iterations,
                 int(metrics["online/transitions"]), metrics["online/collect/return_mean"])
        if phase.iteration % online.eval_every == 0 or phase.iteration == online.iterations:
            loss = metrics.get("online/actor_sup_loss", metrics.get("train/action_loss", float("nan")))
            reporting.evaluate_and_report(step, model, learner, loss, train_time,
                                          online_state=phase.state_dict(),
                                          extra_metrics={"online/transitions": metrics["online/transitions"],
                                                         "online/iteration": float(phase.iteration)})
            train_time = 0.0


@dataclass(frozen=True)
class _Reporting:
    """What a worker's evaluations and reports need besides the model's state, fixed before the
    training loop.

    Attributes:
        cfg: the trial's configuration (``train.steps`` goes into every report).
        session: where reports (and rank 0's checkpoints) go: `TrainSession` or `TuneTrialSession`.
        spec: the policy's architecture and state normalisation, saved with each checkpoint.
        env_id: the evaluation environment's Gymnasium id, saved with each checkpoint.
        env_kwargs: its construction kwargs (`evaluation_env_kwargs`), saved with each checkpoint.
        refs: (ref_min_score, ref_max_score) returns that normalise a score; None where unknown.
        evaluator: rank 0's rollout actors; None on the other ranks.
        tracker: rank 0's MLflow run logger (`lamo_ray.tracking.RunLogger`); None on the other ranks
            or without an MLflow run.
        mlflow_run_id: the trial's MLflow run id ("" without one), reported for Tune's callbacks.
        trainable_share: fraction of the model's parameters that train (0..1).
    """

    cfg: TrialConfig
    session: TrainSession | TuneTrialSession
    spec: PolicySpec
    env_id: str
    env_kwargs: dict[str, Any]
    refs: tuple[float | None, float | None]
    evaluator: Evaluator | None
    tracker: RunLogger | None
    mlflow_run_id: str
    trainable_share: float

    def evaluate_and_report(self, step: int, model: torch.nn.Module, learner: Learner, last_loss: float,
                            train_time: float, online_state: dict[str, Any] | None = None,
                            extra_metrics: dict[str, float] | None = None) -> None:
        """Rank 0: rollouts, MLflow (per-episode table and summary at ``step``), checkpoint; every
        rank: the session's report (a barrier under DDP).

        Args:
            step: the optimiser step just taken (1-based).
            model: the policy being trained (may be DDP-wrapped); put back in train mode afterwards.
            learner: the DT's `lamo_ray.learner.Learner`: its optimiser, schedule and (fp16) scaler states go
                into the checkpoint.
            last_loss: the action loss of ``step``'s batch.
            train_time: seconds spent in training steps since the previous report.
            online_state: the online phase's state (`OnlinePhase.state_dict`: replay, critic, targets),
                saved as ``online.pt`` in the checkpoint.
            extra_metrics: also reported and logged (``online/transitions`` in the online phase).
        """
        metrics: dict[str, Any] = {"step": step, "train/action_loss": last_loss, "train/time_s": train_time,
                                   "mlflow_run_id": self.mlflow_run_id, "params/trainable_share": self.trainable_share,
                                   "steps_total": self.cfg.total_steps, **(extra_metrics or {})}
        if self.session.rank != 0:
            self.session.report(metrics)
            return
        module = model.module if hasattr(model, "module") else model
        module.eval()
        resume_phase = None if self.tracker is None else self.tracker.phase
        if self.tracker is not None:
            self.tracker.set_phase(f"evaluation at step {step}")
        t0 = time.perf_counter()
        summary, records = self.evaluator(module)
        module.train()
        summary["eval/time_s"] = time.perf_counter() - t0
        metrics.update(summary)
        with tempfile.TemporaryDirectory() as tmp:
            if self.tracker is not None:
                import pandas as pd

                table = Path(tmp) / f"step_{step:07d}.parquet"
                pd.DataFrame(records).assign(step=step).to_parquet(table)
                self.tracker.log_artifact(table, "eval")
                self.tracker.log_metrics({**summary, "train/time_s": train_time, **(extra_metrics or {})}, step=step)
            ckpt_dir = save_checkpoint(Path(tmp) / "checkpoint", model, self.spec, self.env_id, self.refs, step,
                                       optimizer_state=learner.state_dict(),
                                       env_kwargs=self.env_kwargs)
            if online_state is not None:
                from lamo_ray.online.loop import ONLINE_FILE

                torch.save(online_state, ckpt_dir / ONLINE_FILE)
            if self.tracker is not None:
                self.tracker.set_phase(f"checkpoint at step {step}")
            self.session.report(metrics, checkpoint_dir=ckpt_dir, step=step)
        if resume_phase is not None:
            self.tracker.set_phase(resume_phase)
