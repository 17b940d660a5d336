"""Stacked image observations kept compact: each frame stored once.

An Atari observation is the last 4 frames, (4, 84, 84) uint8, so consecutive observations share 3
of their 4 frames. In memory we keep an episode's frame sequence once and present the stacked
observations as a read-only strided view over it (`stacked_view`): ``(T, 4, 84, 84)`` that costs
``(T + 3) x 84 x 84`` bytes instead of 4x that, and no float arrays ever (the model converts a
batch at a time).
"""

from __future__ import annotations

import numpy as np


def frames_from_stacks(stacks: np.ndarray) -> np.ndarray | None:
    """The frame sequence behind consecutive stacked observations, or None if they are not.

    ``stacks`` ``(T, S, H, W)`` with ``stacks[t + 1][:-1] == stacks[t][1:]`` (what gymnasium's
    ``FrameStackObservation`` produces within an episode) -> ``frames`` ``(T + S - 1, H, W)``, a new
    contiguous array with ``stacks[t] == frames[t:t + S]``. Returns None when some pair of
    consecutive observations does not overlap that way (then they must be kept as they are).
    """
    if stacks.ndim != 4 or len(stacks) == 0:
        return None
    if len(stacks) > 1 and not np.array_equal(stacks[1:, :-1], stacks[:-1, 1:]):
        return None
    return np.concatenate([stacks[0], stacks[1:, -1]], axis=0)


def stacked_view(frames: np.ndarray, stack: int) -> np.ndarray:
    """``frames`` ``(N, H, W)`` -> read-only view ``(N - stack + 1, stack, H, W)`` with
    ``view[t] == frames[t:t + stack]`` (no copy)."""
    windows = np.lib.stride_tricks.sliding_window_view(frames, stack, axis=0)  # (N - S + 1, H, W, S)
    return np.moveaxis(windows, -1, 1)


def compact_stacks(stacks: np.ndarray) -> np.ndarray:
    """``stacks`` ``(T, S, H, W)`` as a `stacked_view` over its frames when they overlap
    (`frames_from_stacks`), else unchanged. Equal to ``stacks`` element for element either way."""
    frames = frames_from_stacks(stacks)
    return stacks if frames is None else stacked_view(frames, stacks.shape[1])

