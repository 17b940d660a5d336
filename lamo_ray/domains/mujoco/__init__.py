"""MuJoCo locomotion: D4RL's Hopper, Walker2d and HalfCheetah on Gymnasium's ``-v5`` envs.

- Envs: ``Hopper-v5``, ``Walker2d-v5``, ``HalfCheetah-v5`` (`ENV_IDS`). D4RL's -v2 files were
  recorded on mujoco-py Hopper-v3 / Walker2d-v3 / HalfCheetah-v3, whose observation and action sizes
  the v5 envs keep (Hopper 11/3, Walker2d 17/6, HalfCheetah 17/6). Walker2d-v5 also changed the
  model (both feet's friction 1.9; v2-v4: right foot 0.9), so data not recorded on Walker2d-v5 itself
  (D4RL's files) evaluate on the v2-v4 model (`DATA_MODEL_FILES`, `MujocoDomain.evaluation_env_kwargs`).
- References: D4RL's random / expert returns (`D4RL_REF_SCORES`, docs/references/lamo.md "Evaluation") for the
  D4RL files, found by the env name in the file name; Minari's ``mujoco/*`` datasets and the ones
  made here carry their own in their metadata.
- Data: D4RL HDF5 files (``~/.d4rl/datasets/hopper-medium-v2.hdf5``; `d4rl_url` says where D4RL
  serves each), Minari ``mujoco/<env>/{expert,medium,simple}-v0``, and, made here with D4RL's recipe
  (`lamo_ray.domains.mujoco.collect`), ``lamo/mujoco/<env>/{medium,medium-replay,expert,random}-v0``.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lamo_ray.domains.base import Domain, EvaluationDefaults, register
from lamo_ray.episodes import dataset_path, in_store

log = logging.getLogger(__name__)

#: the Gymnasium env each D4RL family evaluates on
ENV_IDS: dict[str, str] = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
#: docs/references/lamo.md "Evaluation": D4RL random (min) and expert (max) returns
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
}
#: LaMo's targets (docs/references/lamo.md "Evaluation")
TARGET_RETURNS: dict[str, tuple[float, ...]] = {
    "Hopper-v5": (3600, 2600, 2200, 1800), "HalfCheetah-v5": (12000, 8000, 6000, 4500),
    "Walker2d-v5": (5000, 4000, 3000, 2500)}
#: the model file of the -v2..-v4 envs D4RL's data were recorded on, where the -v5 env's default differs:
#: gymnasium's ``walker2d.xml`` (right foot friction 0.9, left 1.9) vs Walker2d-v5's ``walker2d_v5.xml``
#: (both 1.9); Hopper-v5 and HalfCheetah-v5 keep ``hopper.xml`` and ``half_cheetah.xml``
DATA_MODEL_FILES: dict[str, str] = {"walker2d": "walker2d.xml"}
#: the datasets `lamo_ray.domains.mujoco.collect.collect_mujoco` makes per env
KINDS: tuple[str, ...] = ("medium", "medium-replay", "expert", "random")
# D4RL's gym-MuJoCo v2 files (d4rl/infos.py): dataset hopper-medium-replay-v2 is served as
# hopper_medium_replay-v2.hdf5 from this folder.
D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{env}_{kind}-v2.hdf5"
_D4RL_FILE = re.compile(r"^(hopper|walker2d|halfcheetah)[-_]"
                        r"(random|medium|expert|medium[-_]replay|medium[-_]expert|full[-_]replay)-v2\.hdf5$")


def d4rl_url(file_name: str) -> str | None:
    """Download URL of a D4RL gym-MuJoCo v2 file named like the dataset (``hopper-medium-v2.hdf5``)
    or like D4RL's own download (``hopper_medium-v2.hdf5``), any case; None for other names."""
    match = _D4RL_FILE.match(file_name.lower())
    if match is None:
        return None
    return D4RL_URL.format(env=match.group(1), kind=match.group(2).replace("-", "_"))


def mujoco_env_name(env: str) -> str:
    """The family name of a MuJoCo locomotion env: ``"Hopper"``, ``"hopper"``, ``"Hopper-v5"`` ->
    ``"hopper"``. Raises ValueError naming ``env`` and the known names."""
    name = env.lower().split("-v")[0]
    if name not in ENV_IDS:
        raise ValueError(f"unknown MuJoCo env {env!r}; known: {', '.join(ENV_IDS.values())} "
                         "(or their names: Hopper, Walker2d, HalfCheetah)")
    return name


def mujoco_dataset_ids(env: str, version: int = 0, namespace: str | None = None) -> dict[str, str]:
    """``{kind: dataset id}`` for `KINDS`: ``<namespace>/<kind>-v<version>``, namespace
    default ``lamo/mujoco/<env name>`` (e.g. ``lamo/mujoco/hopper/medium-replay-v0``)."""
    namespace = namespace or f"lamo/mujoco/{mujoco_env_name(env)}"
    return {kind: f"{namespace}/{kind}-v{version}" for kind in KINDS}


def _minari_env_name(source: str) -> str | None:
    """The env family of a Minari MuJoCo locomotion id such as ``mujoco/hopper/medium-v0``, else None."""
    parts = source.lower().split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "mujoco" and parts[1] in ENV_IDS else None


def _local_alternative(family: str) -> str:
    return (f"the local alternative is SAC data made here with D4RL's recipe (its own ref scores): "
            f"lamo/mujoco/{family}/{{medium,medium-replay,expert,random}}-v0, made by "
            f"`python -m lamo_ray.collect mujoco --env {family}`; use it by setting data.source")


