"""Kitchen: D4RL's FrankaKitchen tasks on Gymnasium-Robotics ``FrankaKitchen-v1`` (docs/references/lamo.md "Kitchen").

- Env: `KitchenDomain.make_env` gives D4RL's evaluation semantics (`EVAL_KWARGS`: each subtask
  rewarded once, the episode ends when all are done, 280 steps) on a task list of `TASKS` (default
  D4RL's complete/partial targets); evaluation keeps the training data's task list.
- Observation: D4RL's 60-dim vector (`d4rl_observation`) from the env's dict observation.
- References: 0 / 4 (one point per completed subtask), so the normalized score is subtasks / 4 x 100.
- Data: Minari ``D4RL/kitchen/{complete,partial,mixed}-v2`` (D4RL's human demonstrations, downloaded
  where the network allows) and, made here, scripted demonstrations ``lamo/kitchen/<name>-v0``
  (`lamo_ray.domains.kitchen.collect`, `lamo_ray.domains.kitchen.demonstrator`).

    python -m lamo_ray.collect kitchen [--dataset complete|partial|mixed] [--episodes N] [--dataset-id ID]
                                       [--seed S] [--noise-levels 0 0.03 0.06 0.1] [--force]
    python -m lamo_ray.collect kitchen --evaluate-demonstrator [--episodes 20] [--dataset D]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from lamo_ray.domains.base import Domain, EvaluationDefaults, register
from lamo_ray.episodes import in_store

# FrankaKitchen-v1 (gymnasium-robotics) returns one observation dict object from reset and every step;
# gymnasium's passive checker warns about it on every env built. Harmless here: each observation is
# flattened into a new array before it is kept (`d4rl_observation`).
warnings.filterwarnings("ignore", message=r".*share an object.*", category=UserWarning)

log = logging.getLogger(__name__)

ENV_ID = "FrankaKitchen-v1"
# Target subtasks per D4RL dataset (D4RL kitchen_envs.py; Minari D4RL/kitchen/*-v2 use the same lists):
# complete and partial share theirs, mixed swaps the slide cabinet for the bottom burner.
TASKS: dict[str, tuple[str, ...]] = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}
MAX_EPISODE_STEPS = 280
# D4RL's REMOVE_TASKS_WHEN_COMPLETE / TERMINATE_ON_TASK_COMPLETE: reward = subtasks completed, each
# counted once, so returns are 0..4 (refs 0 / 4). Minari's D4RL/kitchen/*-v2 were *recorded* with
# both False (reward = subtasks currently solved, every step); evaluation uses these values.
EVAL_KWARGS: dict[str, Any] = {"remove_task_when_completed": True, "terminate_on_tasks_completed": True}
# qpos indices of each subtask's objects (D4RL and gymnasium_robotics kitchen_env share this table;
# tests/test_kitchen.py checks it against gymnasium_robotics). The 30-dim D4RL goal puts each desired
# goal at these indices, zeros elsewhere.
OBS_ELEMENT_INDICES: dict[str, tuple[int, ...]] = {
    "bottom burner": (11, 12),
    "top burner": (15, 16),
    "light switch": (17, 18),
    "slide cabinet": (19,),
    "hinge cabinet": (20, 21),
    "microwave": (22,),
    "kettle": (23, 24, 25, 26, 27, 28, 29),
}
REF_SCORES = (0.0, 4.0)
#: the scripted datasets made here, by D4RL dataset name
LOCAL_DATASET_IDS: dict[str, str] = {name: f"lamo/kitchen/{name}-v0" for name in TASKS}


def env_kwargs(tasks: str | Sequence[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """FrankaKitchen-v1 kwargs with D4RL's evaluation semantics (`EVAL_KWARGS`).

    Args:
        tasks: a `TASKS` key ("complete", "partial", "mixed") or a list of subtask names;
            default ``overrides["tasks_to_complete"]``, else the complete/partial targets.
        **overrides: other env kwargs, e.g. a dataset's recorded ones. ``remove_task_when_completed``
            and ``terminate_on_tasks_completed`` are still set to D4RL's evaluation values, and a
            ``max_episode_steps`` entry is dropped (it is the time limit's, not the env's).

    Raises:
        ValueError: an unknown dataset name.
    """
    recorded = overrides.pop("tasks_to_complete", None)
    overrides.pop("max_episode_steps", None)
    tasks = tasks if tasks is not None else recorded or TASKS["complete"]
    if isinstance(tasks, str):
        if tasks not in TASKS:
            raise ValueError(f"unknown kitchen dataset {tasks!r}; known: {', '.join(TASKS)}")
        tasks = TASKS[tasks]
    return {**overrides, "tasks_to_complete": list(tasks), **EVAL_KWARGS}


def d4rl_observation(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """FrankaKitchen-v1 dict observation -> D4RL kitchen's 60-dim state (docs/references/lamo.md "Kitchen").

    ``[robot qpos (9), object qpos (21), goal (30)]`` = ``observation[0:9]``,
    ``observation[18:39]`` and a 30-vector holding each ``desired_goal[task]`` at
    `OBS_ELEMENT_INDICES` [task], zeros elsewhere (D4RL ``KitchenBase._get_obs``).
    Works on one observation or on ``batch_dims`` leading axes (a Minari episode stores each
    key as an array over steps). Returns ``(*batch, 60)`` float32.

    Raises:
        ValueError: no ``observation`` key, ``observation`` is not 59-dim, or a desired goal names
            an unknown subtask or has the wrong size.
    """
    if "observation" not in obs:
        raise ValueError(f"FrankaKitchen dict observation has no 'observation' key (found {sorted(obs)}); "
                         "D4RL's 60-dim layout needs 'observation' (59) and 'desired_goal'")
    state = np.asarray(obs["observation"], dtype=np.float32)
    if state.shape[-1] != 59:
        raise ValueError(f"FrankaKitchen observation must be 59-dim for D4RL's 60-dim layout, got shape {state.shape}")
    goal = np.zeros(state.shape[:-1] + (30,), dtype=np.float32)
    for task, value in obs.get("desired_goal", {}).items():
        if task not in OBS_ELEMENT_INDICES:
            raise ValueError(f"unknown kitchen subtask {task!r} in desired_goal; known: "
                             f"{', '.join(OBS_ELEMENT_INDICES)}")
        index = list(OBS_ELEMENT_INDICES[task])
        value = np.asarray(value, dtype=np.float32)
        if value.shape[-1] != len(index):
            raise ValueError(f"desired_goal[{task!r}] must have {len(index)} values, got shape {value.shape}")
        goal[..., index] = np.broadcast_to(value, state.shape[:-1] + (len(index),))
    return np.concatenate([state[..., 0:9], state[..., 18:39], goal], axis=-1)


def d4rl_dataset_name(source: str) -> str | None:
    """The D4RL dataset name (complete, partial, mixed) in a Minari kitchen id such as
    ``D4RL/kitchen/mixed-v2`` (any version), else None."""
    parts = source.lower().split("/")
    if len(parts) == 3 and parts[0] == "d4rl" and parts[1] == "kitchen":
        name = parts[2].split("-v")[0]
        return name if name in TASKS else None
    return None


class KitchenDomain(Domain):
    """FrankaKitchen-v1 with D4RL's observation, reward and termination (module docstring)."""

    name = "kitchen"
    env_ids = (ENV_ID,)
    env_package = "gymnasium_robotics"
    dataset_prefixes = ("d4rl/kitchen/",)
    local_prefix = "lamo/kitchen/"
    ref_scores_by_name = {"kitchen": REF_SCORES}
    evaluation = EvaluationDefaults(target_returns={ENV_ID: (5, 4, 3, 2, 1)}, rtg_scale=1.0, max_ep_len=1000,
                                    max_episode_steps=MAX_EPISODE_STEPS)

    def serves_env(self, env_id: str) -> bool:
        return "FrankaKitchen" in env_id

    def make_env(self, env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
        """The env with `env_kwargs` (D4RL's evaluation semantics on ``kwargs``' task list), 280
        steps unless ``max_episode_steps`` says otherwise."""
        return super().make_env(env_id, max_episode_steps=max_episode_steps or MAX_EPISODE_STEPS,
                                **env_kwargs(**kwargs))

    def evaluation_env_kwargs(self, env_id: str, data_env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The data's task list with D4RL's evaluation semantics (`env_kwargs`)."""
        return env_kwargs(**dict(data_env_kwargs or {}))

    def flatten_dict_observation(self, obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
        return d4rl_observation(obs, batch_dims)

    def missing_dataset_hint(self, source: str) -> str | None:
        name = d4rl_dataset_name(source)
        if name is None:
            return None
        local_id = LOCAL_DATASET_IDS[name]
        return (f"D4RL's human kitchen demonstrations need it. Offline, the local alternative is scripted "
                f"demonstrations with the same layout and task list: {local_id}, made by "
                f"`python -m lamo_ray.collect kitchen --dataset {name}`; use it by setting data.source: {local_id}")

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """`lamo_ray.domains.kitchen.collect.collect_kitchen` at its default size unless ``dataset_id``
        (``lamo/kitchen/<complete|partial|mixed>-vN``) is in the Minari store.

        Raises:
            ValueError: ``dataset_id`` names no kitchen dataset.
        """
        if in_store(dataset_id):
            return
        from lamo_ray.domains.kitchen.collect import collect_kitchen

        name = self.local_name(dataset_id, list(TASKS))
        log.info("generating %s (scripted kitchen demonstrations, seed %d); first use only", dataset_id, seed)
        collect_kitchen(name, dataset_id, seed=seed)

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        from lamo_ray.domains.kitchen.collect import add_collect_arguments

        add_collect_arguments(commands.add_parser(
            self.name, help="scripted FrankaKitchen-v1 demonstrator -> Minari dataset"))


KITCHEN = register(KitchenDomain())
