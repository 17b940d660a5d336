"""L2M's own DMControl data: the SAC replay buffers its paper pre-trained on (docs/references/l2m.md "Data":
1M transitions per task, random to expert), published on the Hugging Face hub as the dataset
``ml-jku/dm_control`` and read by L2M from ``dm_control_1M_v3_full/<domain>_<task>.npz``
(``configs/agent_params/data_paths/mt40v2_dmc10.yaml``).

A data source is a local path to such a file, e.g. ``~/data/dm_control/cartpole_balance.npz`` (in a
continual sweep the template ``~/data/dm_control/{task_underscored}.npz``). A missing file is downloaded
by the sweep from `hub_url` (``1M/<name>``, following the Meta-World dataset's ``2M/<name>``); that
path inside the hub dataset could not be checked from this machine (no network), so the hint for a
missing file also gives L2M's README command that fetches the whole dataset
(``huggingface-cli download ml-jku/dm_control``).

The format is L2M's (`lamo_ray.data.l2m_npz`): flat ``observations``, ``actions``, ``rewards``,
``dones``, split into trajectories at ``dones``, read without pickle. Observations are either already
in L2M's 204-number state (the ``_full`` files, written by L2M's ``prepare_datasets.py --to_full_space``)
or the suite's flat observation (its keys concatenated in ``observation_spec`` order), which is
mapped into the 204 slots as L2M's ``map_flattened_obs_to_full_space`` does. The files record no
reference scores; the env's are L2M's data-normalized ones, and ``continual.target_return: data_max``
is L2M's rule for evaluation targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lamo_ray.data.l2m_npz import load_l2m_file
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, TrajectoryDataset

HUB_REPO = "ml-jku/dm_control"
HUB_FOLDER = "1M"


def l2m_file_task(source: str) -> str | None:
    """The suite task (``<domain>-<task>``) of an L2M file path (``.../<domain>_<task>.npz``); None for
    other sources (including an ``.npz`` whose name is no suite task)."""
    name = Path(source).name
    if not name.endswith(".npz") or "_" not in name:
        return None
    from lamo_ray.domains.dmcontrol import all_tasks

    stem = name[: -len(".npz")]
    return next((t for t in all_tasks() if t.replace("-", "_") == stem), None)


def hub_url(source: str) -> str:
    """The hub URL of the L2M file that ``source`` names (``ml-jku/dm_control``, ``1M/<name>``)."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(HUB_REPO, f"{HUB_FOLDER}/{Path(source).name}", repo_type="dataset")


def missing_hint(source: str) -> str:
    """How to get the missing L2M file ``source``."""
    path = Path(source).expanduser()
    return (f"L2M's DMControl file is not here; a sweep run with network access downloads it from {hub_url(source)}, "
            f"or fetch L2M's whole dataset with `huggingface-cli download {HUB_REPO} --repo-type dataset "
            f"--local-dir {path.parent}` (L2M's README) and point the source at its {path.name}. Offline, the local "
            "alternative is lamo/dmcontrol/<domain>-<task>-v0, made here by `python -m lamo_ray.collect dmcontrol`; "
            "use it by setting the source")


def flat_to_l2m_state(task: str, observations: np.ndarray, source: str) -> np.ndarray:
    """``(N, d)`` observations of ``task`` -> ``(N, 204)`` L2M states: unchanged if already 204 wide,
    else the suite's flat observation (keys in ``observation_spec`` order) written into each key's slot.

    Raises:
        DatasetError: another width (the message gives both accepted ones).
    """
    from lamo_ray.domains.dmcontrol import STATE_DIM, dm_suite, l2m_state

    if observations.ndim == 2 and observations.shape[1] == STATE_DIM:
        return observations
    domain, name = task.split("-", 1)
    spec = dm_suite().load(domain, name).observation_spec()
    sizes = {k: int(np.prod(v.shape)) for k, v in spec.items()}
    flat = sum(sizes.values())
    if observations.ndim != 2 or observations.shape[1] != flat:
        raise DatasetError(f"{source}: observations {observations.shape[1:]} per step, neither L2M's state "
                           f"({STATE_DIM},) nor {task}'s flat observation ({flat},)")
    bounds = np.cumsum([0, *sizes.values()])
    return l2m_state({k: observations[:, a:b] for k, a, b in zip(sizes, bounds[:-1], bounds[1:])}, batch_dims=1)


def load_l2m_npz(source: str) -> TrajectoryDataset:
    """The trajectories of one L2M DMControl file (module docstring).

    Returns:
        A dataset with float32 ``(T, 204)`` states and ``(T, A)`` actions (A the task's action size),
        ``env_id`` ``DMControl/<domain>-<task>-v0``, no reference scores, ``terminated`` False.

    Raises:
        DatasetNotDownloadedError: the file is missing (the message says how to get it).
        DatasetError: not an L2M DMControl file name; as `lamo_ray.data.l2m_npz.load_l2m_file`;
            observations of neither accepted width (`flat_to_l2m_state`).
    """
    from lamo_ray.domains.dmcontrol import dm_suite, env_id

    task = l2m_file_task(source)
    if task is None:
        raise DatasetError(f"{source}: not an L2M DMControl file (<domain>_<task>.npz of a dm_control suite task)")
    path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetNotDownloadedError(f"{source}: {missing_hint(source)}")
    domain, name = task.split("-", 1)
    act_dim = int(np.prod(dm_suite().load(domain, name).action_spec().shape))
    return load_l2m_file(source, path, env_id(task), act_dim, lambda obs: flat_to_l2m_state(task, obs, source))
