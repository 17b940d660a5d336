"""What a domain is, and the registry that looks domains up.

A *domain* is one benchmark family (Reacher, FrankaKitchen, MuJoCo locomotion, Atari, ...): the
Gymnasium envs it evaluates on and how they are built, how its observations become the flat (or
image) state the model sees, its reference scores, the dataset ids it serves and how to get them,
and the collector that makes its data here. Each domain module (`lamo_ray.domains.kitchen`, ...)
subclasses `Domain` once and `register`s the instance; the rest of the package asks the registry
(`for_env`, `for_dataset`, `get`) and never names a domain, as Gymnasium's registry and Minari's
dataset ids do for envs and datasets.

A new domain is one module: a `Domain` subclass that overrides what differs from a plain
Gymnasium env with vector observations, registered, and imported by `lamo_ray.domains`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)


#: what each env package wrote to stderr while this process imported it through `import_env_package`
#: ("" if nothing), e.g. gymnasium_robotics 1.4.2's notice that the AdroitHand*Dense-v1 rewards changed
_PACKAGE_NOTICES: dict[str, str] = {}
#: (package, domain name, level) already logged in this process: each notice is logged once, not per env made
_NOTICES_LOGGED: set[tuple[str, str, int]] = set()
_IMPORT_LOCK = threading.RLock()


def import_env_package(package: str, notice_applies: bool = False, domain: str = "") -> ModuleType:
    """Import an env package, keeping what it prints to stderr at import from reaching the console
    unless it concerns the domain that asks.

    Some env packages print a notice at import (gymnasium_robotics 1.4.2 prints Farama's note that the
    AdroitHand*Dense-v1 reward functions changed, on every import, whichever of its envs is used):
    every Kitchen, PointMaze or AntMaze run showed a warning about Adroit. So the first import in
    the process runs with stderr captured (`contextlib.redirect_stderr`: what the package, or another
    thread, writes to ``sys.stderr`` meanwhile) and the text is kept per package. Python warnings
    raised during the import are not part of it: they are shown afterwards as Python shows them.
    Each call then logs it through this module's logger, prefixed with the package name, once per
    process: at WARNING when ``notice_applies`` (the asking domain's
    `Domain.package_notice_applies`: the notice is about its envs), else at DEBUG (once per domain).

    A package some other code imported first is returned as it is: what it printed is already out.
    If the import fails, what it wrote to stderr is written out (it may say why) and the error raised.

    Args:
        package: the module to import (a domain's `Domain.env_package`).
        notice_applies: whether the package's import-time notice concerns the asking domain.
        domain: the asking domain's name, for the DEBUG line.

    Raises:
        ImportError (or whatever the import raises): the package cannot be imported.
    """
    with _IMPORT_LOCK:  # one first import at a time: stderr is the process's, the notice recorded once
        if package not in _PACKAGE_NOTICES:
            if package in sys.modules:
                _PACKAGE_NOTICES[package] = ""
            else:
                captured = io.StringIO()
                try:
                    with contextlib.redirect_stderr(captured), warnings.catch_warnings(record=True) as raised:
                        importlib.import_module(package)
                except BaseException:
                    sys.stderr.write(captured.getvalue())
                    raise
                finally:
                    for w in raised:  # warnings are not the notice: shown as Python shows them (filters applied)
                        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
                _PACKAGE_NOTICES[package] = captured.getvalue().strip()
    module = importlib.import_module(package)
    notice = _PACKAGE_NOTICES[package]
    if notice:
        level = logging.WARNING if notice_applies else logging.DEBUG
        # a WARNING once per package (whichever domain it concerns); a DEBUG line once per domain
        key = (package, "" if notice_applies else domain, level)
        if key not in _NOTICES_LOGGED:
            _NOTICES_LOGGED.add(key)
            if notice_applies:
                log.warning("%s: %s", package, notice)
            else:
                log.debug("%s printed at import (not about the %s domain's envs, so not shown): %s", package,
                          domain or "generic", notice)
    return module


@dataclass(frozen=True)
class EvaluationDefaults:
    """A domain's evaluation settings as LaMo ran them (docs/references/lamo.md "Evaluation"): the target
    returns per env id, the return-to-go scale, the timestep-table size and the episode cap."""

    target_returns: Mapping[str, Sequence[float]]
    rtg_scale: float
    max_ep_len: int
    max_episode_steps: int | None = None


def concat_sorted_keys(obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
    """The default dict-observation rule: concatenate the values in sorted key order, recursing into
    sub-dicts. Each leaf ``(*batch, *leaf_shape)`` is flattened to ``(*batch, prod(leaf_shape))``;
    the result is ``(*batch, sum of leaf sizes)`` float32. ``batch_dims`` leading axes are kept (1
    for a whole episode of observations)."""
    parts = []
    for key in sorted(obs):
        value = obs[key]
        if isinstance(value, Mapping):
            parts.append(concat_sorted_keys(value, batch_dims))
        else:
            value = np.asarray(value, dtype=np.float32)
            parts.append(value.reshape(value.shape[:batch_dims] + (-1,)))
    return np.concatenate(parts, axis=-1)


def concat_keys(obs: Mapping[str, Any], keys: Sequence[str], env: str) -> np.ndarray:
    """A domain's dict-observation rule by name: the values of ``keys``, in that order, concatenated
    on the last axis as float32 (``(..., sum of their sizes)``; leading axes kept).

    Raises:
        ValueError: a key is missing (the message names ``env`` and the keys present).
    """
    try:
        return np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in keys], axis=-1)
    except KeyError as err:
        raise ValueError(f"{env} observation without {err}; keys: {sorted(obs)}") from None


class Domain:
    """A benchmark family. The base class is a plain Gymnasium env with vector (or dict, flattened
    by `concat_sorted_keys`) observations and no reference scores; domain modules override what
    differs.

    Class attributes:
        name: the domain's name (``python -m lamo_ray.collect <name>``, dataset ids ``lamo/<name>/...``).
        env_ids: Gymnasium ids this domain evaluates on (`serves_env` matches them exactly).
        env_package: module whose import registers the env ids (``gym.register_envs``), or None.
        package_notice_applies: whether the notice `env_package` prints at import concerns this
            domain's envs, so it is shown (`import_env_package`: a WARNING once per process);
            False: it is only logged at DEBUG.
        dataset_prefixes: dataset id prefixes (lower case) this domain serves, e.g. ``"d4rl/kitchen/"``.
        local_prefix: the prefix of the dataset ids the project generates here on first use
            (``ensure_dataset``), e.g. ``"lamo/kitchen/"``; "" if none.
        ref_scores_by_name: ``{name: (ref_min_score, ref_max_score)}``; a name occurring in an env
            id, dataset id or file name selects its references (`ref_scores`).
        evaluation: LaMo's evaluation settings for it, or None.
    """

    name: str = ""
    env_ids: tuple[str, ...] = ()
    env_package: str | None = None
    package_notice_applies: bool = False
    dataset_prefixes: tuple[str, ...] = ()
    local_prefix: str = ""
    ref_scores_by_name: Mapping[str, tuple[float, float]] = {}
    evaluation: EvaluationDefaults | None = None

    # ------------------------------------------------------------------ envs

    def serves_env(self, env_id: str) -> bool:
        """Whether ``env_id`` is one of this domain's envs."""
        return env_id in self.env_ids

    def import_env_package(self) -> ModuleType:
        """`env_package` imported through `import_env_package`: its import-time notice is shown only
        if it concerns this domain (`package_notice_applies`). Use it for any import of the package
        or of a submodule (that imports the package first), e.g. before
        ``from gymnasium_robotics.envs.maze import maps``.

        Raises:
            ImportError: the package is not installed.
        """
        return import_env_package(self.env_package, self.package_notice_applies, self.name)

    def register_envs(self) -> str | None:
        """Import `env_package` (`import_env_package`) so its ids are registered. Returns its name if it
        is not installed."""
        if self.env_package is None:
            return None
        try:
            module = self.import_env_package()
        except ImportError:
            return self.env_package
        gym.register_envs(module)
        return None

    def make_env(self, env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
        """``gym.make(env_id, max_episode_steps=..., **kwargs)`` after `register_envs`.

        Raises:
            gym.error.UnregisteredEnv (or gym's other errors): unknown id or bad kwargs.
        """
        self.register_envs()
        return gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)

    def evaluation_env_kwargs(self, env_id: str, data_env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Kwargs to evaluate on ``env_id`` given those the training data were recorded with: unchanged."""
        return dict(data_env_kwargs or {})

    def flatten_dict_observation(self, obs: Mapping[str, Any], batch_dims: int = 0) -> np.ndarray:
        """The state of a dict observation (`concat_sorted_keys`). Raises ValueError if it cannot be mapped."""
        return concat_sorted_keys(obs, batch_dims)

    # ------------------------------------------------------------------ scores

    def ref_scores(self, name: str) -> tuple[float, float] | None:
        """``(ref_min_score, ref_max_score)`` for the longest key of `ref_scores_by_name` in
        ``name.lower()`` (an env id, dataset id or file name), else None."""
        lowered = name.lower()
        for key in sorted(self.ref_scores_by_name, key=len, reverse=True):
            if key in lowered:
                return self.ref_scores_by_name[key]
        return None

    # ------------------------------------------------------------------ datasets

    def serves_dataset(self, source: str) -> bool:
        """Whether dataset ``source`` (an id or path) belongs to this domain: it starts with one of
        `dataset_prefixes` or `local_prefix`."""
        lowered = source.lower()
        return any(lowered.startswith(p) for p in (*self.dataset_prefixes, self.local_prefix) if p)

    def generates(self, source: str) -> bool:
        """Whether ``source`` is an id this project makes here on first use (`ensure_dataset`)."""
        return bool(self.local_prefix) and source.startswith(self.local_prefix)

    def local_name(self, dataset_id: str, known: Sequence[str]) -> str:
        """The ``<name>`` of a ``<local_prefix><name>-vN`` id, one of ``known``.

        Raises:
            ValueError: another name (the message lists ``known``).
        """
        name = dataset_id.split("/")[-1].split("-v")[0]
        if name not in known:
            raise ValueError(f"{dataset_id}: not one of the {self.name} domain's dataset ids; use "
                             f"{self.local_prefix}<{'|'.join(known)}>-vN")
        return name

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """Generate ``dataset_id`` (one of `generates`) in the Minari store unless it is there.
        Call it once, from the sweep driver, before trials start.

        Raises:
            ValueError: this domain generates no such id.
        """
        raise ValueError(f"{dataset_id}: the {self.name or 'generic'} domain generates no datasets")

    def load_dataset(self, source: str):
        """A `lamo_ray.data.trajectories.TrajectoryDataset` for a source in a format of this
        domain's own (e.g. DQN-replay checkpoints), or None to let the generic readers (D4RL HDF5,
        Minari) load it."""
        return None

    def prepare_dataset(self, dataset):
        """The loaded `lamo_ray.data.trajectories.TrajectoryDataset` as this domain's trials learn from it
        (any reader's output; e.g. PointMaze relabels Minari's D4RL data to its evaluation goal).
        Default: unchanged."""
        return dataset

    def own_format(self, source: str) -> bool:
        """Whether `load_dataset` reads ``source`` in a format of this domain's own (not a Minari id
        nor a D4RL HDF5 file), so the sweep never tries to download it from Minari's remote."""
        return False

    def download_url(self, source: str) -> str | None:
        """The URL a missing dataset file ``source`` is downloaded from (`lamo_ray.inputs`), or None:
        e.g. D4RL's gym-MuJoCo HDF5 files. Minari ids are downloaded from Minari's remote instead."""
        return None

    def missing_dataset_hint(self, source: str) -> str | None:
        """How to get a dataset ``source`` of this domain that is not here (a download command, the
        local alternative), or None. Never a substitute: the user has to ask for the alternative."""
        return None

    # ------------------------------------------------------------------ collection CLI

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        """Add ``python -m lamo_ray.collect <name>`` with this domain's options (default: none);
        the parser's ``run`` default is the function that takes the parsed args and returns the
        exit code."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


#: the plain Gymnasium domain, for env ids no registered domain serves
GENERIC = Domain()

_REGISTRY: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    """Add ``domain`` to the registry (its name must be new) and return it.

    Raises:
        ValueError: the name is empty or already registered.
    """
    if not domain.name or domain.name in _REGISTRY:
        raise ValueError(f"domain name {domain.name!r} is empty or already registered")
    _REGISTRY[domain.name] = domain
    return domain


def registered() -> list[Domain]:
    """Every registered domain, in registration order."""
    return list(_REGISTRY.values())


def get(name: str) -> Domain:
    """The domain named ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown domain {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def for_env(env_id: str) -> Domain:
    """The domain that serves ``env_id`` (`Domain.serves_env`), else `GENERIC`."""
    return next((d for d in _REGISTRY.values() if d.serves_env(env_id)), GENERIC)


def for_dataset(source: str) -> Domain | None:
    """The domain that serves dataset ``source`` (`Domain.serves_dataset`), else None."""
    return next((d for d in _REGISTRY.values() if d.serves_dataset(source)), None)


def ref_scores(name: str) -> tuple[float, float] | None:
    """The reference scores a registered domain knows for ``name`` (an env id, dataset id or file
    name; `Domain.ref_scores`), else None. The domain that serves ``name`` as an env or dataset
    answers alone (``DMControl/hopper-stand-v0`` must not get D4RL's Hopper references through the
    name it contains); other names go to every domain in registration order."""
    owner = for_env(name)
    owner = owner if owner is not GENERIC else for_dataset(name)
    if owner is not None:
        return owner.ref_scores(name)
    return next((r for d in _REGISTRY.values() if (r := d.ref_scores(name)) is not None), None)
