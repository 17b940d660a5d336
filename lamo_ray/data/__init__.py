"""Offline RL data: load trajectories (D4RL HDF5, Minari, or a domain's own format), down-sample,
cut DT segments.

Data flows: `lamo_ray.data.loading.load_dataset` -> `lamo_ray.data.trajectories.subsample` ->
`lamo_ray.data.trajectories.state_stats` -> `lamo_ray.data.sampling.SegmentSampler.sample`.
`lamo_ray.data.frames` holds stacked image frames once. Import from the submodules: this package
imports none of them, so a domain's collector can use `frames` or `trajectories` without loading
the readers (which ask the domain registry).
"""
