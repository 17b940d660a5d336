"""Every task of a continual run evaluated in parallel on the trial's rollout pool
(`lamo_ray.rollout_pool.RolloutPool`; Continual World evaluates every task after each stage).

Actors are sized by work, not by task: ``eval.num_actors`` actors (at most one per task), each holding
its share of the tasks (round robin in the order evaluated). An actor keeps one copy of the model for all
its tasks, and one `TaskRollout` per task with that task's envs, stepped together with one batched forward
per step (`lamo_ray.evaluate.Rollout`, which feeds an MDDT its rewards and the oracle's task index). So
the actors' memory grows with ``eval.num_actors``, not with the number of tasks. A dead actor is replaced
and its tasks' episodes re-run with the same seeds.

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
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import ray
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.evaluate import Rollout
from lamo_ray.rollout_pool import RolloutPool, actor_threads_and_device, actors_for

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


class MultiTaskRollout:
    """One rollout actor's share of the evaluated tasks: one model (loaded once per evaluation) and one
    `TaskRollout` per task over it.

    Args:
        tasks: ``{task: (policy spec, env id, episodes)}``: the task's spec (its state / action sizes and
            return-to-go scale), env and number of envs (one per episode).
        model: the model to copy in (its structure; weights come with `set_weights`).
        max_episode_steps, threads, device, success_rule: as `TaskRollout`'s.
    """

    def __init__(self, tasks: Mapping[str, tuple[PolicySpec, str, int]], model: torch.nn.Module,
                 max_episode_steps: int | None = None, threads: int = 1, device: str = "cpu",
                 success_rule: str = "any_step"):
        torch.set_num_threads(threads)
        self.model = model.to(device).eval()
        self.rollouts = {task: TaskRollout(spec, env_id, episodes, threads, max_episode_steps, self.model,
                                           device=device, success_rule=success_rule)
                         for task, (spec, env_id, episodes) in tasks.items()}

    def set_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict)

    def run(self, jobs: Mapping[str, tuple[list[tuple[float, int]], int | None]]) -> dict[str, list[dict[str, Any]]]:
        """``{task: (episodes, oracle task index)}`` -> ``{task: records}`` (`lamo_ray.evaluate.Rollout.run`)."""
        return {task: self.rollouts[task].run(episodes, task_index=index) for task, (episodes, index) in jobs.items()}


MultiTaskRolloutActor = ray.remote(MultiTaskRollout)


class TaskEvaluator:
    """The evaluated tasks spread over ``num_actors`` rollout actors of a `RolloutPool`, kept for a run's
    lifetime (module docstring).

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
        num_actors: actors (``eval.num_actors``; at most one per task).
        gpus_per_actor: GPU share per actor (``eval.gpus_per_actor``; > 0: the forward runs on CUDA).

    Raises:
        ValueError: a task without a target return or dimensions.
    """

    def __init__(self, spec: PolicySpec, model: torch.nn.Module, env_ids: Mapping[str, str],
                 dims: Mapping[str, tuple[int, int]], targets: Mapping[str, float], episodes: int, seed: int,
                 seed_offset: int = 10_000, max_episode_steps: int | None = None, actor_cpus: float = 0.0,
                 rtg_scales: Mapping[str, float] | None = None, success_rule: str = "any_step",
                 num_actors: int = 2, gpus_per_actor: float = 0.0):
        missing = [t for t in env_ids if t not in targets or t not in dims]
        if missing:
            raise ValueError(f"no target return or dimensions for the evaluated task(s) {missing}")
        if success_rule not in ("any_step", "last_step"):
            raise ValueError(f"continual.success_rule: unknown rule {success_rule!r} (last_step, any_step)")
        self.targets, self.episodes, self.seed, self.seed_offset = dict(targets), episodes, seed, seed_offset
        self.spec, self.env_ids, self.dims = spec, dict(env_ids), dict(dims)
        self.max_episode_steps, self.actor_cpus, self.gpus_per_actor = max_episode_steps, actor_cpus, gpus_per_actor
        self.rtg_scales = dict(rtg_scales or {})
        self.success_rule = success_rule
        tasks = list(self.env_ids)
        n = actors_for(num_actors, len(tasks))
        self.assignment = {task: i % n for i, task in enumerate(tasks)}   # task -> actor
        self.pool: RolloutPool | None = None
        self.last_returns: dict[str, float] = {}
        self.last_seconds = 0.0            # wall seconds of the last call (its rollouts, all tasks)
        self._keys: frozenset[str] = frozenset()
        self._start(model)

    @property
    def actors(self) -> list[Any]:
        return [] if self.pool is None else self.pool.actors

    @property
    def actor_restarts(self) -> int:
        return 0 if self.pool is None else self.pool.restarts

    def _task_spec(self, task: str) -> PolicySpec:
        s, a = self.dims[task]
        trial = self.spec.trial
        if task in self.rtg_scales:
            trial = trial.model_copy(update={"data": trial.data.model_copy(update={"rtg_scale": self.rtg_scales[task]})})
        return PolicySpec(trial=trial, state_shape=(s,), act_dim=a, discrete_actions=False,
                          state_mean=None, state_std=None, backbone_config=self.spec.backbone_config)

    def _start(self, model: torch.nn.Module) -> None:
        """(Re)start the pool with a copy of ``model``'s structure: at construction, and whenever the
        model's parameter names change (the runner attaches the modulation pool after pre-training;
        weights alone could not carry the pool into actors built without it)."""
        self.shutdown()
        template = copy.deepcopy(model).cpu().eval()
        self._keys = frozenset(model.state_dict())
        threads, device = actor_threads_and_device(self.actor_cpus, self.gpus_per_actor)
        args = []
        for i in range(max(self.assignment.values()) + 1):
            mine = {t: (self._task_spec(t), self.env_ids[t], self.episodes) for t, a in self.assignment.items() if a == i}
            args.append(((mine, template), {"max_episode_steps": self.max_episode_steps, "threads": threads,
                                            "device": device, "success_rule": self.success_rule}))
        self.pool = RolloutPool(MultiTaskRolloutActor, args, self.actor_cpus, self.gpus_per_actor)

    def __call__(self, model: torch.nn.Module, tasks: Sequence[str],
                 task_index: Callable[[str], int | None]) -> dict[str, float]:
        """Success rate (share of successful episodes, by ``success_rule``) of every task in ``tasks`` with
        ``model``'s current weights; ``task_index(task)`` reaches a pool's task-id oracle (None: not used).
        ``last_returns`` then holds each task's mean episode return, ``last_seconds`` the call's wall time.

        Raises:
            KeyError: a task without an actor. RuntimeError: an env that reports no ``success``.
        """
        t0 = time.perf_counter()
        state = model.state_dict()
        if frozenset(state) != self._keys:
            self._start(model)
        unknown = [t for t in tasks if t not in self.assignment]
        if unknown:
            raise KeyError(f"no rollout actor evaluates {unknown}")
        weights = self.pool.push(state)
        base = self.seed + self.seed_offset
        jobs: dict[int, dict[str, tuple[list[tuple[float, int]], int | None]]] = {}
        for task in tasks:
            episodes = [(float(self.targets[task]), base + e) for e in range(self.episodes)]
            jobs.setdefault(self.assignment[task], {})[task] = (episodes, task_index(task))
        parts = self.pool.run({i: ((job,), {}) for i, job in jobs.items()}, weights)
        out = {}
        self.last_returns = {}
        for task in tasks:
            records: list[dict[str, Any]] = parts[self.assignment[task]][task]
            if any("success" not in r for r in records):
                raise RuntimeError(f"{task}: its env reports no success flag")
            out[task] = sum(bool(r["success"]) for r in records) / len(records)
            self.last_returns[task] = float(sum(r["return"] for r in records) / len(records))
        self.last_seconds = time.perf_counter() - t0
        return out

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.pool = None
