"""Trajectories stored per task as memory-mapped Arrow shards, and segments sampled from them without
loading a task into memory (L2M's data at paper scale: ~100M transitions, docs/references/l2m.md "Data").

Layout of one task (`write_task`), a directory:

- ``steps-NNNNN.arrow``: Arrow IPC files (uncompressed, so they memory-map), one row per step, columns
  ``observations`` (fixed-size list of float32, S), ``actions`` (fixed-size list of float32, A),
  ``rewards`` (float32), ``returns_to_go`` (float32, undiscounted from the step on), ``timesteps``
  (int32). Whole trajectories only: a trajectory never spans two shards.
- ``trajectories.parquet``: one row per trajectory: ``shard``, ``offset`` (first row in its shard),
  ``length``, ``return``, ``terminated``.
- ``meta.json``: task name, source, env id, S, A, reference scores, counts, state mean and std.

`ShardedSampler` opens every shard with ``pyarrow.memory_map`` and reads the columns as numpy views
over the mapped files: a batch touches only the pages of its own segments, the OS page cache holds
the hot ones once per node whatever the number of worker processes, and the process keeps only the
per-trajectory index in its own memory. Batches mix tasks (each sample's task uniform over the
tasks, L2M's balanced multi-task batches) and come padded into one shared state and action space
for `lamo_ray.mddt.MultiDomainDecisionTransformer`, with the action mask of each sample's task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lamo_ray.data.trajectories import TrajectoryDataset, returns_to_go, state_stats

META = "meta.json"
INDEX = "trajectories.parquet"
DEFAULT_SHARD_ROWS = 1_000_000


def write_task(ds: TrajectoryDataset, out_dir: str | Path, task: str, shard_rows: int = DEFAULT_SHARD_ROWS,
               force: bool = False) -> Path:
    """Write ``ds`` (vector observations, continuous actions) as one task's shards in ``out_dir``
    (module docstring); a new shard starts once ``shard_rows`` steps are written. Returns the directory.

    Raises:
        FileExistsError: ``out_dir`` holds a task already and ``force`` is false.
        ValueError: image observations, discrete actions, no trajectories, ``shard_rows`` < 1.
    """
    out = Path(out_dir)
    if (out / META).exists() and not force:
        raise FileExistsError(f"{out}: a sharded task is already there; pass --force (force=True) to replace it")
    if len(ds.obs_shape) != 1 or ds.discrete_actions or not ds.trajectories or shard_rows < 1:
        raise ValueError(f"{ds.source}: sharding needs vector observations, continuous actions, at least one "
                         f"trajectory and shard_rows >= 1 (got obs {ds.obs_shape}, discrete "
                         f"{ds.discrete_actions}, {len(ds.trajectories)} trajectories, shard_rows {shard_rows})")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("steps-*.arrow"):
        old.unlink()
    s, a = ds.obs_shape[0], ds.act_dim
    schema = pa.schema([("observations", pa.list_(pa.float32(), s)), ("actions", pa.list_(pa.float32(), a)),
                        ("rewards", pa.float32()), ("returns_to_go", pa.float32()), ("timesteps", pa.int32())])
    index = {"shard": [], "offset": [], "length": [], "return": [], "terminated": []}
    shard, rows, pending = 0, 0, []

    def flush():
        nonlocal shard, rows, pending
        if not pending:
            return
        obs = np.concatenate([t.observations for t in pending]).astype(np.float32)
        act = np.concatenate([t.actions for t in pending]).astype(np.float32)
        columns = [pa.FixedSizeListArray.from_arrays(pa.array(obs.reshape(-1)), s),
                   pa.FixedSizeListArray.from_arrays(pa.array(act.reshape(-1)), a),
                   pa.array(np.concatenate([t.rewards for t in pending]).astype(np.float32)),
                   pa.array(np.concatenate([returns_to_go(t.rewards) for t in pending]).astype(np.float32)),
                   pa.array(np.concatenate([np.arange(t.length) for t in pending]).astype(np.int32))]
        with pa.OSFile(str(out / f"steps-{shard:05d}.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        shard, rows, pending = shard + 1, 0, []

    for t in ds.trajectories:
        if rows and rows + t.length > shard_rows:
            flush()
        index["shard"].append(shard)
        index["offset"].append(rows)
        index["length"].append(t.length)
        index["return"].append(t.ret)
        index["terminated"].append(bool(t.terminated))
        pending.append(t)
        rows += t.length
    flush()
    pq.write_table(pa.table(index), out / INDEX)
    mean, std = state_stats(ds)
    meta = {"task": task, "source": ds.source, "env_id": ds.env_id, "obs_dim": s, "act_dim": a,
            "ref_min_score": ds.ref_min_score, "ref_max_score": ds.ref_max_score, "shards": shard,
            "trajectories": len(ds.trajectories), "transitions": ds.num_transitions,
            "state_mean": mean.tolist(), "state_std": std.tolist()}
    (out / META).write_text(json.dumps(meta, indent=1))
    return out


@dataclass
class ShardedTask:
    """One task's shards, memory-mapped: per shard numpy views over the files, and the trajectory index."""

    path: Path
    meta: dict
    observations: list[np.ndarray]   # per shard (rows, S) float32, memory-mapped
    actions: list[np.ndarray]        # per shard (rows, A)
    rewards: list[np.ndarray]        # per shard (rows,)
    rtg: list[np.ndarray]            # per shard (rows,)
    timesteps: list[np.ndarray]      # per shard (rows,) int32
    shard: np.ndarray                # per trajectory
    offset: np.ndarray
    length: np.ndarray

    @classmethod
    def open(cls, path: str | Path) -> "ShardedTask":
        """Map a task directory written by `write_task`.

        Raises:
            FileNotFoundError: no ``meta.json`` there (the message names the directory).
        """
        path = Path(path)
        if not (path / META).is_file():
            raise FileNotFoundError(f"{path}: not a sharded task (no {META}); write one with lamo_ray.data.shards.write_task")
        meta = json.loads((path / META).read_text())
        views = {k: [] for k in ("observations", "actions", "rewards", "returns_to_go", "timesteps")}
        for i in range(meta["shards"]):
            reader = pa.ipc.open_file(pa.memory_map(str(path / f"steps-{i:05d}.arrow"), "r"))
            if reader.num_record_batches != 1:  # `write_task` writes one; concatenating would copy the shard
                raise ValueError(f"{path}: shard {i} has {reader.num_record_batches} record batches, expected 1")
            batch = reader.get_batch(0)  # zero-copy over the mapped file
            for name in views:
                column = batch.column(name)
                if name in ("observations", "actions"):
                    width = meta["obs_dim"] if name == "observations" else meta["act_dim"]
                    views[name].append(column.values.to_numpy(zero_copy_only=True).reshape(-1, width))
                else:
                    views[name].append(column.to_numpy(zero_copy_only=True))
        index = pq.read_table(path / INDEX)
        return cls(path, meta, views["observations"], views["actions"], views["rewards"], views["returns_to_go"],
                   views["timesteps"], index.column("shard").to_numpy(), index.column("offset").to_numpy(),
                   index.column("length").to_numpy())


