"""Every task of a continual run evaluated in parallel: one Ray rollout actor per task (Continual
World evaluates every task after each stage), each stepping that task's envs together with the
model's current weights (`lamo_ray.evaluate.Rollout`, which feeds an MDDT its rewards and the
oracle's task index).

A task's episodes start from reset seeds ``seed + seed_offset + episode`` (the same at every
evaluation, so evaluations differ only by the weights) and are conditioned on that task's target
return (L2M: a per-task target; here the caller's, e.g. the task data's expert return). An episode is
a success by ``continual.success_rule``: the env's ``info["success"]`` at any step (Continual World's
``SuccessCounter``) or at its last step only (L2M's evaluation callback,
``src/callbacks/custom_eval_callback.py:298-303``; `LastStepSuccess`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import ray
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.evaluate import Rollout

log = logging.getLogger(__name__)


class LastStepSuccess(gym.Wrapper):
    """An env whose ``info["success"]`` is reported only at an episode's last step (terminated or
    truncated), so `lamo_ray.evaluate.Rollout`, which counts the flag set at any step, counts L2M's
    rule: ``info["success"]`` when the episode is done (ml-jku/L2M
    ``src/callbacks/custom_eval_callback.py:298-303``, ``_log_success_callback``)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated) and "success" in info:
            info = {k: v for k, v in info.items() if k != "success"}
        return obs, reward, terminated, truncated, info


class TaskRollout(Rollout):
    """`lamo_ray.evaluate.Rollout` scoring success by ``success_rule`` ('any_step' or 'last_step': its
    envs wrapped in `LastStepSuccess`); other arguments as `Rollout`'s."""

    def __init__(self, *args, success_rule: str = "any_step", **kwargs):
        if success_rule not in ("any_step", "last_step"):
            raise ValueError(f"continual.success_rule: unknown rule {success_rule!r} (last_step, any_step)")
        super().__init__(*args, **kwargs)
        if success_rule == "last_step":
            self.envs = [LastStepSuccess(env) for env in self.envs]


TaskRolloutActor = ray.remote(TaskRollout)


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
        rtg_scales: ``{task: return-to-go divisor}`` where it differs from the spec's ``data.rtg_scale``
            (tasks of several domains: L2M's 200 Meta-World, 100 DMControl).
        success_rule: 'any_step' or 'last_step' (module docstring; ``continual.success_rule``).
    """

    def __init__(self, spec: PolicySpec, model: torch.nn.Module, env_ids: Mapping[str, str],
                 dims: Mapping[str, tuple[int, int]], targets: Mapping[str, float], episodes: int, seed: int,
                 seed_offset: int = 10_000, max_episode_steps: int | None = None, actor_cpus: float = 0.0,
                 rtg_scales: Mapping[str, float] | None = None, success_rule: str = "any_step"):
        missing = [t for t in env_ids if t not in targets or t not in dims]
        if missing:
            raise ValueError(f"no target return or dimensions for the evaluated task(s) {missing}")
        self.targets, self.episodes, self.seed, self.seed_offset = dict(targets), episodes, seed, seed_offset
        self.spec, self.env_ids, self.dims = spec, dict(env_ids), dict(dims)
        self.max_episode_steps, self.actor_cpus = max_episode_steps, actor_cpus
        self.rtg_scales = dict(rtg_scales or {})
        self.success_rule = success_rule
        self.actors: dict[str, Any] = {}
        self.last_returns: dict[str, float] = {}
        self._keys: frozenset[str] = frozenset()
        self._start(model)

    def _start(self, model: torch.nn.Module) -> None:
        """(Re)start the actors with a copy of ``model``'s structure: at construction, and whenever the
        model's parameter names change (the runner attaches the modulation pool after pre-training;
        weights alone could not carry the pool into actors built without it)."""
        self.shutdown()
        template = copy.deepcopy(model).cpu().eval()
        self._keys = frozenset(model.state_dict())
        for task, env_id in self.env_ids.items():
            s, a = self.dims[task]
            trial = self.spec.trial
            if task in self.rtg_scales:
                trial = trial.model_copy(update={"data": trial.data.model_copy(update={"rtg_scale": self.rtg_scales[task]})})
            task_spec = PolicySpec(trial=trial, state_shape=(s,), act_dim=a, discrete_actions=False,
                                   state_mean=None, state_std=None, backbone_config=self.spec.backbone_config)
            self.actors[task] = TaskRolloutActor.options(num_cpus=self.actor_cpus).remote(
                task_spec, env_id, self.episodes, 1, self.max_episode_steps, template, success_rule=self.success_rule)

    def __call__(self, model: torch.nn.Module, tasks: Sequence[str],
                 task_index: Callable[[str], int | None]) -> dict[str, float]:
        """Success rate (share of successful episodes, by ``success_rule``) of every task in ``tasks`` with
        ``model``'s current weights; ``task_index(task)`` reaches a pool's task-id oracle (None: not used).
        ``last_returns`` then holds each task's mean episode return.

        Raises:
            KeyError: a task without an actor. RuntimeError: an env that reports no ``success``.
        """
        state = model.state_dict()
        if frozenset(state) != self._keys:
            self._start(model)
        weights = ray.put({k: v.detach().cpu() for k, v in state.items()})
        # every actor has the weights before any episode starts (a failed load raises here, not silently)
        ray.get([self.actors[task].set_weights.remote(weights) for task in tasks])
        base = self.seed + self.seed_offset
        pending = {}
        for task in tasks:
            episodes = [(float(self.targets[task]), base + e) for e in range(self.episodes)]
            pending[task] = self.actors[task].run.remote(episodes, task_index=task_index(task))
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
