"""Load trajectories from a D4RL-format HDF5 file, a local Minari dataset, or a domain's own format.

`load_dataset(source)` picks the reader from the source: a path ending ``.hdf5``/``.h5`` is a
D4RL file (read with h5py: the ``d4rl`` package cannot be imported here,
docs/references/environment.md "Installing"); a source in a format of its domain's own (`lamo_ray.domains.Domain.load_dataset`, e.g. DQN-replay Atari
checkpoints) is read by that domain; anything else is a Minari dataset id looked up in the local
store (``$MINARI_DATASETS_PATH``, default ``~/.minari/datasets``). Nothing is downloaded; a missing
dataset's error says how to get it and names the local alternative its domain knows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lamo_ray import domains
from lamo_ray.data.frames import compact_stacks
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, Trajectory, TrajectoryDataset, subsample
from lamo_ray.envs import flatten_observation, reference_scores_for

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".hdf5", ".h5")
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def load_dataset(source: str) -> TrajectoryDataset:
    """All trajectories of ``source``: a D4RL-format HDF5 path, a source its domain reads itself
    (`lamo_ray.domains.Domain.load_dataset`, e.g. a DQN-replay checkpoint) or a Minari dataset id.

    HDF5 (D4RL): a leading ``~`` is expanded. Keys ``observations (N, *obs)``, ``actions (N, A)``, ``rewards (N,)``,
    ``terminals (N,)``, ``timeouts (N,)``. A trajectory ends at a step with a terminal or a
    time-out, as in D4RL/DT's ``download_d4rl_datasets.py``; a trailing piece with neither is
    kept (ours; DT drops it). Reference scores come from the file's attributes
    (``ref_min_score``/``ref_max_score``, at the root or on a ``metadata`` group) if present,
    else from the domain named in the file name (`envs.reference_scores_for`: D4RL's), else None;
    ``env_id`` from an ``env_id`` attribute, else None.

    Minari: ``minari.load_dataset(id, download=False)``. Episodes store T+1 observations (the
    last is the observation after the final step); it is dropped. Stacked uint8 frames
    ``(T, S, H, W)`` (Atari) stay uint8 and are held as a view over each frame stored once
    (`lamo_ray.data.frames.compact_stacks`). Dict observations are
    flattened with `envs.flatten_observation` for the dataset's env (FrankaKitchen: D4RL's
    60-dim layout, whether D4RL/kitchen/*-v2 or lamo/kitchen/*). Reference scores come
    from the dataset metadata; ``env_id`` from its env spec, else its eval env spec.

    Then the source's domain prepares it (`lamo_ray.domains.Domain.prepare_dataset`: e.g. PointMaze
    relabels Minari's ``D4RL/pointmaze`` data to D4RL maze2d's fixed evaluation goal).

    Raises:
        DatasetNotDownloadedError: a missing source its domain knows how to get (a D4RL gym-MuJoCo
            v2 file named like ``hopper-medium-v2.hdf5``: the message gives D4RL's URL and the
            local alternative), or a Minari id not in the local store (the message says how to get
            it, names the domain's local alternative if any and lists local ids).
        DatasetError: missing file, unreadable/corrupt HDF5, missing or inconsistent keys, no
            steps, observations the env's rule cannot map, NaN or infinite values; every message
            starts with the source.
    """
    domain = domains.for_dataset(source)
    own = domain.load_dataset(source) if domain is not None else None
    if own is not None:
        ds = own
    elif source.lower().endswith(HDF5_SUFFIXES):
        ds = _load_d4rl_hdf5(source)
    else:
        ds = _load_minari(source)
    if domain is not None:
        ds = domain.prepare_dataset(ds)
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
        domain = domains.for_dataset(source)
        hint = domain.missing_dataset_hint(source) if domain is not None and not path.exists() else None
        if hint is not None:
            raise DatasetNotDownloadedError(f"{source}: {hint}")
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
        ref_min, ref_max = reference_scores_for(path.name) or (None, None)

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
    """Why ``source`` cannot be loaded and how to get it, with the local alternative its domain
    names (never substituted silently: the user has to ask for it)."""
    import minari

    local = sorted(minari.list_local_datasets())
    message = (f"{source}: no such file and no local Minari dataset with that id "
               f"(store: {minari.storage.get_dataset_path()}). Get it with `minari download {source}` "
               f"where the network allows")
    domain = domains.for_dataset(source)
    hint = domain.missing_dataset_hint(source) if domain is not None else None
    if hint is not None:
        message += f" ({hint})"
    else:
        makers = [d.name for d in domains.registered() if d.local_prefix]
        message += f", or generate local data with `python -m lamo_ray.collect <{'|'.join(makers)}>`"
    return f"{message}. Local ids: {', '.join(local) or 'none'}"


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