class ShardedSampler:
    """K-step segments (left-padded, DT's ``get_batch``) from several memory-mapped tasks, padded into a
    shared space (module docstring).

    Args:
        tasks: task directories (`write_task`).
        context_length: K. rtg_scale: returns-to-go and rewards are divided by it (L2M: 200 Meta-World,
            100 DMControl): one number, or one per task.
        max_ep_len: timesteps clipped to ``max_ep_len - 1``.
        state_dim, act_dim: the shared (padded) sizes; a task may not exceed them.
        seed: the sampler's generator.
        normalize: states become ``(s - mean) / std`` with each task's own statistics (``meta.json``);
            false: raw (L2M).
        task_weights: the probability of each task per sample (normalised here); default uniform.

    Raises:
        ValueError: no tasks, a task wider than ``state_dim`` / ``act_dim`` (naming it), K < 1, a scale
            <= 0, scales or weights not one per task, weights negative or all zero.
    """

    def __init__(self, tasks: Sequence[str | Path], context_length: int, rtg_scale: float | Sequence[float],
                 max_ep_len: int, state_dim: int, act_dim: int, seed: int, normalize: bool = False,
                 task_weights: Sequence[float] | None = None):
        scales = np.broadcast_to(np.asarray(rtg_scale, dtype=np.float64), (len(tasks),)) \
            if np.ndim(rtg_scale) == 0 or len(rtg_scale) == len(tasks) else None
        if not tasks or context_length < 1 or scales is None or (scales <= 0).any():
            raise ValueError(f"need at least one task, context_length >= 1 and rtg_scale > 0 (one, or one per task); "
                             f"got {len(tasks)} tasks, {context_length}, {rtg_scale}")
        weights = np.ones(len(tasks)) if task_weights is None else np.asarray(task_weights, dtype=np.float64)
        if weights.shape != (len(tasks),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task_weights {task_weights}: one non-negative weight per task ({len(tasks)}), not all 0")
        self.tasks = [ShardedTask.open(t) for t in tasks]
        for t in self.tasks:
            if t.meta["obs_dim"] > state_dim or t.meta["act_dim"] > act_dim:
                raise ValueError(f"task {t.meta['task']!r} ({t.path}): state {t.meta['obs_dim']} / action "
                                 f"{t.meta['act_dim']} dimensions exceed the shared {state_dim} / {act_dim}")
        self.k, self.rtg_scales, self.max_ep_len = context_length, scales.astype(np.float32), max_ep_len
        self.task_probs = weights / weights.sum()
        self._uniform = task_weights is None       # the same random stream as before weights existed
        self.state_dim, self.act_dim, self.normalize = state_dim, act_dim, normalize
        self._probs = [t.length / t.length.sum() for t in self.tasks]   # length-weighted within a task, as DT
        self._stats = [(np.asarray(t.meta["state_mean"], np.float32), np.asarray(t.meta["state_std"], np.float32))
                       for t in self.tasks]
        self._rng = np.random.default_rng(seed)

    def reseed(self, seed) -> None:
        """Restart the random stream (e.g. on restore, as `SegmentSampler.reseed`)."""
        self._rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """One batch: each sample's task drawn by ``task_weights`` (default uniform), then a
        length-weighted trajectory and a start uniform over its steps (left padding).

        Returns:
            states (B, K, state_dim) float32, zero-padded (dims and steps); actions (B, K, act_dim)
            float32, zero-padded; returns_to_go, rewards (B, K, 1) float32 / the task's rtg_scale; timesteps (B, K)
            int64; attention_mask (B, K) float32; action_mask (B, act_dim) bool, the task's real action
            dims; task (B,) int64, the index into ``tasks``.
        """
        k, b = self.k, batch_size
        task_of = (self._rng.integers(0, len(self.tasks), size=b) if self._uniform
                   else self._rng.choice(len(self.tasks), size=b, p=self.task_probs))
        out = {"states": np.zeros((b, k, self.state_dim), np.float32),
               "actions": np.zeros((b, k, self.act_dim), np.float32),
               "returns_to_go": np.zeros((b, k, 1), np.float32), "rewards": np.zeros((b, k, 1), np.float32),
               "timesteps": np.zeros((b, k), np.int64), "attention_mask": np.zeros((b, k), np.float32),
               "action_mask": np.zeros((b, self.act_dim), bool), "task": task_of.astype(np.int64)}
        for ti in np.unique(task_of):
            task = self.tasks[ti]
            rows = np.flatnonzero(task_of == ti)
            traj = self._rng.choice(len(task.length), size=len(rows), p=self._probs[ti])
            lengths = task.length[traj]
            start = self._rng.integers(0, lengths)
            valid = np.minimum(k, lengths - start)
            offset = np.arange(k)[None, :] - (k - valid)[:, None]          # < 0 on the left padding
            mask = offset >= 0
            s, a = task.meta["obs_dim"], task.meta["act_dim"]
            out["action_mask"][rows, :a] = True
            out["attention_mask"][rows] = mask
            for shard in np.unique(task.shard[traj]):
                pick = task.shard[traj] == shard
                r = rows[pick]
                index = (task.offset[traj][pick] + start[pick])[:, None] + np.clip(offset[pick], 0, None)
                m = mask[pick]
                # sorted, unique page reads would help a cold cache; numpy's take on the map reads what it needs
                states = task.observations[shard][index]
                if self.normalize:
                    mean, std = self._stats[ti]
                    states = (states - mean) / std
                out["states"][r, :, :s] = np.where(m[..., None], states, 0)
                out["actions"][r, :, :a] = np.where(m[..., None], task.actions[shard][index], 0)
                out["returns_to_go"][r, :, 0] = np.where(m, task.rtg[shard][index], 0) / self.rtg_scales[ti]
                out["rewards"][r, :, 0] = np.where(m, task.rewards[shard][index], 0) / self.rtg_scales[ti]
                out["timesteps"][r] = np.where(m, np.minimum(task.timesteps[shard][index], self.max_ep_len - 1), 0)
        return out
