"""The test command (README command 2) runs in two parts: ``pytest -q -n 2`` (pytest-xdist, each test file
on one worker: ``--dist loadfile`` in pyproject.toml, so a module's shared sweep runs once) and then
``pytest -q -m serial``. Under xdist the tests marked ``serial`` are deselected here: they need the machine
to themselves (a ``ray start`` cluster on Ray's default ports, which another worker's local Ray could hold,
and /tmp/ray/ray_current_cluster, which a bare ``ray.init()`` would join), and the slow tests go first.
Plain ``pytest -q`` runs everything, one test after another, in file order."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    if not (getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput")):
        return   # not under xdist (an xdist worker collects with `workerinput` set)
    serial = [item for item in items if item.get_closest_marker("serial") is not None]
    if serial:
        config.hook.pytest_deselected(items=serial)
        items[:] = [item for item in items if item.get_closest_marker("serial") is None]
    # the files of `slow` tests (minutes each) first, the quick ones after them: the workers then end
    # together instead of one finishing a long e2e file alone (the files' own order is kept)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
