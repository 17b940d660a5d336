"""Offline RL data: load trajectories (D4RL HDF5 or Minari), down-sample, cut DT segments.

Data flows: `load_dataset` -> `subsample` -> `state_stats` -> `SegmentSampler.sample`.
"""

from lamo_ray.data.loading import dataset_info, load_dataset
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import (
    DatasetError,
    DatasetNotDownloadedError,
    Trajectory,
    TrajectoryDataset,
    returns_to_go,
    state_stats,
    subsample,
)

__all__ = [
    "DatasetError",
    "DatasetNotDownloadedError",
    "SegmentSampler",
    "Trajectory",
    "TrajectoryDataset",
    "dataset_info",
    "load_dataset",
    "returns_to_go",
    "state_stats",
    "subsample",
]
