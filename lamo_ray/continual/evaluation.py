"""Every task of a continual run evaluated in parallel: one Ray rollout actor per task (Continual
World evaluates every task after each stage), each stepping that task's envs together with the
model's current weights (`lamo_ray.evaluate.Rollout`, which feeds an MDDT its rewards and the
oracle's task index).

A task's episodes start from reset seeds ``seed + seed_offset + episode`` (the same at every
evaluation, so evaluations differ only by the weights) and are conditioned on that task's target
return (L2M: a per-task target; here the caller's, e.g. the task data's expert return).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.evaluate import RolloutActor

log = logging.getLogger(__name__)


class TaskEvaluator:
    """Rollout actors, one per task, kept for a run's lifetime.

    Args:
        spec: the trial's policy spec (K, rtg_scale and max_ep_len from its config; raw states: no
            normalisation). Its ``state_shape`` / ``act_dim`` are overridden per task.
        model: the model to copy into every actor (its weights are replaced at each call).
        env_ids: ``{task: env id}`` of the evaluated tasks. dims: ``{task: (state dim, action dim)}``.
        targets: ``{task: target return}``.
        episodes: per task and evaluation. seed, seed_offset: reset seeds (module docstring).
        max_episode_steps: episode cap (default the env's).
        actor_cpus: Ray CPUs each actor reserves (0: it borrows the trial's, which waits meanwhile).
    """

    def __init__(self, spec: PolicySpec, model: torch.nn.Module, env_ids: Mapping[str, str],
                 dims: Mapping[str, tuple[int, int]], targets: Mapping[str, float], episodes: int, seed: int,
                 seed_offset: int = 10_000, max_episode_steps: int | None = None, actor_cpus: float = 0.0):
        missing = [t for t in env_ids if t not in targets or t not in dims]
        if missing:
            raise ValueError(f"no target return or dimensions for the evaluated task(s) {missing}")
        self.targets, self.episodes, self.seed, self.seed_offset = dict(targets), episodes, seed, seed_offset
        template = copy.deepcopy(model).cpu().eval()
        self.actors = {}
        self.last_returns: dict[str, float] = {}
        for task, env_id in env_ids.items():
            s, a = dims[task]
            task_spec = PolicySpec(trial=spec.trial, state_shape=(s,), act_dim=a, discrete_actions=False,
                                   state_mean=None, state_std=None, backbone_config=spec.backbone_config)
            self.actors[task] = RolloutActor.options(num_cpus=actor_cpus).remote(
                task_spec, env_id, episodes, 1, max_episode_steps, template)

    def __call__(self, model: torch.nn.Module, tasks: Sequence[str],
                 task_index: Callable[[str], int | None]) -> dict[str, float]:
        """Success rate (share of episodes with ``success`` at any step) of every task in ``tasks`` with
        ``model``'s current weights; ``task_index(task)`` reaches a pool's task-id oracle (None: not used).
        ``last_returns`` then holds each task's mean episode return.

        Raises:
            KeyError: a task without an actor. RuntimeError: an env that reports no ``success``.
        """
        weights = ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
        base = self.seed + self.seed_offset
        pending = {}
        for task in tasks:
            actor = self.actors[task]
            episodes = [(float(self.targets[task]), base + e) for e in range(self.episodes)]
            actor.set_weights.remote(weights)
            pending[task] = actor.run.remote(episodes, task_index=task_index(task))
        out = {}
        self.last_returns = {}
        for task, ref in pending.items():
            records: list[dict[str, Any]] = ray.get(ref)
            if any("success" not in r for r in records):
                raise RuntimeError(f"{task}: its env reports no success flag")
            out[task] = sum(bool(r["success"]) for r in records) / len(records)
            self.last_returns[task] = float(sum(r["return"] for r in records) / len(records))
        return out

    def shutdown(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors = {}
