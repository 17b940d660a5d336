"""One pool of Ray rollout actors for every rollout use of a trial: evaluation (`lamo_ray.evaluate.Evaluator`),
online collection (`lamo_ray.online.loop.Collector`) and continual per-task evaluation
(`lamo_ray.continual.evaluation.TaskEvaluator`). An actor is any Ray actor class with ``set_weights(weights)``
and ``run(...)`` (`lamo_ray.evaluate.RolloutActor` and its subclasses); it steps its vectorised envs with one
batched forward per step.

What the pool guarantees to each use:
- **Weights once per update.** `push` puts the CPU copy of a state dict in the object store once. Every actor
  gets a ``set_weights`` call queued before its next ``run``. A Ray actor runs its calls in order, so the
  run sees those weights.
- **Replaced actors.** An actor that dies (its process killed, its node lost) is started again with the
  same constructor arguments and given the last pushed weights. The job it was running is re-run, with the
  same episodes and seeds, so its records are the ones it would have returned (`restarts` counts these).
  A second death of the same job is raised.
- **Resources.** Each actor reserves ``num_cpus`` CPUs and ``num_gpus`` of a GPU (``eval.gpus_per_actor``:
  the policy's forward on CUDA). The actors a trial starts are the ones its resource request counts:
  bundles of the trial's Tune placement group (`lamo_ray.preflight.TrialResources`). An 'in_trial' trial's
  actors land there by themselves (Tune's group captures its children); a Ray Train worker's would be
  captured by the worker group's own placement group, whose bundles its workers fill, and wait forever,
  so the worker names the trial's group first (`place_actors_in`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
import torch

log = logging.getLogger(__name__)

#: what a killed or lost actor raises at ``ray.get``
ACTOR_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError)

_placement_group = None   # where this process's pools start their actors (`place_actors_in`); None: Ray's default


def place_actors_in(placement_group) -> None:
    """Start this process's rollout actors that reserve resources in ``placement_group`` (a Ray
    ``PlacementGroup``: the Tune trial's, whose bundles after the first are its actors'), in any of its
    bundles with room; None: where Ray puts them by default. Called once by a Ray Train worker before its
    trial's loop (`lamo_ray.tune_runtime`), a process that runs that one trial."""
    global _placement_group
    _placement_group = placement_group


def actor_threads_and_device(actor_cpus: float, gpus_per_actor: float) -> tuple[int, str]:
    """A rollout actor's torch threads and policy device, the same for every use: the threads its
    ``eval.actor_cpus`` allow (`lamo_ray.config.torch_threads`; 1 when it reserves none and borrows the
    trial's), and 'cuda' with a GPU share (``eval.gpus_per_actor`` > 0), else 'cpu'."""
    from lamo_ray.config import torch_threads

    return (torch_threads(actor_cpus) if actor_cpus > 0 else 1), ("cuda" if gpus_per_actor > 0 else "cpu")


def actors_for(num_actors: int, jobs: int) -> int:
    """How many actors a rollout use starts: ``num_actors`` (``eval.num_actors``), never more than it has
    jobs to give them (chunks of episodes, or tasks), at least one. The trial's resource request counts
    the same number (`lamo_ray.preflight.evaluating_actors`)."""
    return max(1, min(num_actors, jobs))


@dataclass
class Submitted:
    """Jobs started by `RolloutPool.submit`: ``{actor index: (args, kwargs)}``, their refs, and the weights
    they run with (an ObjectRef; None: the actors' own, e.g. a fixed model), which a replacement loads."""

    jobs: dict[int, tuple[tuple, dict[str, Any]]]
    refs: dict[int, Any]
    weights: Any