class MujocoDomain(Domain):
    """Hopper, Walker2d and HalfCheetah (module docstring)."""

    name = "mujoco"
    env_ids = tuple(ENV_IDS.values())
    dataset_prefixes = ("mujoco/",)
    local_prefix = "lamo/mujoco/"
    ref_scores_by_name = D4RL_REF_SCORES
    evaluation = EvaluationDefaults(target_returns=TARGET_RETURNS, rtg_scale=1000.0, max_ep_len=1000,
                                    max_episode_steps=1000)

    def serves_env(self, env_id: str) -> bool:
        return env_id.split("-v")[0].lower() in ENV_IDS

    def evaluation_env_kwargs(self, env_id: str, data_env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Kwargs to evaluate on ``env_id`` given those the training data were recorded with.

        ``data_env_kwargs`` given (the data were recorded on ``env_id`` itself: Minari's ``mujoco/*``, the
        ``lamo/mujoco/*`` data made here): unchanged. None (the data name no env, as D4RL's HDF5 files, or
        another version): a ``-v5`` env whose model differs from the one of the -v2..-v4 envs the data came
        from gets that model (``xml_file``, `DATA_MODEL_FILES`): D4RL's Walker2d data were made with
        right-foot friction 0.9, Walker2d-v5's default is 1.9 (gymnasium ``walker2d.xml`` vs
        ``walker2d_v5.xml``)."""
        if data_env_kwargs is not None:
            return dict(data_env_kwargs)
        family = mujoco_env_name(env_id)
        if env_id.endswith("-v5") and family in DATA_MODEL_FILES:
            return {"xml_file": DATA_MODEL_FILES[family]}
        return {}

    def serves_dataset(self, source: str) -> bool:
        """Minari ``mujoco/*`` and ``lamo/mujoco/*`` ids, and HDF5 files named after a family
        (``hopper-medium-v2.hdf5``)."""
        name = Path(source).name.lower()
        return super().serves_dataset(source) or (name.endswith((".hdf5", ".h5"))
                                                  and any(f in name for f in ENV_IDS))

    def download_url(self, source: str) -> str | None:
        """D4RL's URL for a gym-MuJoCo v2 file path such as ``~/.d4rl/datasets/hopper-medium-v2.hdf5``."""
        return d4rl_url(Path(source).expanduser().name) if source.lower().endswith((".hdf5", ".h5")) else None

    def missing_dataset_hint(self, source: str) -> str | None:
        """For a D4RL file: where D4RL serves it and the local alternative; for a Minari ``mujoco/*``
        id: the local alternative."""
        path = Path(source).expanduser()
        url = d4rl_url(path.name)
        if url is not None:
            family = path.name.lower().split("-")[0].split("_")[0]
            return (f"D4RL file not downloaded; get it with `mkdir -p {path.parent} && wget -O {path} {url}` where "
                    f"the network allows. Offline, {_local_alternative(family)}")
        family = _minari_env_name(source)
        return None if family is None else f"Offline, {_local_alternative(family)}"

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """Collect ``dataset_id`` (``lamo/mujoco/<env>/<medium|medium-replay|expert|random>-vN``) and its three
        siblings with `lamo_ray.domains.mujoco.collect.collect_mujoco` at a local budget (30k SAC
        steps, 50 episodes per rollout dataset) unless it is already in the Minari store.

        Raises:
            ValueError: ``dataset_id`` is not such an id.
            FileExistsError: ``dataset_id`` is missing but a sibling from the same SAC run exists
                (regenerate all four with ``--force`` rather than mixing runs).
        """
        if in_store(dataset_id):
            return
        from lamo_ray.domains.mujoco.collect import LOCAL_EPISODES, LOCAL_TIMESTEPS, collect_mujoco

        parts = dataset_id.split("/")
        usage = "use lamo/mujoco/<hopper|walker2d|halfcheetah>/<medium|medium-replay|expert|random>-vN"
        if len(parts) != 4 or parts[:2] != ["lamo", "mujoco"] or "-v" not in parts[3]:
            raise ValueError(f"{dataset_id}: not a local MuJoCo dataset id; {usage}")
        kind, _, version = parts[3].rpartition("-v")
        if kind not in KINDS or not version.isdigit() or parts[2] not in ENV_IDS:
            raise ValueError(f"{dataset_id}: not a local MuJoCo dataset id; {usage}")
        ids = mujoco_dataset_ids(parts[2], int(version), "/".join(parts[:3]))
        present = [i for i in ids.values() if dataset_path(i).exists()]
        if present:
            raise FileExistsError(f"{dataset_id}: missing, but {', '.join(present)} from the same SAC run exist(s); "
                                  f"regenerate all four with `python -m lamo_ray.collect mujoco --env {parts[2]} --force`")
        log.info("generating %s (SAC %d steps on %s, seed %d); first use only", ", ".join(ids.values()),
                 LOCAL_TIMESTEPS, ENV_IDS[parts[2]], seed)
        collect_mujoco(parts[2], timesteps=LOCAL_TIMESTEPS, episodes=LOCAL_EPISODES, seed=seed,
                       namespace="/".join(parts[:3]), version=int(version))

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        from lamo_ray.domains.mujoco.collect import add_collect_arguments

        add_collect_arguments(commands.add_parser(
            self.name, help="SAC behaviour policy (D4RL recipe) -> medium, medium-replay, expert, random Minari datasets"))


MUJOCO = register(MujocoDomain())
