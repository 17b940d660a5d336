"""L2M's dataset files: one ``.npz`` per task holding its SAC replay buffer as flat arrays, read as
ml-jku/L2M's ``extract_trajectories_from_npz`` does (``src/buffers/trajectory_buffer.py``).

The arrays are ``observations (N, obs)``, ``actions (N, act)``, ``rewards (N,)``, ``dones (N,)`` (and
``next_observations``, not needed here); a trajectory ends at a step whose ``done`` is set, and a
trailing piece without one is dropped, as L2M's code does. Files are read with
``numpy.load(allow_pickle=False)``: arrays only, never pickled objects (an ``.npz`` from elsewhere
cannot run code here). Used by the Meta-World and DMControl domains (`lamo_ray.domains.metaworld.l2m_data`,
`lamo_ray.domains.dmcontrol.l2m_data`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lamo_ray.data.trajectories import DatasetError, Trajectory, TrajectoryDataset

log = logging.getLogger(__name__)

KEYS = ("observations", "actions", "rewards", "dones")


def read_arrays(source: str, path: Path) -> dict[str, np.ndarray]:
    """The four arrays of `KEYS` from the file at ``path`` (``source`` names it in errors).

    Raises:
        DatasetError: not a readable ``.npz`` of plain arrays (pickled objects are refused), missing
            keys (the message lists the keys found), different lengths.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in KEYS if k not in f.files]
            if missing:
                raise DatasetError(f"{source}: not an L2M data file, missing keys {missing} "
                                   f"(found {sorted(f.files)}; needs {list(KEYS)})")
            arrays = {k: f[k] for k in KEYS}
    except ValueError as err:       # pickled object arrays refused by allow_pickle=False
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{source}: cannot read its arrays without unpickling objects ({err}); only plain "
                           "numeric arrays are read") from None
    except (OSError, EOFError) as err:
        raise DatasetError(f"{source}: cannot read .npz file ({err})") from None
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{source}: keys have different lengths {lengths}")
    return arrays


def split_trajectories(source: str, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                       dones: np.ndarray) -> list[Trajectory]:
    """L2M's split of flat arrays into trajectories: one ends after each step with ``done`` set; the
    unfinished tail is dropped (logged). ``terminated`` is False (both domains end episodes by time).

    Raises:
        DatasetError: no step has ``done`` set.
    """
    n = len(observations)
    ends = np.flatnonzero(dones.reshape(n).astype(bool)) + 1
    if len(ends) == 0:
        raise DatasetError(f"{source}: no step has done set, so no trajectory is complete")
    if ends[-1] != n:
        log.info("%s: %d steps after the last done dropped (an unfinished episode; L2M drops it too)",
                 source, n - ends[-1])
    rewards = rewards.reshape(n).astype(np.float32)
    starts = np.concatenate([[0], ends[:-1]])
    return [Trajectory(observations[s:e], actions[s:e], rewards[s:e], False) for s, e in zip(starts, ends)]


def load_l2m_file(source: str, path: Path, env_id: str, act_dim: int,
                  states: Callable[[np.ndarray], np.ndarray]) -> TrajectoryDataset:
    """One L2M file as a dataset of ``env_id``.

    Args:
        states: maps the file's ``(N, obs)`` float32 observations to the model's states, raising
            `DatasetError` for a shape it does not know.
        act_dim: the task's action size; another one in the file is an error.

    Returns:
        float32 ``(T, state)`` states and ``(T, act_dim)`` actions per trajectory; no reference scores.

    Raises:
        DatasetError: as `read_arrays`, `split_trajectories`, ``states``, or actions of another size.
    """
    arrays = read_arrays(source, path)
    observations = states(np.asarray(arrays["observations"], dtype=np.float32))
    actions = np.asarray(arrays["actions"], dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != act_dim:
        raise DatasetError(f"{source}: actions {actions.shape[1:]} per step, not the task's ({act_dim},)")
    trajectories = split_trajectories(source, observations, actions, arrays["rewards"], arrays["dones"])
    return TrajectoryDataset(trajectories, (observations.shape[1],), act_dim, False, None, None, env_id, source)