class RolloutPool:
    """Rollout actors kept for a trial's lifetime (module docstring).

    Args:
        actor_class: the Ray actor class (``ray.remote`` of a class with ``set_weights`` and ``run``).
        actor_args: one ``(args, kwargs)`` per actor: its constructor arguments (kept to restart it).
        num_cpus, num_gpus: Ray resources each actor reserves.

    Raises:
        ValueError: no actors.
    """

    def __init__(self, actor_class, actor_args: Sequence[tuple[tuple, Mapping[str, Any]]], num_cpus: float = 0.0,
                 num_gpus: float = 0.0):
        if not actor_args:
            raise ValueError("a rollout pool needs at least one actor")
        self.actor_class, self.num_cpus, self.num_gpus = actor_class, num_cpus, num_gpus
        self.actor_args = [(tuple(a), dict(k)) for a, k in actor_args]
        self.actors = [self._start(i) for i in range(len(self.actor_args))]
        self.restarts = 0
        self.weights: Any = None          # the last pushed weights (an ObjectRef), for restarted actors
        self._ready = False

    def __len__(self) -> int:
        return len(self.actors)

    def _start(self, i: int):
        args, kwargs = self.actor_args[i]
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if _placement_group is not None and (self.num_cpus > 0 or self.num_gpus > 0):
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement_group=_placement_group)
        return self.actor_class.options(**options).remote(*args, **kwargs)

    def ready(self) -> float | None:
        """Wait once for every actor's process to be up; the seconds waited on the first call, else None."""
        if self._ready:
            return None
        t0 = time.perf_counter()
        ray.get([a.__ray_ready__.remote() for a in self.actors])
        self._ready = True
        return time.perf_counter() - t0

    def push(self, state_dict: Mapping[str, torch.Tensor]) -> Any:
        """Put the CPU copy of ``state_dict`` in the object store (once) and return its ref; the next
        `submit` queues it on every actor it uses before their runs."""
        self.weights = ray.put({k: v.detach().cpu() for k, v in state_dict.items()})
        return self.weights

    def submit(self, jobs: Mapping[int, tuple[tuple, Mapping[str, Any]]], weights: Any = None,
               load: bool = True) -> Submitted:
        """Start ``jobs`` (``{actor index: (run args, run kwargs)}``) with ``weights`` (a `push` ref; None: the
        last pushed). With ``load`` each actor first loads them; without, the actors already hold them (a
        later wave of the same weights) and only a replacement actor loads them. Returns at once (`gather`
        waits)."""
        jobs = {i: (tuple(a), dict(k)) for i, (a, k) in jobs.items()}
        weights = self.weights if weights is None else weights
        refs = {}
        for i, (args, kwargs) in jobs.items():
            if load and weights is not None:
                self.actors[i].set_weights.remote(weights)
            refs[i] = self.actors[i].run.remote(*args, **kwargs)
        return Submitted(jobs, refs, weights)

    def gather(self, submitted: Submitted) -> dict[int, Any]:
        """Each job's result, by actor index. A job whose actor died is re-run once on a replacement
        actor given the submission's weights.

        Raises:
            RuntimeError: the replacement died too (the message names the actor and the first error)."""
        out = {}
        for i, ref in submitted.refs.items():
            try:
                out[i] = ray.get(ref)
            except ACTOR_DIED as err:
                out[i] = self._rerun(i, submitted, err)
        return out

    def run(self, jobs: Mapping[int, tuple[tuple, Mapping[str, Any]]], weights: Any = None,
            load: bool = True) -> dict[int, Any]:
        """`submit` then `gather`."""
        return self.gather(self.submit(jobs, weights, load))

    def _rerun(self, i: int, submitted: Submitted, err: Exception) -> Any:
        log.warning("rollout actor %d died (%s); starting a replacement and re-running its episodes", i,
                    type(err).__name__)
        self.restarts += 1
        self.actors[i] = self._start(i)
        if submitted.weights is not None:
            self.actors[i].set_weights.remote(submitted.weights)
        args, kwargs = submitted.jobs[i]
        try:
            return ray.get(self.actors[i].run.remote(*args, **kwargs))
        except ACTOR_DIED as again:
            raise RuntimeError(f"rollout actor {i} died twice on the same episodes ({type(err).__name__}, then "
                               f"{type(again).__name__})") from again

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
