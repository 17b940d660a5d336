"""L2M's own Meta-World data: the SAC replay buffers its paper trained on (docs/references/l2m.md "Data"),
published on the Hugging Face hub as the dataset ``ml-jku/meta-world``, folder ``2M``, one file per
task named ``<task>-v2.npz`` (2M transitions each, random to expert).

A data source is a local path to such a file, e.g. ``~/data/meta-world/2M/hammer-v2.npz`` (or, in a
continual sweep, the template ``~/data/meta-world/2M/{task}-v2.npz``). A file that is not there is
downloaded from the hub by the sweep (`lamo_ray.inputs`: `hub_url`, which follows ``HF_ENDPOINT``)
or, offline, listed by ``--dry-run`` with the command that gets it.

The format is L2M's (`lamo_ray.data.l2m_npz`): flat arrays ``observations (N, 39)``, ``actions
(N, 4)``, ``rewards (N,)``, ``dones (N,)``, split into trajectories at ``dones``, read without pickle. The v2 tasks' observations and actions have the v3 envs' layout (39 / 4), so
the data evaluate in ``MetaWorld/<task>-v3``. The files record no reference scores: use
``continual.target_return: data_max`` (L2M's own rule) with them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lamo_ray.data.l2m_npz import load_l2m_file
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, TrajectoryDataset


HUB_REPO = "ml-jku/meta-world"
HUB_FOLDER = "2M"
OBS_DIM, ACT_DIM = 39, 4
_NAME = re.compile(r"^(?P<task>[a-z0-9-]+)-v2\.npz$")


def l2m_file_task(source: str) -> str | None:
    """The task name of an L2M file path (``.../<task>-v2.npz``), unchecked; None for other sources."""
    match = _NAME.match(Path(source).name)
    return match.group("task") if match else None


def hub_url(source: str) -> str:
    """The hub URL of the L2M file that ``source`` names (``ml-jku/meta-world``, ``2M/<name>``)."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(HUB_REPO, f"{HUB_FOLDER}/{Path(source).name}", repo_type="dataset")


def missing_hint(source: str) -> str:
    """How to get the missing L2M file ``source``."""
    path = Path(source).expanduser()
    return (f"L2M's Meta-World file is not here; a sweep run with network access downloads it, or get it with "
            f"`mkdir -p {path.parent} && wget -O {path} {hub_url(source)}` (the hub dataset {HUB_REPO}, folder "
            f"{HUB_FOLDER}). Offline, the local alternative is lamo/metaworld/<task>-v0, made here by "
            "`python -m lamo_ray.collect metaworld`; use it by setting data.source")


def load_l2m_npz(source: str) -> TrajectoryDataset:
    """The trajectories of one L2M Meta-World file (module docstring).

    Returns:
        A dataset with float32 ``(T, 39)`` observations and ``(T, 4)`` actions per trajectory,
        ``env_id`` ``MetaWorld/<task>-v3``, no reference scores; ``terminated`` is False (Meta-World
        episodes end by their time limit).

    Raises:
        DatasetNotDownloadedError: the file is missing (the message says how to get it).
        DatasetError: the file names an unknown task (did-you-mean); not a readable ``.npz`` of
            arrays (e.g. pickled objects), missing keys, shapes that differ from Meta-World's,
            different lengths, no completed trajectory.
    """
    from lamo_ray.domains.metaworld import check_tasks, env_id

    name = l2m_file_task(source)
    if name is None:
        raise DatasetError(f"{source}: not an L2M Meta-World file (<task>-v2.npz)")
    try:
        task = check_tasks([name], key=source)[0]
    except ValueError as err:
        raise DatasetError(str(err)) from None
    path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetNotDownloadedError(f"{source}: {missing_hint(source)}")

    def states(observations: np.ndarray) -> np.ndarray:
        if observations.shape[1:] != (OBS_DIM,):
            raise DatasetError(f"{source}: observations {observations.shape[1:]} per step, not Meta-World's ({OBS_DIM},)")
        return observations

    return load_l2m_file(source, path, env_id(task), ACT_DIM, states)
