"""DQN-replay Atari data in the d4rl-atari layout (what LaMo's Atari experiments train on).

d4rl-atari (takuseno/d4rl-atari, used by LaMo's ``experiment-atari``) keeps one checkpoint of the
DQN Replay Dataset per folder ``<root>/<Game>/<index>/<epoch>/`` with four gzip-compressed ``.npy``
files: ``observation.gz`` ``(N, 84, 84)`` uint8 single frames, ``action.gz`` ``(N,)`` int,
``reward.gz`` ``(N,)`` float, ``terminal.gz`` ``(N,)`` 0/1 (1 on an episode's last step).
Its dataset names map to folders as ``<game>-mixed-vI`` -> epoch 1, ``<game>-medium-vI`` -> epoch 10,
``<game>-expert-vI`` -> epoch 50, run index ``I + 1`` (``breakout-medium-v0`` -> ``Breakout/1/10``).

Sources accepted by `lamo_ray.data.loading.load_dataset` (through `AtariDomain.load_dataset`):

- ``d4rl-atari/<game>-<mixed|medium|expert>-v<I>``, looked up under ``$D4RL_ATARI_PATH``
  (default ``~/.d4rl/datasets``, d4rl-atari's own store);
- a path to one checkpoint folder holding the four files.

Observations are stacked 4 frames per step with zero frames before an episode's first frame
(d4rl-atari ``_stack``, LaMo's ``AtariBuffer``; the local collector's env zero-pads too). Each frame
is held once (`lamo_ray.data.frames.stacked_view`); rewards are taken as stored. Trajectories end
at terminals; a trailing piece without one is kept (as the D4RL HDF5 reader does). The env is the
game's ``<Game>NoFrameskip-v4`` (d4rl-atari's evaluation env) with LaMo's random / human
reference scores (docs/references/lamo.md "Atari").
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np

from lamo_ray.data.frames import stacked_view
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, Trajectory, TrajectoryDataset

PREFIX = "d4rl-atari/"
FILES = ("observation", "action", "reward", "terminal")
EPOCHS = {"mixed": 1, "medium": 10, "expert": 50}
STACK = 4
_NAME = re.compile(r"^(?P<game>[a-z][a-z-]*?)-(?P<kind>mixed|medium|expert)-v(?P<index>\d+)$")


def root() -> Path:
    """Where d4rl-atari ids are looked up: ``$D4RL_ATARI_PATH``, else ``~/.d4rl/datasets``."""
    return Path(os.environ.get("D4RL_ATARI_PATH") or Path.home() / ".d4rl" / "datasets").expanduser()


def game_folder_name(game: str) -> str:
    """d4rl-atari's folder name of a game: ``space-invaders`` -> ``SpaceInvaders``."""
    return "".join(part.capitalize() for part in game.replace("-", "_").split("_"))


def is_dqn_replay_source(source: str) -> bool:
    """A ``d4rl-atari/...`` id, or an existing folder holding ``observation.gz``."""
    return source.startswith(PREFIX) or (Path(source).is_dir() and (Path(source) / "observation.gz").is_file())


def resolve(source: str) -> tuple[Path, str | None]:
    """``(checkpoint folder, game folder name or None)`` of ``source``.

    Raises:
        DatasetError: a ``d4rl-atari/`` id that is not ``<game>-<mixed|medium|expert>-v<I>``.
    """
    if not source.startswith(PREFIX):
        path = Path(source)
        return path, (path.parent.parent.name or None)
    match = _NAME.match(source[len(PREFIX):])
    if match is None:
        raise DatasetError(f"{source}: not a d4rl-atari id; use {PREFIX}<game>-<mixed|medium|expert>-v<I>, "
                           f"e.g. {PREFIX}breakout-medium-v0")
    game = game_folder_name(match["game"])
    return root() / game / str(int(match["index"]) + 1) / str(EPOCHS[match["kind"]]), game


