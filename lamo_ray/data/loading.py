"""Load trajectories from a D4RL-format HDF5 file or a local Minari dataset.

`load_dataset(source)` picks the reader from the source: a path ending ``.hdf5``/``.h5`` is a
D4RL file (read with h5py: FACTS.md, the ``d4rl`` package cannot be imported here), a
``d4rl-atari/<game>-<kind>-vI`` id or a folder with ``observation.gz`` is a DQN-replay Atari
checkpoint in the d4rl-atari layout (`lamo_ray.data.dqn_replay`), anything
else is a Minari dataset id looked up in the local store (``$MINARI_DATASETS_PATH``, default
``~/.minari/datasets``). Nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lamo_ray.data.dqn_replay import is_dqn_replay_source, load_dqn_replay
from lamo_ray.data.frames import compact_stacks
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, Trajectory, TrajectoryDataset, subsample
from lamo_ray.envs import MUJOCO_ENV_IDS, d4rl_ref_scores, env_family, flatten_observation

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".hdf5", ".h5")
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
# D4RL's gym-MuJoCo v2 files (d4rl/infos.py): dataset hopper-medium-replay-v2 is served as
# hopper_medium_replay-v2.hdf5 from this folder.
D4RL_MUJOCO_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{env}_{kind}-v2.hdf5"
_D4RL_MUJOCO_NAME = re.compile(r"^(hopper|walker2d|halfcheetah)[-_]"
                               r"(random|medium|expert|medium[-_]replay|medium[-_]expert|full[-_]replay)-v2\.hdf5$")


def d4rl_mujoco_url(file_name: str) -> str | None:
    """Download URL of a D4RL gym-MuJoCo v2 file named like the dataset (``hopper-medium-v2.hdf5``)
    or like D4RL's own download (``hopper_medium-v2.hdf5``), any case; None for other names."""
    match = _D4RL_MUJOCO_NAME.match(file_name.lower())
    if match is None:
        return None
    return D4RL_MUJOCO_URL.format(env=match.group(1), kind=match.group(2).replace("-", "_"))


def load_dataset(source: str) -> TrajectoryDataset:
    """All trajectories of ``source``: a D4RL-format HDF5 path, a DQN-replay checkpoint in the
    d4rl-atari layout (`lamo_ray.data.dqn_replay.load_dqn_replay`) or a Minari dataset id.

    HDF5 (D4RL): a leading ``~`` is expanded. Keys ``observations (N, *obs)``, ``actions (N, A)``, ``rewards (N,)``,
    ``terminals (N,)``, ``timeouts (N,)``. A trajectory ends at a step with a terminal or a
    time-out, as in D4RL/DT's ``download_d4rl_datasets.py``; a trailing piece with neither is
    kept (ours; DT drops it). Reference scores come from the file's attributes
    (``ref_min_score``/``ref_max_score``, at the root or on a ``metadata`` group) if present,
    else from `envs.D4RL_REF_SCORES` by the family in the file name, else None; ``env_id`` from
    an ``env_id`` attribute, else None.

    Minari: ``minari.load_dataset(id, download=False)``. Episodes store T+1 observations (the
    last is the observation after the final step); it is dropped. Stacked uint8 frames
    ``(T, S, H, W)`` (Atari) stay uint8 and are held as a view over each frame stored once
    (`lamo_ray.data.frames.compact_stacks`). Dict observations are
    flattened with `envs.flatten_observation` for the dataset's env (FrankaKitchen: D4RL's
    60-dim layout, whether D4RL/kitchen/*-v2 or lamo/kitchen/*). Reference scores come
    from the dataset metadata; ``env_id`` from its env spec, else its eval env spec.

    Raises:
        DatasetNotDownloadedError: a missing HDF5 file named like a D4RL gym-MuJoCo v2 dataset
            (``hopper-medium-v2.hdf5``); the message gives D4RL's URL and the local alternative
            (``python -m lamo_ray.collect mujoco``). Also a Minari id not in the local store.
        DatasetError: missing file, unreadable/corrupt HDF5, missing or inconsistent keys, no
            steps, unknown Minari id (the message says how to get it and lists local ids; for
            ``D4RL/kitchen/*`` it also names the local scripted alternative), observations the
            env's rule cannot map, NaN or infinite values; every message starts with the source.
    """
    if source.lower().endswith(HDF5_SUFFIXES):
        ds = _load_d4rl_hdf5(source)
    elif is_dqn_replay_source(source):
        ds = load_dqn_replay(source)
    else:
        ds = _load_minari(source)
    if not ds.trajectories:
        raise DatasetError(f"{source}: dataset has no steps")
    _check_finite(ds)
    log.info("loaded %s: %d trajectories, %d transitions", source, len(ds.trajectories), ds.num_transitions)
    return ds


