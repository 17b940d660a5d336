"""Meta-World: the 50 ``metaworld`` v3 manipulation tasks with Continual World's evaluation, the
domain of "Learning to Modulate pre-trained Models in RL" (L2M; docs/references/l2m.md).

- Env ids ``MetaWorld/<task>-v3`` (e.g. ``MetaWorld/push-wall-v3``), registered with Gymnasium by
  this module (`register_metaworld_envs`); `make_task_env` builds one. metaworld 3.1.1 has v3 tasks
  only (the paper used v2).
- Continual World's settings (docs/references/l2m.md "Continual World protocol"): 200-step episodes, object
  and goal positions drawn at random at every reset (``_freeze_rand_vec = False``), seeded by the
  reset seed (metaworld's own ``reset`` ignores its seed: `SeededReset` seeds the env first), goal
  position in the observation (MT benchmarks: 39 numbers), success = ``info["success"]`` at any step
  (recorded per episode by the rollouts, reported as ``success_rate``).
- Data made here: `lamo_ray.domains.metaworld.collect` (``lamo/metaworld/<task>-v0``): metaworld's
  scripted expert policies mixed with Gaussian action noise and uniform random actions, so that
  returns spread from random to expert (L2M's data were SAC replay buffers, random to expert), with
  reference scores (random / expert mean return) and the measured expert success in the metadata.
- Task lists: `CW10` (Continual World's sequence, in order), `MT50` (every task), `MT40` (MT50
  without CW10: L2M's pre-training tasks). Unknown names are errors with a did-you-mean (`check_tasks`).
- L2M's own data (its SAC replay buffers, hub dataset ``ml-jku/meta-world``): paths to
  ``<task>-v2.npz`` files, read by `lamo_ray.domains.metaworld.l2m_data` and fetched by the sweep.

    python -m lamo_ray.collect metaworld --tasks hammer push-wall [--episodes N] [--seed S] [--force]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from lamo_ray.domains.base import register
from lamo_ray.domains.l2m import L2MTaskDomain, check_task_names
from lamo_ray.episodes import in_store

log = logging.getLogger(__name__)

NAMESPACE = "MetaWorld"
EPISODE_STEPS = 200          # Continual World's episode length
MAX_PATH_LENGTH = 500        # metaworld's own cap: a longer episode raises inside the env
RTG_SCALE = 200.0            # L2M divides Meta-World returns-to-go and rewards by 200
# Continual World's CW10, in its order (docs/references/l2m.md "Continual World protocol")
CW10 = ("hammer", "push-wall", "faucet-close", "push-back", "stick-pull", "handle-press-side", "push",
        "shelf-place", "window-close", "peg-unplug-side")


def all_tasks() -> tuple[str, ...]:
    """Every metaworld v3 task name, without the ``-v3`` suffix (MT50), in metaworld's order."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(name[: -len("-v3")] for name in ALL_V3_ENVIRONMENTS)


#: the named task lists (Continual World's CW10, MT50, L2M's MT40 = MT50 without CW10)
TASK_LISTS = {"cw10": lambda: CW10, "mt50": all_tasks, "mt40": lambda: tuple(t for t in all_tasks() if t not in CW10)}


def task_list(name: str) -> tuple[str, ...]:
    """A named list: ``cw10``, ``mt50``, ``mt40`` (MT50 without CW10).

    Raises:
        ValueError: another name.
    """
    if name.lower() not in TASK_LISTS:
        raise ValueError(f"unknown Meta-World task list {name!r}; known: {', '.join(TASK_LISTS)}")
    return tuple(TASK_LISTS[name.lower()]())


def check_tasks(tasks: Sequence[str], key: str = "tasks") -> tuple[str, ...]:
    """``tasks`` (names like ``push-wall``; ``-v3`` suffixes and named lists `task_list` accepted),
    expanded and checked.

    Raises:
        ValueError: an unknown task, naming ``key``, the name and the closest known one.
    """
    return check_task_names(tasks, key, all_tasks(), TASK_LISTS, "Meta-World",
                            "names as in metaworld without -v3, or cw10 / mt40 / mt50", suffix="-v3")


def env_id(task: str) -> str:
    """``MetaWorld/<task>-v3``."""
    return f"{NAMESPACE}/{task}-v3"


