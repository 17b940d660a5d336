"""L2M's modulation pool: `lamo_ray.pools.modulation` (a model part, so it lives in the models layer;
issue 29), re-exported here where older code, tests and pickled references import it from."""

from lamo_ray.pools.modulation import (KeyedPool, ModulationPool, PoolModulatedLinear, attach_pool, l2m_init_bound,
                                       oracle_groups)

__all__ = ["KeyedPool", "ModulationPool", "PoolModulatedLinear", "attach_pool", "l2m_init_bound", "oracle_groups"]
