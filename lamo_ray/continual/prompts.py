"""L2P's prompt pool: `lamo_ray.pools.prompts` (a model part, so it lives in the models layer; issue 29),
re-exported here where older code, tests and pickled references import it from."""

from lamo_ray.pools.prompts import KeyedPool, PromptPool, prompted_trunk

__all__ = ["KeyedPool", "PromptPool", "prompted_trunk"]
