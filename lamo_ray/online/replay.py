"""ODT's trajectory replay buffer (Online DT ``replay_buffer.py``, kept by the ODT-TD3 code;
docs/references/odt_td3.md "Online loop").

- Seeded with the offline trajectories ordered from lowest to highest return (the authors'
  ``_load_dataset`` sorts them so, ``main.py`` lines 290-304, whether or not they fit); when they
  exceed ``capacity``, the ``capacity`` with the highest returns (``replay_buffer.py`` lines 14-21).
- New trajectories fill the buffer to ``capacity``; once full they overwrite slots from index 0 on,
  in a ring: the lowest-return offline trajectories go first, then the oldest.
- Hindsight return-to-go: the learner's segments compute return-to-go from the rewards a trajectory
  actually collected (`lamo_ray.data.sampling`), not from the target return it was collected with.
  Online trajectories are stored as terminated even when they timed out (the authors'
  ``terminals[-1] = 1``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset


class TrajectoryReplay:
    """Whole trajectories, at most ``capacity`` (ODT's ``replay_size``).

    Args:
        capacity: trajectories kept (>= 1).
        offline: the offline trajectories to seed it with (see the module docstring).

    Raises:
        ValueError: ``capacity`` < 1.
    """

    def __init__(self, capacity: int, offline: list[Trajectory] = ()):
        if capacity < 1:
            raise ValueError(f"online.replay_size must be >= 1, got {capacity}")
        self.capacity = capacity
        offline = list(offline)
        order = np.argsort([t.ret for t in offline], kind="stable")  # lowest to highest, fitting or not
        offline = [offline[i] for i in order[-capacity:]]
        self.trajectories: list[Trajectory] = offline
        self.start = 0  # next slot to overwrite once full
        self.added = 0  # online trajectories added so far
        self.added_transitions = 0

    def __len__(self) -> int:
        return len(self.trajectories)

    def add(self, new: list[Trajectory]) -> None:
        """Add online trajectories (each stored as terminated, as the authors' code does)."""
        new = [replace(t, terminated=True) for t in new]
        self.added += len(new)
        self.added_transitions += sum(t.length for t in new)
        if len(self.trajectories) < self.capacity:
            self.trajectories = (self.trajectories + new)[-self.capacity:]
            return
        for t in new[-self.capacity:]:  # more than a whole buffer at once: the newest win
            self.trajectories[self.start] = t
            self.start = (self.start + 1) % self.capacity

    def dataset(self, like: TrajectoryDataset) -> TrajectoryDataset:
        """The buffer's trajectories as a dataset with ``like``'s metadata (obs shape, refs, env), for
        `lamo_ray.data.sampling.SegmentSampler`."""
        return replace(like, trajectories=list(self.trajectories))

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue exactly (for checkpoints)."""
        return {"capacity": self.capacity, "start": self.start, "added": self.added,
                "added_transitions": self.added_transitions,
                "trajectories": [{"observations": t.observations, "actions": t.actions, "rewards": t.rewards,
                                  "terminated": t.terminated} for t in self.trajectories]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.start = int(state["capacity"]), int(state["start"])
        self.added, self.added_transitions = int(state["added"]), int(state["added_transitions"])
        self.trajectories = [Trajectory(np.asarray(t["observations"]), np.asarray(t["actions"]),
                                        np.asarray(t["rewards"]), bool(t["terminated"])) for t in state["trajectories"]]
