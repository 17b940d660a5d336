"""Decision Transformer training batches: random K-step segments of whole trajectories.

Follows DT's ``get_batch`` (decision-transformer ``gym/experiment.py``, kept by LaMo; REFERENCE.md
"Data"): trajectories drawn with probability proportional to their length, a start drawn
uniformly within the chosen trajectory, up to K steps from there, left-padded to K.
Ours: vectorised with index arithmetic on arrays concatenated once, and seeded. Image
observations (uint8, e.g. Atari's stacked frames) are never concatenated nor converted: each
batch copies its own segments as uint8 and the model turns them into floats.
"""

from __future__ import annotations

import numpy as np

from lamo_ray.data.trajectories import TrajectoryDataset, returns_to_go

# DT pads missing actions with -10 (outside the [-1, 1] action range) so they are recognisable.
CONTINUOUS_ACTION_PAD = -10.0


class SegmentSampler:
    """Samples batches of K-step segments from a `TrajectoryDataset`.

    Args:
        ds: the (already down-sampled) training trajectories.
        context_length: K, timesteps per segment.
        rtg_scale: returns-to-go are divided by this (MuJoCo 1000, Reacher2d 10, Kitchen 1).
        max_ep_len: timesteps are clipped to ``max_ep_len - 1`` (size of the timestep embedding).
        state_mean, state_std: ``obs_shape`` arrays from `state_stats`; states are stored as
            ``(s - mean) / std``. Ignored for image observations (uint8), which stay raw.
        seed: seeds the sampler's own generator; the same seed gives the same batches.

    Raises:
        ValueError: empty dataset, K < 1, rtg_scale <= 0 or max_ep_len < 1.
    """

    def __init__(self, ds: TrajectoryDataset, context_length: int, rtg_scale: float, max_ep_len: int,
                 state_mean: np.ndarray, state_std: np.ndarray, seed: int) -> None:
        if not ds.trajectories:
            raise ValueError(f"{ds.source}: no trajectories to sample from")
        if context_length < 1 or rtg_scale <= 0 or max_ep_len < 1:
            raise ValueError(f"need context_length >= 1, rtg_scale > 0, max_ep_len >= 1; got "
                             f"{context_length}, {rtg_scale}, {max_ep_len}")
        self.context_length = context_length
        self.discrete_actions = ds.discrete_actions
        self._rng = np.random.default_rng(seed)
        trajectories = ds.trajectories
        self._lengths = ds.lengths                                          # (N,)
        self._starts = np.concatenate([[0], np.cumsum(self._lengths)[:-1]])  # (N,) offset in arrays below
        self._probs = self._lengths / self._lengths.sum()                   # length-weighted, as DT
        self.images = trajectories[0].observations.dtype == np.uint8
        if self.images:
            # images stay per trajectory, uint8, as loaded (views over frames stored once): a batch
            # copies only its own segments (`_gather_images`); no dataset-sized copy, no floats
            self._observations = [t.observations for t in trajectories]
            self._states = None
        else:
            states = np.concatenate([t.observations for t in trajectories])  # (total, *obs_shape)
            self._states = ((states - state_mean) / state_std).astype(np.float32)
        self._actions = np.concatenate([t.actions for t in trajectories])   # (total, A) or (total,)
        self._rtg = np.concatenate([returns_to_go(t.rewards) for t in trajectories]) / np.float32(rtg_scale)
        self._timesteps = np.minimum(np.concatenate([np.arange(n) for n in self._lengths]), max_ep_len - 1)
        self._action_pad = 0 if self.discrete_actions else CONTINUOUS_ACTION_PAD

    def _gather_images(self, traj: np.ndarray, start: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(B, K, *obs_shape) uint8: segment b = steps start[b] .. start[b] + valid[b] - 1 of trajectory
        traj[b], right-aligned, zeros on the left padding."""
        k = self.context_length
        first = self._observations[0]
        out = np.zeros((len(traj), k) + first.shape[1:], dtype=np.uint8)
        for b, (i, s, n) in enumerate(zip(traj, start, valid)):
            out[b, k - n:] = self._observations[i][s:s + n]
        return out

    def reseed(self, seed) -> None:
        """Restart the random stream (``seed``: anything `numpy.random.default_rng` takes), e.g. on
        restore from a checkpoint so a resumed run does not replay the batches of step 0."""
        self._rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """One batch of B = ``batch_size`` segments, each left-padded to K steps.

        Returns:
            states: ``(B, K, *obs_shape)`` float32 normalised (uint8 raw for images), pad 0.
            actions: ``(B, K, A)`` float32, pad -10; or ``(B, K)`` int64, pad 0 (discrete).
            returns_to_go: ``(B, K, 1)`` float32, undiscounted rtg / rtg_scale, pad 0.
            timesteps: ``(B, K)`` int64 step within the episode, clipped to max_ep_len - 1, pad 0.
            attention_mask: ``(B, K)`` float32, 1 on real steps (a suffix of each row), 0 on pads.
        """
        k = self.context_length
        traj = self._rng.choice(len(self._lengths), size=batch_size, p=self._probs)   # (B,)
        lengths = self._lengths[traj]
        start = self._rng.integers(0, lengths)                                        # uniform in [0, T-1]
        valid = np.minimum(k, lengths - start)                                        # (B,) real steps
        offset = np.arange(k)[None, :] - (k - valid)[:, None]                         # (B, K), < 0 on pads
        mask = offset >= 0
        index = self._starts[traj, None] + start[:, None] + np.maximum(offset, 0)    # (B, K) into arrays

        def gather(array: np.ndarray, pad: float) -> np.ndarray:
            out = array[index]
            out[~mask] = pad
            return out

        return {
            "states": self._gather_images(traj, start, valid) if self.images else gather(self._states, 0),
            "actions": gather(self._actions, self._action_pad),
            "returns_to_go": gather(self._rtg, 0)[..., None],
            "timesteps": gather(self._timesteps, 0).astype(np.int64),
            "attention_mask": mask.astype(np.float32),
        }