def task_of(env_id_: str) -> str:
    """The task of ``MetaWorld/<task>-v3``.

    Raises:
        ValueError: not a Meta-World env id, or an unknown task.
    """
    if not env_id_.startswith(f"{NAMESPACE}/") or not env_id_.endswith("-v3"):
        raise ValueError(f"{env_id_!r} is not a Meta-World env id (MetaWorld/<task>-v3)")
    return check_tasks([env_id_[len(NAMESPACE) + 1: -len("-v3")]], key="env id")[0]


class SeededReset(gym.Wrapper):
    """``reset(seed=s)`` seeds the metaworld env's generator first, so the object and goal positions
    drawn at that reset depend on ``s`` only (metaworld's ``reset`` ignores ``seed``)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.env.unwrapped.seed(int(seed))
        return self.env.reset(options=options)


def make_task_env(task: str, render_mode: str | None = None) -> gym.Env:
    """The Gymnasium entry point of ``MetaWorld/<task>-v3``: metaworld's MT1 env of ``task`` with a
    random object and goal position at every reset, seeded by the reset seed (`SeededReset`).
    Episode length comes from the registration (`EPISODE_STEPS`) or ``gym.make(max_episode_steps=)``.

    Raises:
        ValueError: an unknown task (did-you-mean).
    """
    import metaworld

    (task,) = check_tasks([task], key="task")
    name = f"{task}-v3"
    benchmark = metaworld.MT1(name, seed=0)
    env = benchmark.train_classes[name](render_mode=render_mode)
    env.set_task(benchmark.train_tasks[0])
    env._freeze_rand_vec = False     # a new object / goal position at every reset (Continual World)
    env.seeded_rand_vec = True       # drawn from the env's generator, which SeededReset seeds
    return SeededReset(env)


def register_metaworld_envs() -> None:
    """Register ``MetaWorld/<task>-v3`` for every metaworld task (once; 200-step episodes)."""
    for task in all_tasks():
        if env_id(task) not in gym.registry:
            gym.register(id=env_id(task), entry_point="lamo_ray.domains.metaworld:make_task_env",
                         kwargs={"task": task}, max_episode_steps=EPISODE_STEPS,
                         # metaworld's observation space has equal bounds on its padding dims and its
                         # observations leave the box: Gymnasium's passive checker warns on every make
                         disable_env_checker=True)


class MetaWorldDomain(L2MTaskDomain):
    """Meta-World with Continual World's evaluation (module docstring); L2M's files are
    ``.../<task>-v2.npz`` (`lamo_ray.domains.metaworld.l2m_data`)."""

    name = "metaworld"
    l2m_module = "lamo_ray.domains.metaworld.l2m_data"
    env_package = "metaworld"
    local_prefix = "lamo/metaworld/"

    def serves_env(self, env_id_: str) -> bool:
        return env_id_.startswith(f"{NAMESPACE}/")

    def register_envs(self) -> str | None:
        try:
            import metaworld  # noqa: F401
        except ImportError:
            return self.env_package
        register_metaworld_envs()
        return None

    def make_env(self, env_id_: str, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
        """``gym.make`` of a ``MetaWorld/<task>-v3`` id.

        Raises:
            ValueError: an unknown task (did-you-mean), or ``max_episode_steps`` above metaworld's 500.
        """
        task_of(env_id_)
        if max_episode_steps is not None and max_episode_steps > MAX_PATH_LENGTH:
            raise ValueError(f"eval.max_episode_steps {max_episode_steps}: Meta-World episodes are at most "
                             f"{MAX_PATH_LENGTH} steps (Continual World: {EPISODE_STEPS})")
        return super().make_env(env_id_, max_episode_steps=max_episode_steps, **kwargs)

    def check_tasks(self, tasks: Sequence[str], key: str) -> tuple[str, ...]:
        return check_tasks(tasks, key=key)

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """`lamo_ray.domains.metaworld.collect.collect_metaworld` at its default size unless ``dataset_id``
        (``lamo/metaworld/<task>-vN``) is in the Minari store.

        Raises:
            ValueError: ``dataset_id`` names no task.
        """
        if in_store(dataset_id):
            return
        from lamo_ray.domains.metaworld.collect import collect_metaworld

        task = self.task_of_dataset(dataset_id)
        log.info("generating %s (scripted expert + noise + random actions, seed %d); first use only", dataset_id, seed)
        collect_metaworld(task, dataset_id, seed=seed)

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        from lamo_ray.domains.metaworld.collect import add_collect_arguments

        add_collect_arguments(commands.add_parser(
            self.name, help="Meta-World scripted experts + noise + random actions -> one Minari dataset per task"))


METAWORLD = register(MetaWorldDomain())