def _load_array(path: Path, source: str) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            return np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{source}: cannot read {path} as a gzip-compressed .npy file ({err})") from None


def load_dqn_replay(source: str) -> TrajectoryDataset:
    """Trajectories of one DQN-replay checkpoint (module docstring).

    Raises:
        DatasetNotDownloadedError: the files are not there; the message says how to get them.
        DatasetError: unreadable files, wrong shapes or dtypes, or lengths that differ.
    """
    folder, game = resolve(source)
    missing = [f"{name}.gz" for name in FILES if not (folder / f"{name}.gz").is_file()]
    if missing:
        epoch, index = folder.name, folder.parent.name
        raise DatasetNotDownloadedError(
            f"{source}: DQN-replay files {missing} not found in {folder}. Get them where the network allows with "
            f"the d4rl-atari package (`pip install git+https://github.com/takuseno/d4rl-atari`, then "
            f"`gym.make('<game>-<mixed|medium|expert>-v0').get_dataset()` downloads into ~/.d4rl/datasets) or "
            f"`gsutil -m cp gs://atari-replay-datasets/dqn/{game or '<Game>'}/{index}/replay_logs/"
            f"'$store$_<observation|action|reward|terminal>_ckpt.{epoch}.gz' {folder}/<name>.gz`; "
            f"set $D4RL_ATARI_PATH if they live elsewhere. Offline, collect local Atari data with "
            f"`python -m lamo_ray.collect atari --game Breakout` (lamo/atari/breakout-v0)")
    frames = _load_array(folder / "observation.gz", source)
    actions = _load_array(folder / "action.gz", source)
    rewards = _load_array(folder / "reward.gz", source)
    terminals = _load_array(folder / "terminal.gz", source)
    if frames.dtype != np.uint8 or frames.ndim != 3:
        raise DatasetError(f"{source}: observation.gz must hold (N, H, W) uint8 frames, got {frames.dtype} {frames.shape}")
    if not np.issubdtype(actions.dtype, np.integer):
        raise DatasetError(f"{source}: action.gz must hold integer actions, got {actions.dtype}")
    lengths = {"observation": len(frames), "action": len(actions), "reward": len(rewards), "terminal": len(terminals)}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{source}: files have different lengths {lengths}")
    n = len(frames)
    if n == 0:
        raise DatasetError(f"{source}: dataset has no steps")
    actions = actions.reshape(n).astype(np.int64)
    if actions.min() < 0:
        raise DatasetError(f"{source}: negative action {int(actions.min())} in action.gz")
    rewards = rewards.reshape(n).astype(np.float32)
    terminals = terminals.reshape(n).astype(bool)
    ends = np.flatnonzero(terminals) + 1
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    starts = np.concatenate([[0], ends[:-1]])

    # every trajectory's frames preceded by STACK - 1 zero frames, in one buffer; views over it
    pad = STACK - 1
    buffer = np.zeros((n + pad * len(starts),) + frames.shape[1:], dtype=np.uint8)
    trajectories = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        offset = s + pad * i
        buffer[offset + pad:offset + pad + e - s] = frames[s:e]
        observations = stacked_view(buffer[offset:offset + pad + e - s], STACK)
        trajectories.append(Trajectory(observations, actions[s:e], rewards[s:e], bool(terminals[e - 1])))
    del frames
    from lamo_ray.domains.atari import GAMES, REF_SCORES

    family = (game or "").lower()
    refs = REF_SCORES.get(family, (None, None))
    env_id = f"{game}NoFrameskip-v4" if family in GAMES else None
    act_dim = int(actions.max()) + 1
    if family in GAMES:
        if act_dim > GAMES[family].n_actions:
            raise DatasetError(f"{source}: action {act_dim - 1} is outside {game}'s {GAMES[family].n_actions} actions")
        act_dim = GAMES[family].n_actions
    return TrajectoryDataset(trajectories, tuple(trajectories[0].observations.shape[1:]),
                             act_dim, True, refs[0], refs[1], env_id, source)
