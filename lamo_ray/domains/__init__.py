"""Domains: one module per benchmark family, looked up through one registry.

Each domain module declares everything about its family once (`Domain`: env ids and how they are
built, the observation rule, reference scores, the dataset ids it serves and how to get them, its
collector, LaMo's evaluation settings) and registers it; the rest of the package asks the registry:

- `for_env` (the domain of an env id, `GENERIC` if none), `for_dataset` (of a dataset id or path),
  `get` (by name), `registered`, `ref_scores` (by any name that contains a domain's family).

Built-in domains: `reacher`, `kitchen`, `mujoco`, `atari`, `pointmaze`, `antmaze`, `adroit`, `metaworld`, `dmcontrol`. A new one is a module with a `Domain`
subclass registered at import, added to the imports below.
"""

from lamo_ray.domains.base import (GENERIC, Domain, EvaluationDefaults, concat_sorted_keys, for_dataset, for_env, get,
                                   ref_scores, register, registered)
from lamo_ray.domains import reacher, kitchen, mujoco, atari, pointmaze, antmaze, adroit, metaworld, dmcontrol  # noqa: E402,F401,I001 - each registers its domain, in this order

__all__ = ["GENERIC", "Domain", "EvaluationDefaults", "concat_sorted_keys", "for_dataset", "for_env", "get",
           "ref_scores", "register", "registered"]
