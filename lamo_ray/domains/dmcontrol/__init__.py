"""DMControl: the DeepMind Control Suite tasks, the second domain of L2M's multi-domain pre-training
("Learning to Modulate pre-trained Models in RL"; docs/references/l2m.md "Multi-domain Decision Transformer",
ml-jku/L2M ``envs/dmcontrol_utils.py``).

- Env ids ``DMControl/<domain>-<task>-v0`` (L2M's names: ``cartpole-balance``, ``point_mass-easy``,
  ``finger-turn_easy``), registered with Gymnasium by this module: ``dm_control.suite.load`` wrapped by
  Shimmy's ``DmControlCompatibilityV0`` (Farama's Gymnasium binding; reset seeds reach the task's
  random state), then `L2MState`. Episodes are the suite's: 1000 steps, never terminated early.
- The state is L2M's shared 204-number space: every observation key of every suite task has a fixed
  slot (`OBSTYPE_TO_STARTIDX`, L2M's ``DMC_OBSTYPE_TO_STARTIDX``); a task's keys are written into
  their slots and the rest stays zero (`l2m_state`). The same layout serves single-task trials, the
  local data and L2M's files, so all of them meet the multi-domain model (`lamo_ray.mddt`) as L2M's did.
- No success flag: a task is scored by its return, normalized with L2M's data-normalized references
  (`DATA_NORMALIZED_REFS`: random and the mean return of L2M's datasets, ``envs/dmcontrol_dn_scores.py``).
  Evaluation targets: L2M's (`TARGET_RETURNS`, ``envs/target_returns.py``: its datasets' best returns);
  returns-to-go and rewards scaled by 100 (`RTG_SCALE`, L2M's DMC reward scale).
- Data made here: `lamo_ray.domains.dmcontrol.collect` (``lamo/dmcontrol/<domain>-<task>-v0``): the
  replay buffer of a stable-baselines3 SAC agent, random to expert, as L2M's own DMC data were.
- L2M's own data (hub dataset ``ml-jku/dm_control``): ``<domain>_<task>.npz`` paths, read by
  `lamo_ray.domains.dmcontrol.l2m_data`.
- Task lists: `DMC10` (L2M's pre-training tasks), ``all`` (the suite's tasks). Unknown names are
  errors with a did-you-mean (`check_tasks`).

    python -m lamo_ray.collect dmcontrol --task cartpole-balance [--timesteps N] [--seed S] [--force]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from lamo_ray.domains.base import EvaluationDefaults, register
from lamo_ray.domains.l2m import L2MTaskDomain, check_task_names
from lamo_ray.episodes import in_store

log = logging.getLogger(__name__)

NAMESPACE = "DMControl"
EPISODE_STEPS = 1000         # the suite's episodes (L2M: dmc2gym's episode_length 1000, frame_skip 1)
RTG_SCALE = 100.0            # L2M divides DMC returns-to-go and rewards by 100
STATE_DIM = 204              # L2M's DMC_FULL_OBS_DIM: the shared state space of the multi-domain model
# L2M's DMC10 pre-training tasks (docs/references/l2m.md "Continual World protocol")
DMC10 = ("cartpole-balance", "finger-turn_easy", "finger-turn_hard", "fish-upright", "hopper-stand",
         "pendulum-swingup", "point_mass-easy", "reacher-hard", "walker-stand", "walker-run")
# L2M's slots of the 204-number state (envs/dmcontrol_utils.py DMC_OBSTYPE_TO_DIM / _STARTIDX): the
# largest size of each observation key over the suite's benchmarking tasks, in first-seen order
OBSTYPE_TO_DIM = {
    "orientations": 14, "velocity": 27, "position": 8, "touch": 5, "target_position": 2, "dist_to_target": 1,
    "joint_angles": 21, "upright": 1, "target": 3, "head_height": 1, "extremities": 12, "torso_vertical": 3,
    "com_velocity": 3, "arm_pos": 16, "arm_vel": 8, "hand_pos": 4, "object_pos": 4, "object_vel": 3, "target_pos": 4,
    "orientation": 2, "to_target": 2, "joints": 14, "body_velocities": 45, "height": 1}
OBSTYPE_TO_STARTIDX = dict(zip(OBSTYPE_TO_DIM, np.cumsum([0, *OBSTYPE_TO_DIM.values()])[:-1].tolist()))
# L2M's data-normalized references (envs/dmcontrol_dn_scores.py ENVID_TO_DNS): (mean return of random
# actions, mean return of its dataset); its name 'point-mass_easy' is the suite's point_mass-easy
DATA_NORMALIZED_REFS = {
    "acrobot-swingup": (8.351, 4.877), "ball_in_cup-catch": (0.0, 926.719), "cartpole-balance": (350.391, 938.506),
    "cartpole-swingup": (27.414, 766.15), "cheetah-run": (3.207, 324.045), "finger-spin": (0.2, 834.629),
    "finger-turn_easy": (57.8, 800.645), "finger-turn_hard": (40.6, 676.144), "fish-swim": (67.675, 78.212),
    "fish-upright": (229.406, 547.962), "hopper-hop": (0.076, 62.794), "hopper-stand": (1.296, 266.783),
    "humanoid-run": (0.741, 0.794), "humanoid-stand": (4.327, 5.053), "humanoid-walk": (0.913, 1.194),
    "manipulator-bring_ball": (0.0, 0.429), "manipulator-insert_ball": (0.0, 43.307),
    "manipulator-insert_peg": (0.235, 78.477), "pendulum-swingup": (0.0, 614.491),
    "point_mass-easy": (1.341, 779.273), "reacher-easy": (33.0, 849.241), "reacher-hard": (8.0, 779.947),
    "swimmer-swimmer15": (78.817, 152.297), "swimmer-swimmer6": (229.834, 167.082), "walker-run": (23.427, 344.794),
    "walker-stand": (134.701, 816.322), "walker-walk": (30.193, 773.174)}
# L2M's evaluation targets (envs/target_returns.py DMCONTROL_targets: the best return in its datasets)
TARGET_RETURNS = {
    "acrobot-swingup": 158.764, "ball_in_cup-catch": 1000.0, "cartpole-balance": 993.194,
    "cartpole-swingup": 857.492, "cheetah-run": 451.274, "finger-spin": 987.0, "finger-turn_easy": 1000.0,
    "finger-turn_hard": 1000.0, "fish-swim": 794.356, "fish-upright": 999.433, "hopper-hop": 116.777,
    "hopper-stand": 975.575, "humanoid-run": 2.567, "humanoid-stand": 17.218, "humanoid-walk": 12.589,
    "manipulator-bring_ball": 19.022, "manipulator-insert_ball": 1000.0, "manipulator-insert_peg": 1000.0,
    "pendulum-swingup": 1000.0, "point_mass-easy": 998.373, "reacher-easy": 1000.0, "reacher-hard": 1000.0,
    "swimmer-swimmer15": 1000.0, "swimmer-swimmer6": 1000.0, "walker-run": 513.464, "walker-stand": 999.82,
    "walker-walk": 982.159}


def dm_suite():
    """``dm_control.suite``, imported without the GLFW warning its renderer gives on a machine without a
    display, nor its INFO log lines (nothing here renders).

    Raises:
        ImportError: dm-control is not installed.
    """
    # its import also logs at INFO which OpenGL backend it picked (absl's logger): noise on every CLI run
    if logging.getLogger("absl").level == logging.NOTSET:       # unless the user set it
        logging.getLogger("absl").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DISPLAY.*")
        from dm_control import suite
    return suite


def all_tasks() -> tuple[str, ...]:
    """Every task of ``dm_control.suite`` as ``<domain>-<task>`` (L2M's names), in the suite's order."""
    return tuple(f"{domain}-{task}" for domain, task in dm_suite().ALL_TASKS)


def check_tasks(tasks: Sequence[str], key: str = "tasks") -> tuple[str, ...]:
    """``tasks`` (``<domain>-<task>`` names, or ``dmc10``), expanded and checked.

    Raises:
        ValueError: an unknown task, naming ``key``, the name and the closest known one.
    """
    return check_task_names(tasks, key, all_tasks(), {"dmc10": lambda: DMC10}, "DMControl",
                            "names <domain>-<task> as in dm_control.suite, e.g. cartpole-balance, or dmc10")


def is_task(name: str) -> bool:
    """Whether ``name`` is a suite task (``<domain>-<task>``) or ``dmc10``."""
    return name.lower() == "dmc10" or name in all_tasks()


def env_id(task: str) -> str:
    """``DMControl/<domain>-<task>-v0``."""
    return f"{NAMESPACE}/{task}-v0"


def task_of(env_id_: str) -> str:
    """The task of ``DMControl/<domain>-<task>-v0``.

    Raises:
        ValueError: not a DMControl env id, or an unknown task.
    """
    if not env_id_.startswith(f"{NAMESPACE}/") or not env_id_.endswith("-v0"):
        raise ValueError(f"{env_id_!r} is not a DMControl env id ({NAMESPACE}/<domain>-<task>-v0)")
    return check_tasks([env_id_[len(NAMESPACE) + 1: -len("-v0")]], key="env id")[0]


def l2m_state(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """L2M's shared state of a DMControl observation dict (``map_obs_to_full_space``): each key's
    values, flattened, written into its slot (`OBSTYPE_TO_STARTIDX`) of a zero vector.

    Args:
        obs: ``{key: array}`` as the suite returns it (scalars allowed); with ``batch_dims`` leading
            axes kept (1 for a whole episode).

    Returns:
        ``(*batch, 204)`` float32.

    Raises:
        ValueError: a key without a slot, or more numbers than its slot holds (both name the key).
    """
    batch: tuple[int, ...] | None = None
    parts = {}
    for key, value in obs.items():
        if key not in OBSTYPE_TO_STARTIDX:
            raise ValueError(f"DMControl observation key {key!r} has no slot in L2M's state layout "
                             f"(keys: {', '.join(OBSTYPE_TO_DIM)})")
        value = np.asarray(value, dtype=np.float32)
        lead = value.shape[:batch_dims]
        batch = lead if batch is None else batch
        flat = value.reshape(lead + (-1,))
        if flat.shape[-1] > OBSTYPE_TO_DIM[key]:
            raise ValueError(f"DMControl observation key {key!r} has {flat.shape[-1]} numbers, more than its "
                             f"{OBSTYPE_TO_DIM[key]} slots in L2M's state layout")
        parts[key] = flat
    out = np.zeros((batch or ()) + (STATE_DIM,), dtype=np.float32)
    for key, flat in parts.items():
        start = OBSTYPE_TO_STARTIDX[key]
        out[..., start: start + flat.shape[-1]] = flat
    return out


class L2MState(gym.ObservationWrapper):
    """A suite env's dict observations as L2M's 204-number state (`l2m_state`)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)

    def observation(self, observation: Mapping[str, Any]) -> np.ndarray:
        return l2m_state(observation)


