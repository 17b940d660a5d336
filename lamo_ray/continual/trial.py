"""A continual trial (a trial config with ``continual:``): L2M's protocol as one Tune trial, on the
same session, MLflow run and checkpoint mechanics as the other trials (`lamo_ray.train`).

- Data: every task's dataset (``data.source`` with ``{task}`` filled; from the object store when the
  sweep driver put it there, ``loop_config["dataset_refs"]``: a rehearsal's stand-ins), down-sampled by
  ``data.sample_ratio``, written once per trial as memory-mapped shards in a temporary directory
  (`lamo_ray.data.shards`); batches come from `ShardedSampler` with raw states (L2M), per domain in
  turn with ``continual.pretrain_mixing: domain`` (`phase_sampler`).
- Model: `lamo_ray.mddt.MultiDomainDecisionTransformer` of ``model`` and ``continual.mddt``, trained on
  the session's device (a GPU with ``train.use_gpu``) in ``train.precision`` resolved for it, as every
  trial (`lamo_ray.optim.MixedPrecision`).
- Workers: with ``train.num_workers`` above 1 (Ray Train's process group) every phase is data-parallel
  (`lamo_ray.continual.runner.ContinualRunner`: each rank its own samples, gradients averaged, one
  step equal to one worker's on the concatenated batch); rank 0 alone starts the rollout actors, logs to
  MLflow and checkpoints, and every rank reports each evaluation.
- Evaluation: `lamo_ray.continual.evaluation.TaskEvaluator`: the evaluated tasks spread over
  ``eval.num_actors`` rollout actors (``eval.actor_cpus``, ``eval.gpus_per_actor`` each), each task conditioned on its data's expert return (``ref_max_score``, else the data's best return),
  success by ``continual.success_rule`` (a trial param in MLflow, as every config key).
- Each evaluation: MLflow gets ``eval/<task>/success_rate`` and ``eval/<task>/return``, and
  ``success_rate`` (the mean over the evaluated tasks); the session gets a report with
  ``normalized_score`` = 100 x that mean (the sweep's scheduler metric) and a checkpoint holding the
  runner's state (``continual.pt``), from which a restarted trial resumes after that evaluation.
- At the end: Continual World's metrics (`lamo_ray.continual.metrics`) of the sequence, logged as
  ``continual/average_success``, ``continual/forgetting/<task>``, their mean over the sequence's
  stages ``continual/forgetting`` (Continual World's average forgetting), each task's mean success
  over its own stage ``continual/auc/<task>`` (forward transfer's AUC) and the success matrix as
  ``continual/success_matrix.json``; the report (`lamo_ray.report`) reads them.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import TrialConfig, torch_threads
from lamo_ray.continual import target_return, task_domain
from lamo_ray.sessions import CONTINUAL_FILE, CONTINUAL_STEP_FILE   # the checkpoint's files

log = logging.getLogger(__name__)

__all__ = ["CONTINUAL_FILE", "CONTINUAL_STEP_FILE", "DomainTurns", "phase_sampler", "run_continual_trial"]


class DomainTurns:
    """Batches from one domain at a time, the domains in turn: ``sample(batch_size)`` asks the next of
    ``samplers`` (one per domain). L2M's ``DomainWeightedRandomSampler`` (ml-jku/L2M
    ``src/buffers/samplers.py:8-59``: "after every batch, the sampler switches to the next domain"); with
    ``train.grad_accumulation`` equal to the number of domains, every optimiser step takes one batch of
    each (L2M's pre-training: 2 domains, ``accumulation_steps=2``)."""

    def __init__(self, samplers):
        self.samplers, self.turn = list(samplers), 0

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        batch = self.samplers[self.turn].sample(batch_size)
        self.turn = (self.turn + 1) % len(self.samplers)
        return batch


def phase_sampler(cfg: TrialConfig, paths, tasks, seed):
    """The batches of a phase over ``tasks`` (``paths``: ``{task: shard directory}``): one
    `lamo_ray.data.shards.ShardedSampler` over them (each sample's task uniform), or for
    ``continual.pretrain_mixing`` 'domain' with tasks of several domains, one per domain (tasks uniform
    within it) taking turns (`DomainTurns`), in the order the domains first appear in ``tasks``."""
    from lamo_ray.data.shards import ShardedSampler

    m = cfg.continual.mddt

    def over(some, s):
        return ShardedSampler([paths[t] for t in some], cfg.data.context_length, [cfg.rtg_scale_of(t) for t in some],
                              cfg.data.max_ep_len, m.state_dim, m.action_dim, seed=s)

    domains = list(dict.fromkeys(task_domain(t) for t in tasks))
    if cfg.continual.pretrain_mixing == "task" or len(domains) == 1:
        return over(tasks, seed)
    return DomainTurns([over([t for t in tasks if task_domain(t) == d], [*np.atleast_1d(seed).tolist(), i])
                        for i, d in enumerate(domains)])


def run_continual_trial(loop_config: dict[str, Any], session) -> None:
    """The loop of a continual trial (module docstring); ``session`` as `lamo_ray.train`'s."""
    from lamo_ray.continual.evaluation import TaskEvaluator
    from lamo_ray.continual.metrics import average_success, forgetting, stage_auc, success_matrix
    from lamo_ray.continual.runner import ContinualRunner
    from lamo_ray.data.loading import load_dataset
    from lamo_ray.data.shards import write_task
    from lamo_ray.data.trajectories import subsample
    from lamo_ray.mddt import MultiDomainDecisionTransformer

    cfg: TrialConfig = loop_config["trial"]
    c = cfg.continual
    torch.set_num_threads(torch_threads(cfg.train.cpus_per_worker))
    torch.manual_seed(cfg.seed)
    rank, world = session.rank, session.world_size
    tracker = None
    if loop_config.get("mlflow_run_id") and rank == 0:
        from lamo_ray.tracking import RunLogger

        tracker = RunLogger(loop_config["mlflow_uri"], loop_config["mlflow_run_id"],
                            outbox_dir=loop_config.get("mlflow_outbox"))
        tracker.set_phase("setup: the tasks' data, the model, the rollout actors")
    workdir = Path(tempfile.mkdtemp(prefix="lamo_ray-continual-"))
    evaluator = None
    try:
        env_ids, dims, targets, paths = {}, {}, {}, {}
        refs = loop_config.get("dataset_refs") or {}   # sources the sweep driver put in the object store
        for i, (task, source) in enumerate(cfg.data_sources.items()):
            data = ray.get(refs[source]) if source in refs else load_dataset(source)
            ds = subsample(data, cfg.data.sample_ratio, cfg.seed, weighting=cfg.data.subsample)
            # numbered folders: a pretrain_datasets entry is a source (a path may be absolute)
            paths[task] = write_task(ds, workdir / f"task{i:03d}", task)
            env_ids[task], dims[task] = ds.env_id, (int(ds.obs_shape[0]), ds.act_dim)
            if task in c.evaluated:
                targets[task] = target_return(ds, c.target_return, source)
        m = c.mddt
        model = MultiDomainDecisionTransformer(cfg.model, cfg.data.max_ep_len, state_dim=m.state_dim,
                                               act_dim=m.action_dim, bins=m.action_bins,
                                               action_dim_embedding=m.action_dim_embedding)
        first = c.evaluated[0]
        spec = PolicySpec(trial=cfg, state_shape=(dims[first][0],), act_dim=dims[first][1], discrete_actions=False,
                          state_mean=None, state_std=None, backbone_config=model.backbone_base_config)
        evaluator = None if rank else TaskEvaluator(spec, model, {t: env_ids[t] for t in c.evaluated}, dims, targets,
                                  c.eval_episodes, cfg.seed, cfg.eval.seed_offset, cfg.eval.max_episode_steps,
                                  cfg.eval.actor_cpus, rtg_scales={t: cfg.rtg_scale_of(t) for t in c.evaluated},
                                  success_rule=c.success_rule, num_actors=cfg.eval.num_actors,
                                  gpus_per_actor=cfg.eval.gpus_per_actor)

        runner = ContinualRunner(model, c, cfg.train, lambda tasks, seed: phase_sampler(cfg, paths, tasks, seed),
                                 evaluator, seed=cfg.seed, device=session.device, rank=rank, world_size=world)
        log.info("continual trial: %s training on %s", runner.precision.name, runner.device)
        if tracker is not None:
            from lamo_ray.tracking import DEVICE_TAG, PRECISION_TAG

            tracker.set_tags({PRECISION_TAG: runner.precision.name, DEVICE_TAG: runner.device.type})
        ckpt = session.get_checkpoint()
        if ckpt is not None:
            if tracker is not None:
                tracker.set_phase("resume from checkpoint")
            with ckpt.as_directory() as d:
                runner.load_state_dict(torch.load(Path(d) / CONTINUAL_FILE, map_location="cpu", weights_only=True))
            log.info("continual trial resumed at stage %d, step %d", runner.stage, runner.step)

        def on_evaluation(record, r) -> None:
            mean = float(np.mean(list(record.success.values())))
            metrics = {"step": record.step, "steps_total": cfg.total_steps, "normalized_score": 100.0 * mean,
                       "success_rate": mean, "continual/stage": float(record.stage),
                       "mlflow_run_id": loop_config.get("mlflow_run_id") or ""}
            per_task = {f"eval/{t}/success_rate": v for t, v in record.success.items()}
            if evaluator is None:   # a rank above 0 of data-parallel workers: rank 0 logs and checkpoints
                session.report({**metrics, **per_task}, checkpoint_dir=None, step=record.step)
                return
            per_task.update({f"eval/{t}/return": v for t, v in evaluator.last_returns.items()})
            if tracker is not None:
                tracker.log_metrics({**per_task, "success_rate": mean, "normalized_score": 100.0 * mean,
                                     "continual/stage": float(record.stage), "eval/time_s": evaluator.last_seconds},
                                    step=record.step)
            with tempfile.TemporaryDirectory() as tmp:
                ckpt_dir = Path(tmp) / "checkpoint"
                ckpt_dir.mkdir()
                torch.save(r.state_dict(), ckpt_dir / CONTINUAL_FILE)
                (ckpt_dir / CONTINUAL_STEP_FILE).write_text(json.dumps({"step": record.step, "stage": r.stage}))
                if tracker is not None:
                    tracker.set_phase(f"checkpoint at step {record.step}")
                session.report({**metrics, **per_task}, checkpoint_dir=ckpt_dir, step=record.step)

        def on_log(step, values) -> None:
            if tracker is not None:
                tracker.log_metrics(values, step=step)

        history = runner.run(on_evaluation, on_log, log_every=cfg.train.log_every,
                             on_phase=None if tracker is None else tracker.set_phase)
        if tracker is not None:
            tasks = list(dict.fromkeys(c.tasks))
            matrix = success_matrix(history, c.tasks, tasks=c.evaluated)
            per_task = forgetting(history, c.tasks)
            last_stage = {t: i for i, t in enumerate(c.tasks)}
            final = {"continual/average_success": average_success(history, c.tasks),
                     "continual/forgetting": float(np.mean([per_task[t] for t in c.tasks])),
                     **{f"continual/forgetting/{t}": v for t, v in per_task.items()},
                     **{f"continual/auc/{t}": stage_auc(history, i, t) for t, i in last_stage.items()}}
            from lamo_ray.tracking import peak_memory_metrics

            tracker.log_metrics({**final, **peak_memory_metrics(runner.device)}, step=runner.step)
            path = workdir / "success_matrix.json"
            path.write_text(json.dumps({"stages": c.tasks, "tasks": c.evaluated, "success": matrix.tolist(),
                                        "sequence": tasks}, indent=1))
            tracker.log_artifact(path, "continual")
    finally:
        if evaluator is not None:
            evaluator.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