def _check_finite(ds: TrajectoryDataset) -> None:
    """NaN / inf in observations, actions or rewards would silently turn the training loss into NaN."""
    for i, t in enumerate(ds.trajectories):
        for key, array in (("observations", t.observations), ("actions", t.actions), ("rewards", t.rewards)):
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                step = int(np.argwhere(~np.isfinite(array))[0][0])
                raise DatasetError(f"{ds.source}: {key} hold NaN or infinite values (first in trajectory {i}, "
                                   f"step {step}); clean the data before training on it")


# --------------------------------------------------------------------------- D4RL HDF5


def _h5_attr(f: h5py.File, key: str) -> Any:
    """Attribute ``key`` at the file root or on a ``metadata`` group, else None."""
    if key in f.attrs:
        return f.attrs[key]
    meta = f.get("metadata")
    if isinstance(meta, h5py.Group):
        if key in meta.attrs:
            return meta.attrs[key]
        if isinstance(meta.get(key), h5py.Dataset):
            return meta[key][()]
    return None


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _load_d4rl_hdf5(source: str) -> TrajectoryDataset:
    path = Path(source).expanduser()
    if not path.is_file():
        url = d4rl_mujoco_url(path.name)
        if url is not None and not path.exists():
            family = env_family(path.name)
            raise DatasetNotDownloadedError(
                f"{source}: D4RL file not downloaded; get it with `mkdir -p {path.parent} && wget -O {path} {url}` "
                f"where the network allows. Offline, the local alternative is D4RL's recipe run here: "
                f"`python -m lamo_ray.collect mujoco --env {family}` makes lamo/mujoco/{family}/"
                "{medium,medium-replay,expert}-v0 (set data.source to one of them)")
        raise DatasetError(f"{source}: file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_KEYS if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise DatasetError(f"{source}: not a D4RL-format file, missing keys {missing} "
                                   f"(found {sorted(f.keys())}; needs {list(D4RL_KEYS)})")
            arrays = {k: f[k][()] for k in D4RL_KEYS}
            ref_min, ref_max = _as_float(_h5_attr(f, "ref_min_score")), _as_float(_h5_attr(f, "ref_max_score"))
            env_id = _as_str(_h5_attr(f, "env_id"))
    except OSError as err:
        raise DatasetError(f"{source}: cannot read HDF5 file ({err})") from None
    if ref_min is None or ref_max is None:
        ref_min, ref_max = d4rl_ref_scores(path.name) or (None, None)

    n = len(arrays["rewards"])
    lengths = {k: len(v) for k, v in arrays.items()}
    if any(length != n for length in lengths.values()):
        raise DatasetError(f"{source}: keys have different lengths {lengths}")
    observations = flatten_observation(env_id, arrays["observations"], batch_dims=1)
    actions, discrete, act_dim = _actions(arrays["actions"], source)
    rewards = arrays["rewards"].reshape(n).astype(np.float32)
    terminals = arrays["terminals"].reshape(n).astype(bool)
    ends = np.flatnonzero(terminals | arrays["timeouts"].reshape(n).astype(bool)) + 1
    if n and (len(ends) == 0 or ends[-1] != n):
        ends = np.append(ends, n)  # trailing unfinished piece (ours: kept)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    trajectories = [Trajectory(observations[s:e], actions[s:e], rewards[s:e], bool(terminals[e - 1]))
                    for s, e in zip(starts, ends)]
    return TrajectoryDataset(trajectories, tuple(observations.shape[1:]), act_dim, discrete,
                             ref_min, ref_max, env_id, source)


