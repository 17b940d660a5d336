"""Decision Transformer training batches: random K-step segments of whole trajectories.

Trajectories are drawn with probability proportional to their length; then, as ``segments`` says
(docs/references/lamo.md "Data"):

- "left_padded": DT's ``get_batch`` (decision-transformer ``gym/experiment.py``, kept by LaMo's
  D4RL code): a start uniform over [0, T-1], up to K steps from there, left-padded to K;
- "full_window": LaMo's Atari ``AtariBuffer.sample``: a start uniform over [0, T-K) (0 when T <= K),
  so a segment has K real steps unless the whole trajectory is shorter (then right-padded).

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
        segments: "left_padded" or "full_window" (module docstring).
        rtg_includes_current_reward: return-to-go from step t on (DT, LaMo D4RL) or after it
            (LaMo Atari); `returns_to_go`.

    Raises:
        ValueError: empty dataset, K < 1, rtg_scale <= 0, max_ep_len < 1 or an unknown ``segments``.
    """

    def __init__(self, ds: TrajectoryDataset, context_length: int, rtg_scale: float, max_ep_len: int,
                 state_mean: np.ndarray, state_std: np.ndarray, seed: int, segments: str = "left_padded",
                 rtg_includes_current_reward: bool = True) -> None:
        if not ds.trajectories:
            raise ValueError(f"{ds.source}: no trajectories to sample from")
        if context_length < 1 or rtg_scale <= 0 or max_ep_len < 1:
            raise ValueError(f"need context_length >= 1, rtg_scale > 0, max_ep_len >= 1; got "
                             f"{context_length}, {rtg_scale}, {max_ep_len}")
        if segments not in ("left_padded", "full_window"):
            raise ValueError(f"segments must be 'left_padded' or 'full_window', got {segments!r}")
        self.context_length = context_length
        self.segments = segments
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
        self._rewards = np.concatenate([t.rewards for t in trajectories]).astype(np.float32)
        ends = self._starts + self._lengths - 1                             # last step of each trajectory
        self._last = np.zeros(len(self._rewards), dtype=bool)
        self._last[ends] = True
        self._done = np.zeros(len(self._rewards), dtype=bool)
        self._done[ends[[t.terminated for t in trajectories]]] = True
        self._rtg = np.concatenate([returns_to_go(t.rewards, rtg_includes_current_reward)
                                    for t in trajectories]) / np.float32(rtg_scale)
        self._timesteps = np.minimum(np.concatenate([np.arange(n) for n in self._lengths]), max_ep_len - 1)
        self._action_pad = 0 if self.discrete_actions else CONTINUOUS_ACTION_PAD

    def _gather_images(self, traj: np.ndarray, start: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, K, *obs_shape) uint8: row b holds steps start[b] .. of trajectory traj[b] at its real
        positions ``mask[b]`` (contiguous), zeros on the padding."""
        first = self._observations[0]
        out = np.zeros(mask.shape + first.shape[1:], dtype=np.uint8)
        for b, (i, s, real) in enumerate(zip(traj, start, mask)):
            out[b, real] = self._observations[i][s:s + int(real.sum())]
        return out

    def reseed(self, seed) -> None:
        """Restart the random stream (``seed``: anything `numpy.random.default_rng` takes), e.g. on
        restore from a checkpoint so a resumed run does not replay the batches of step 0."""
        self._rng = np.random.default_rng(seed)

    def sample(self, batch_size: int, transitions: bool = False) -> dict[str, np.ndarray]:
        """One batch of B = ``batch_size`` segments of K steps (padded as ``segments`` says).

        ``transitions`` (vector states only; the TD3 critic of `lamo_ray.online`) adds, per position:
        ``rewards`` (B, K) float32 (raw, pad 0); ``dones`` (B, K) float32, 1 at the final step of a
        terminated trajectory; ``critic_mask`` (B, K) float32, 1 on real steps that have a successor or
        are done; and ``next_states`` / ``next_actions`` / ``next_returns_to_go`` / ``next_timesteps``:
        the window shifted by one step (each position's successor; a final step repeats itself, its
        output unused), with the same ``attention_mask``.

        Returns:
            states: ``(B, K, *obs_shape)`` float32 normalised (uint8 raw for images), pad 0.
            actions: ``(B, K, A)`` float32, pad -10; or ``(B, K)`` int64, pad 0 (discrete).
            returns_to_go: ``(B, K, 1)`` float32, undiscounted rtg / rtg_scale, pad 0.
            timesteps: ``(B, K)`` int64 step within the episode, clipped to max_ep_len - 1, pad 0.
            attention_mask: ``(B, K)`` float32, 1 on real steps (contiguous: a suffix of each row when
                left-padded, a prefix when right-padded), 0 on pads.
        """
        k = self.context_length
        traj = self._rng.choice(len(self._lengths), size=batch_size, p=self._probs)   # (B,)
        lengths = self._lengths[traj]
        if self.segments == "left_padded":
            start = self._rng.integers(0, lengths)                                    # uniform in [0, T-1]
        else:
            start = self._rng.integers(0, np.maximum(lengths - k, 1))                 # uniform in [0, T-K)
        valid = np.minimum(k, lengths - start)                                        # (B,) real steps
        if self.segments == "left_padded":
            offset = np.arange(k)[None, :] - (k - valid)[:, None]                     # (B, K), < 0 on pads
            mask = offset >= 0
        else:
            offset = np.broadcast_to(np.arange(k), (batch_size, k))                   # (B, K), >= valid on pads
            mask = offset < valid[:, None]
        index = self._starts[traj, None] + start[:, None] + np.clip(offset, 0, (valid - 1)[:, None])  # (B, K)

        def gather(array: np.ndarray, pad: float) -> np.ndarray:
            out = array[index]
            out[~mask] = pad
            return out

        batch = {
            "states": self._gather_images(traj, start, mask) if self.images else gather(self._states, 0),
            "actions": gather(self._actions, self._action_pad),
            "returns_to_go": gather(self._rtg, 0)[..., None],
            "timesteps": gather(self._timesteps, 0).astype(np.int64),
            "attention_mask": mask.astype(np.float32),
        }
        if transitions:
            if self.images:
                raise ValueError("transitions (the TD3 critic) need vector states, not images")
            done = self._done[index] & mask
            has_next = ~self._last[index] & mask
            batch.update(rewards=gather(self._rewards, 0), dones=done.astype(np.float32),
                         critic_mask=(has_next | done).astype(np.float32))
            index = np.where(has_next, index + 1, index)  # each position's successor (`gather` reads it)
            batch.update(next_states=gather(self._states, 0), next_actions=gather(self._actions, self._action_pad),
                         next_returns_to_go=gather(self._rtg, 0)[..., None],
                         next_timesteps=gather(self._timesteps, 0).astype(np.int64))
        return batch
