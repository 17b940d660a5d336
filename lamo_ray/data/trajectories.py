"""Trajectories in memory, and what training derives from them.

A `TrajectoryDataset` is what `lamo_ray.data.loading.load_dataset` returns for any source; this
module also holds the data steps of docs/references/lamo.md "Data" that do not depend on the source:
down-sampling by whole trajectory (`subsample`), state normalisation statistics (`state_stats`)
and returns-to-go (`returns_to_go`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A dataset source cannot be loaded or used; the message names the source."""


class DatasetNotDownloadedError(DatasetError):
    """A Minari dataset id that is not in the local store (it may exist remotely); the message
    says how to download it or what to use instead."""


@dataclass
class Trajectory:
    """One episode of logged experience (T steps).

    Attributes:
        observations: ``(T, *obs_shape)`` float32 states, or uint8 images.
        actions: ``(T, A)`` float32 (continuous) or ``(T,)`` int64 (discrete).
        rewards: ``(T,)`` float32, reward after each action.
        terminated: True if the episode ended in a terminal state (not a time-out, not cut off).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool

    @property
    def length(self) -> int:
        """T, the number of steps."""
        return len(self.rewards)

    @property
    def ret(self) -> float:
        """Undiscounted return, the sum of rewards."""
        return float(np.sum(self.rewards, dtype=np.float64))


@dataclass
class TrajectoryDataset:
    """Trajectories from one source, plus what evaluation needs to know about it.

    Attributes:
        trajectories: the episodes, in source order.
        obs_shape: shape of one observation (``(obs_dim,)`` for state vectors).
        act_dim: action dimension A; for discrete actions, the number of actions.
        discrete_actions: actions are int64 indices.
        ref_min_score, ref_max_score: returns that normalise a score to 0 and 1
            (docs/references/lamo.md "Evaluation"); None when the source does not give them.
        env_id: Gymnasium id of the env the data came from, None if unknown.
        source: the path or Minari id it was loaded from (for messages).
        env_kwargs: kwargs the data's env was made with (Minari env spec), for `envs.make_env`.
        max_episode_steps: the data's env time limit, None if unknown.
    """

    trajectories: list[Trajectory]
    obs_shape: tuple[int, ...]
    act_dim: int
    discrete_actions: bool
    ref_min_score: float | None
    ref_max_score: float | None
    env_id: str | None
    source: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None

    @property
    def num_transitions(self) -> int:
        """Total steps over all trajectories."""
        return int(sum(t.length for t in self.trajectories))

    @property
    def returns(self) -> np.ndarray:
        """``(N,)`` float64 undiscounted return of each trajectory."""
        return np.array([t.ret for t in self.trajectories], dtype=np.float64)

    @property
    def lengths(self) -> np.ndarray:
        """``(N,)`` int64 length of each trajectory."""
        return np.array([t.length for t in self.trajectories], dtype=np.int64)


@dataclass
class DatasetSummary:
    """What the sweep's preflight keeps of a dataset it does not ship to trials: `TrajectoryDataset`'s
    attributes without the trajectories (continual trials read each task's data themselves, one task
    at a time, so a sweep over many large tasks never holds them all in one process).

    ``num_trajectories``, ``num_transitions``: the dataset's sizes (the other fields as in
    `TrajectoryDataset`).
    """

    obs_shape: tuple[int, ...]
    act_dim: int
    discrete_actions: bool
    ref_min_score: float | None
    ref_max_score: float | None
    env_id: str | None
    source: str
    env_kwargs: dict[str, Any]
    max_episode_steps: int | None
    num_trajectories: int
    num_transitions: int

    @classmethod
    def of(cls, ds: TrajectoryDataset) -> "DatasetSummary":
        return cls(tuple(ds.obs_shape), ds.act_dim, ds.discrete_actions, ds.ref_min_score, ds.ref_max_score,
                   ds.env_id, ds.source, dict(ds.env_kwargs), ds.max_episode_steps, len(ds.trajectories),
                   ds.num_transitions)


def subsample(ds: TrajectoryDataset, sample_ratio: float, seed: int,
              weighting: str = "uniform") -> TrajectoryDataset:
    """Keep ``int(N * sample_ratio)`` whole trajectories chosen at random, in source order.

    Follows LaMo's down-sampling by trajectory (docs/references/lamo.md "Data"): ``weighting`` "uniform" draws
    every trajectory with the same probability (LaMo's D4RL ``ratio_dataset``); "length_weighted"
    with probability proportional to its length, without replacement (LaMo's Atari
    ``AtariBuffer.ratio_dataset``). Ours is seeded (LaMo's D4RL sampling is not): the same ``seed``
    keeps the same trajectories. ``sample_ratio == 1`` keeps all.

    Raises:
        DatasetError: ``sample_ratio`` outside (0, 1], or it keeps no trajectory; names the
            ratio, N and the source.
        ValueError: unknown ``weighting``.
    """
    n = len(ds.trajectories)
    if not 0.0 < sample_ratio <= 1.0:
        raise DatasetError(f"{ds.source}: sample_ratio must be in (0, 1], got {sample_ratio}")
    if weighting not in ("uniform", "length_weighted"):
        raise ValueError(f"subsample weighting must be 'uniform' or 'length_weighted', got {weighting!r}")
    keep = int(n * sample_ratio)
    if keep == 0:
        raise DatasetError(f"{ds.source}: sample_ratio {sample_ratio} keeps int({n} * {sample_ratio}) = 0 "
                           f"of its {n} trajectories; use a ratio of at least {1.0 / n:.3g}")
    if keep == n:
        return ds
    p = None if weighting == "uniform" else ds.lengths / ds.lengths.sum()
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False, p=p))
    return dataclasses.replace(ds, trajectories=[ds.trajectories[i] for i in chosen])


def state_stats(ds: TrajectoryDataset) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the observations over all transitions of ``ds``.

    Returns ``(mean, std)``, each ``obs_shape`` float32, std plus 1e-6 as in LaMo/DT
    (docs/references/lamo.md "Data": statistics of the down-sampled training data). Images (uint8
    observations with at least 2 axes) are not normalised (the CNN encoder divides by 255): they
    get mean 0 and std 1 without touching the frames, so no float copy of the dataset is made.
    """
    first = ds.trajectories[0].observations
    if first.dtype == np.uint8 and first.ndim >= 3:
        return np.zeros(ds.obs_shape, dtype=np.float32), np.ones(ds.obs_shape, dtype=np.float32)
    states = np.concatenate([t.observations for t in ds.trajectories], axis=0).astype(np.float64)
    return states.mean(axis=0).astype(np.float32), (states.std(axis=0) + 1e-6).astype(np.float32)


def returns_to_go(rewards: np.ndarray, include_current: bool = True) -> np.ndarray:
    """Undiscounted return-to-go: ``rtg[t] = sum(rewards[t:])`` (DT's ``discount_cumsum`` with
    gamma 1, LaMo's D4RL code), or ``sum(rewards[t+1:])`` without the current reward
    (``include_current=False``: LaMo's Atari ``AtariBuffer``).

    ``rewards`` ``(T,)`` -> ``(T,)`` float32 (summed in float64).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    rtg = np.cumsum(rewards[::-1])[::-1]
    return (rtg if include_current else rtg - rewards).astype(np.float32)