def _actions(actions: np.ndarray, source: str) -> tuple[np.ndarray, bool, int]:
    """``(actions, discrete, act_dim)``: integer actions -> ``(N,)`` int64 with
    act_dim = max + 1; others -> ``(N, A)`` float32."""
    if np.issubdtype(actions.dtype, np.integer):
        actions = actions.reshape(len(actions)).astype(np.int64)
        return actions, True, int(actions.max(initial=-1)) + 1
    if actions.ndim != 2:
        raise DatasetError(f"{source}: continuous actions must be (N, A), got shape {actions.shape}")
    return actions.astype(np.float32), False, actions.shape[1]


# --------------------------------------------------------------------------- Minari


def _missing_minari_message(source: str) -> str:
    """Why ``source`` cannot be loaded and how to get it. D4RL kitchen ids also name the local
    scripted alternative (never substituted silently: the user has to ask for it)."""
    import minari

    local = sorted(minari.list_local_datasets())
    message = (f"{source}: no such file and no local Minari dataset with that id "
               f"(store: {minari.storage.get_dataset_path()}). Get it with `minari download {source}` "
               f"where the network allows")
    kitchen = _d4rl_kitchen_name(source)
    if kitchen is not None:
        from lamo_ray.collect import KITCHEN_DATASET_IDS

        local_id = KITCHEN_DATASET_IDS[kitchen]
        message += (f" (D4RL's human kitchen demonstrations need it). Offline, the local alternative is "
                    f"scripted demonstrations with the same layout and task list: "
                    f"{local_id}, made by `python -m lamo_ray.collect kitchen --dataset {kitchen}`; "
                    f"use it by setting data.source: {local_id}")
    elif _minari_mujoco_name(source) is not None:
        family = _minari_mujoco_name(source)
        message += (f". Offline, the local alternative is SAC data made here with D4RL's recipe "
                    f"(its own ref scores): lamo/mujoco/{family}/{{medium,medium-replay,expert}}-v0, made by "
                    f"`python -m lamo_ray.collect mujoco --env {family}`; use it by setting data.source")
    else:
        message += (", or generate local data with `python -m lamo_ray.collect` "
                    "(e.g. `python -m lamo_ray.collect reacher`)")
    return f"{message}. Local ids: {', '.join(local) or 'none'}"


def _d4rl_kitchen_name(source: str) -> str | None:
    """The D4RL dataset name (complete, partial, mixed) in a Minari kitchen id such as
    ``D4RL/kitchen/mixed-v2`` (any version), else None."""
    parts = source.lower().split("/")
    if len(parts) == 3 and parts[0] == "d4rl" and parts[1] == "kitchen":
        name = parts[2].split("-v")[0]
        return name if name in ("complete", "partial", "mixed") else None
    return None


def _minari_mujoco_name(source: str) -> str | None:
    """The env family of a Minari MuJoCo locomotion id such as ``mujoco/hopper/medium-v0``
    (hopper, walker2d, halfcheetah), else None."""
    parts = source.lower().split("/")
    if len(parts) == 3 and parts[0] == "mujoco" and parts[1] in MUJOCO_ENV_IDS:
        return parts[1]
    return None


