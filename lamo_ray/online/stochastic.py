"""Online DT's stochastic action head: `lamo_ray.heads.TanhGaussianHead` (a model part, so it lives in the
models layer), re-exported here where the online phase's modules and older code import it from."""

from lamo_ray.heads import ACTION_EPS, LOG_STD_BOUNDS, TanhGaussianHead

__all__ = ["ACTION_EPS", "LOG_STD_BOUNDS", "TanhGaussianHead"]