def make_task_env(task: str, render_mode: str | None = None) -> gym.Env:
    """The Gymnasium entry point of ``DMControl/<domain>-<task>-v0``: ``suite.load`` in Shimmy's
    ``DmControlCompatibilityV0`` (``reset(seed=s)`` reseeds the task's random state), observations
    as L2M's state (`L2MState`). Actions lie in the suite's bounds ([-1, 1] for every suite task).

    Raises:
        ValueError: an unknown task (did-you-mean).
    """
    from shimmy.dm_control_compatibility import DmControlCompatibilityV0

    (task,) = check_tasks([task], key="task")
    domain, name = task.split("-", 1)
    return L2MState(DmControlCompatibilityV0(dm_suite().load(domain, name), render_mode=render_mode))


def register_dmcontrol_envs() -> None:
    """Register ``DMControl/<domain>-<task>-v0`` for every suite task (once; 1000-step episodes)."""
    for task in all_tasks():
        if env_id(task) not in gym.registry:
            gym.register(id=env_id(task), entry_point="lamo_ray.domains.dmcontrol:make_task_env",
                         kwargs={"task": task}, max_episode_steps=EPISODE_STEPS)


class DMControlDomain(L2MTaskDomain):
    """The DeepMind Control Suite in L2M's state layout (module docstring); L2M's files are
    ``.../<domain>_<task>.npz`` (`lamo_ray.domains.dmcontrol.l2m_data`)."""

    name = "dmcontrol"
    l2m_module = "lamo_ray.domains.dmcontrol.l2m_data"
    env_package = "dm_control"
    local_prefix = "lamo/dmcontrol/"
    ref_scores_by_name = DATA_NORMALIZED_REFS
    evaluation = EvaluationDefaults(target_returns={env_id(t): (r,) for t, r in TARGET_RETURNS.items()},
                                    rtg_scale=RTG_SCALE, max_ep_len=EPISODE_STEPS, max_episode_steps=EPISODE_STEPS)

    def serves_env(self, env_id_: str) -> bool:
        return env_id_.startswith(f"{NAMESPACE}/")

    def register_envs(self) -> str | None:
        try:
            dm_suite()
        except ImportError:
            return self.env_package
        register_dmcontrol_envs()
        return None

    def make_env(self, env_id_: str, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
        """``gym.make`` of a ``DMControl/<domain>-<task>-v0`` id.

        Raises:
            ValueError: an unknown task (did-you-mean), or ``max_episode_steps`` above the suite's 1000
                (the suite ends its episodes there).
        """
        task_of(env_id_)
        if max_episode_steps is not None and max_episode_steps > EPISODE_STEPS:
            raise ValueError(f"eval.max_episode_steps {max_episode_steps}: DMControl episodes are at most "
                             f"{EPISODE_STEPS} steps")
        return super().make_env(env_id_, max_episode_steps=max_episode_steps, **kwargs)

    def flatten_dict_observation(self, obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
        """L2M's state (`l2m_state`)."""
        return l2m_state(obs, batch_dims)

    def ref_scores(self, name: str) -> tuple[float, float] | None:
        """L2M's data-normalized references (`DATA_NORMALIZED_REFS`) of the task named in ``name`` (an
        env id, ``lamo/dmcontrol/...`` id, or an L2M file name ``<domain>_<task>.npz``), else None."""
        from lamo_ray.domains.dmcontrol.l2m_data import l2m_file_task

        return super().ref_scores(l2m_file_task(name) or name)

    def check_tasks(self, tasks: Sequence[str], key: str) -> tuple[str, ...]:
        return check_tasks(tasks, key=key)

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """`lamo_ray.domains.dmcontrol.collect.collect_dmcontrol` at its local size unless ``dataset_id``
        (``lamo/dmcontrol/<domain>-<task>-vN``) is in the Minari store.

        Raises:
            ValueError: ``dataset_id`` names no task.
        """
        if in_store(dataset_id):
            return
        from lamo_ray.domains.dmcontrol.collect import LOCAL_TIMESTEPS, collect_dmcontrol

        task = self.task_of_dataset(dataset_id)
        log.info("generating %s (SAC replay buffer, %d steps, seed %d); first use only", dataset_id,
                 LOCAL_TIMESTEPS, seed)
        collect_dmcontrol(task, dataset_id, timesteps=LOCAL_TIMESTEPS, seed=seed)

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        from lamo_ray.domains.dmcontrol.collect import add_collect_arguments

        add_collect_arguments(commands.add_parser(
            self.name, help="DMControl: the replay buffer of a SAC agent (random to expert) -> one Minari dataset"))


DMCONTROL = register(DMControlDomain())