def _spec_of(metadata: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The env spec stored (as JSON) under ``key`` in Minari metadata, as a dict."""
    raw = metadata.get(key)
    return json.loads(raw) if isinstance(raw, str) else None


def _load_minari(source: str) -> TrajectoryDataset:
    import minari

    try:
        dataset = minari.load_dataset(source, download=False)
    except FileNotFoundError:
        raise DatasetNotDownloadedError(_missing_minari_message(source)) from None
    except Exception as err:  # noqa: BLE001 - a damaged store fails in many ways (JSON, HDF5, metadata)
        raise DatasetError(f"{source}: cannot load Minari dataset ({_minari_path(source)}): "
                           f"{type(err).__name__}: {err}") from None
    try:
        return _read_minari(source, dataset)
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt episode data (h5py OSError, KeyError, ...)
        raise DatasetError(f"{source}: cannot read the Minari dataset's episodes ({_minari_path(source)}), "
                           f"the files may be damaged: {type(err).__name__}: {err}") from None


def _minari_path(source: str) -> str:
    """Where the local store keeps ``source`` (for messages)."""
    try:
        import minari

        return str(Path(minari.storage.get_dataset_path()) / source)
    except Exception:  # noqa: BLE001
        return source


def _read_minari(source: str, dataset: Any) -> TrajectoryDataset:
    import gymnasium as gym

    metadata = dataset.storage.metadata
    spec = _spec_of(metadata, "env_spec") or _spec_of(metadata, "eval_env_spec") or {}
    env_id = spec.get("id")
    action_space = dataset.action_space
    if isinstance(action_space, gym.spaces.Discrete):
        discrete, act_dim = True, int(action_space.n)
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        discrete, act_dim = False, int(action_space.shape[0])
    else:
        raise DatasetError(f"{source}: unsupported action space {action_space}")

    trajectories = []
    for episode in dataset.iterate_episodes():
        try:
            obs = flatten_observation(env_id, episode.observations, batch_dims=1)
        except ValueError as err:
            raise DatasetError(f"{source}: {err}") from None
        if obs.dtype == np.uint8 and obs.ndim == 4:  # stacked frames (Atari): keep each frame once
            obs = compact_stacks(obs)
        obs = obs[:-1]
        actions = np.asarray(episode.actions)
        actions = actions.astype(np.int64).reshape(-1) if discrete else actions.astype(np.float32)
        trajectories.append(Trajectory(obs, actions, np.asarray(episode.rewards, dtype=np.float32),
                                       bool(episode.terminations[-1]) if len(episode) else False))
    trajectories = [t for t in trajectories if t.length]
    obs_shape = tuple(trajectories[0].observations.shape[1:]) if trajectories else ()
    return TrajectoryDataset(trajectories, obs_shape, act_dim, discrete,
                             _as_float(metadata.get("ref_min_score")), _as_float(metadata.get("ref_max_score")),
                             env_id, source, env_kwargs=dict(spec.get("kwargs") or {}),
                             max_episode_steps=spec.get("max_episode_steps"))


# --------------------------------------------------------------------------- summary


def dataset_info(source: str, sample_ratio: float = 1.0, seed: int = 0, weighting: str = "uniform") -> dict[str, Any]:
    """Flat summary of ``source`` after `subsample` (JSON-ready: ints, floats, None).

    Keys: num_trajectories, num_transitions, return_mean, return_min, return_max,
    obs_dim (prod of obs_shape), act_dim, ref_min_score, ref_max_score.

    Raises:
        DatasetError: as `load_dataset` and `subsample`.
    """
    ds = subsample(load_dataset(source), sample_ratio, seed, weighting=weighting)
    returns = ds.returns
    return {
        "num_trajectories": len(ds.trajectories),
        "num_transitions": ds.num_transitions,
        "return_mean": float(returns.mean()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "obs_dim": int(np.prod(ds.obs_shape)),
        "act_dim": ds.act_dim,
        "ref_min_score": ds.ref_min_score,
        "ref_max_score": ds.ref_max_score,
    }
