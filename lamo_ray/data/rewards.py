"""Reward transforms a trial learns from: a per-step shift, then delayed (block-summed) rewards.

Both come from "RL gradients as vitamin for online fine-tuning DTs" (docs/references/odt_td3.md "Rewards"): AntMaze
trains on ``reward - 1`` per step (so a return-to-go counts the steps left to the goal, eval RTG
-100), and ``--delayed_reward M`` hides each reward until the end of its block of M steps
(``data.py`` ``delay_reward`` for the data, ``delayedreward.py`` ``CumulativeRewardWrapper`` for the
env). The same `RewardTransform` applies to the offline trajectories (`RewardTransform.dataset`) and
to every env step of a rollout (`RewardTransform.stream`), so the data, the return-to-go a rollout
conditions on, the online replay and the critic all see one reward. Scores stay the env's own: a
rollout's ``return`` (and so the normalized score) is the sum of untransformed rewards.

Order: shift each step, then sum over blocks. The authors' code shifts before delaying in the data
and after delaying in the env (``TransformReward`` wraps ``CumulativeRewardWrapper``); the two orders
only differ when both are used, which none of the paper's commands does (docs/differences.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lamo_ray.data.trajectories import TrajectoryDataset


@dataclass(frozen=True)
class RewardTransform:
    """``r' = r + shift`` per step; with ``delay`` M >= 2, each block of M steps (and the episode's last,
    partial block) reports the sum of its shifted rewards at its last step and 0 elsewhere.

    Raises:
        ValueError: ``delay`` 1 or negative (the authors' code forbids M = 1: it would change nothing).
    """

    shift: float = 0.0
    delay: int = 0

    def __post_init__(self):
        if self.delay < 0 or self.delay == 1:
            raise ValueError(f"data.delayed_reward must be 0 (off) or >= 2, got {self.delay}")

    @classmethod
    def of(cls, data) -> "RewardTransform":
        """The transform a `lamo_ray.config.DataConfig` asks for (``reward_shift``, ``delayed_reward``)."""
        return cls(shift=float(data.reward_shift), delay=int(data.delayed_reward))

    @property
    def identity(self) -> bool:
        """True when rewards pass through unchanged."""
        return self.shift == 0.0 and self.delay == 0

    def trajectory(self, rewards: np.ndarray) -> np.ndarray:
        """``(T,)`` float32 rewards of one whole trajectory, transformed."""
        out = np.asarray(rewards, dtype=np.float32) + np.float32(self.shift)
        if self.delay >= 2 and len(out):
            ends = np.minimum(np.arange(self.delay - 1, len(out) + self.delay - 1, self.delay), len(out) - 1)
            sums = np.add.reduceat(out.astype(np.float64), np.arange(0, len(out), self.delay))
            out = np.zeros_like(out)
            out[ends] = sums.astype(np.float32)
        return out

    def dataset(self, ds: TrajectoryDataset) -> TrajectoryDataset:
        """A copy of ``ds`` whose trajectories carry transformed rewards (``ds`` itself is unchanged)."""
        if self.identity:
            return ds
        return dataclasses.replace(ds, trajectories=[dataclasses.replace(t, rewards=self.trajectory(t.rewards))
                                                     for t in ds.trajectories])

    def stream(self) -> "RewardStream":
        """Per-episode state for transforming rewards one env step at a time."""
        return RewardStream(self)


class RewardStream:
    """One episode's rewards through a `RewardTransform`, step by step (the env side:
    ``CumulativeRewardWrapper``). ``step(r, done)`` returns the transformed reward of this step; the
    rewards of a whole episode equal `RewardTransform.trajectory` of its raw rewards."""

    def __init__(self, transform: RewardTransform):
        self.transform = transform
        self.t = 0
        self.pending = 0.0

    def step(self, reward: float, done: bool) -> float:
        r = float(np.float32(reward) + np.float32(self.transform.shift))
        self.t += 1
        if self.transform.delay < 2:
            return r
        self.pending += r
        if self.t % self.transform.delay == 0 or done:
            out, self.pending = self.pending, 0.0
            return float(np.float32(out))
        return 0.0
