"""A deliberately broken TD3 critic update, for tests/test_rehearse_e2e.py only: on this directory's
``PYTHONPATH`` and with ``LAMO_RAY_TEST_BREAK_CRITIC=1``, every Python process (the sweep driver, Ray's
trial processes) gets `lamo_ray.online.learner.TD3Learner.critic_update` replaced, when that module is
first imported, by one that raises. Nothing else changes."""

import importlib.abc
import importlib.util
import os
import sys

TARGET = "lamo_ray.online.learner"


class _BreakCritic(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)

            def broken(self, *args, **kwargs):
                raise RuntimeError("deliberately broken critic update (tests/rehearsal_fault)")

            module.TD3Learner.critic_update = broken

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("LAMO_RAY_TEST_BREAK_CRITIC") == "1":
    sys.meta_path.insert(0, _BreakCritic())
