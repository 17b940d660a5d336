"""Local Atari datasets: RAM-scripted behaviour policies mixed with epsilon-random actions, as Minari datasets.

No DQN-replay download here, so `collect_atari` plays each game with a behaviour policy scripted from
emulator RAM (`lamo_ray.domains.atari.policies`: Breakout and Pong paddles follow the ball; Qbert sticky
random moves) mixed with epsilon-random actions at several levels, on the DT-preprocessed env, as
``lamo/atari/<game>-v0`` with uint8 frames gzip-compressed in the HDF5 file.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lamo_ray.data.frames import frames_from_stacks, stacked_view
from lamo_ray.domains.atari import ATARI, FRAME_STACK, GAMES, OBSERVATION_SHAPE
from lamo_ray.domains.atari import game as atari_game
from lamo_ray.episodes import writable_path, write_minari

log = logging.getLogger(__name__)

DEFAULT_EPISODES = 60
# epsilon (probability of a uniformly random action) per episode, used in turn; 1.0 is random play
DEFAULT_EPSILONS: tuple[float, ...] = (0.02, 0.1, 0.25, 0.5, 1.0)
# LaMo's Atari evaluation stops at max_timestep (4096 for Breakout); episodes are truncated there too
DEFAULT_MAX_EPISODE_STEPS = 4096
HDF5_GZIP_LEVEL = 4


@dataclass
class AtariCollectionReport:
    """What `collect_atari` wrote.

    Attributes:
        path: the dataset's folder in the Minari store.
        epsilon_returns: mean episode return per epsilon level.
        episodes, transitions: dataset size.
        raw_bytes: the observations as stacked uint8 arrays; stored_bytes: the dataset folder on disk.
        seconds: wall time of the whole collection.
    """

    path: Path
    epsilon_returns: dict[float, float]
    episodes: int
    transitions: int
    raw_bytes: int
    stored_bytes: int
    seconds: float


def _gzip_observations(hdf5_path: Path, level: int = HDF5_GZIP_LEVEL) -> None:
    """Rewrite a Minari HDF5 file with each episode's ``observations`` gzip-compressed.

    Minari's HDF5 writer has no compression option, but its reader (h5py) decompresses
    transparently. Stacked Atari frames repeat 3 of every 4 frames within gzip's 32 KB window, so
    they shrink ~50x (measured). Groups, attributes and the other datasets are copied unchanged.
    """
    import h5py

    tmp = hdf5_path.with_name(hdf5_path.name + ".tmp")
    with h5py.File(hdf5_path, "r") as src, h5py.File(tmp, "w", track_order=True) as dst:
        dst.attrs.update(src.attrs)
        for name, group in src.items():
            out = dst.create_group(name, track_order=True)
            out.attrs.update(group.attrs)
            for key, item in group.items():
                if key == "observations" and isinstance(item, h5py.Dataset) and item.dtype == np.uint8:
                    data = item[()]
                    out.create_dataset(key, data=data, compression="gzip", compression_opts=level,
                                       chunks=(min(len(data), 32),) + data.shape[1:])
                else:
                    src.copy(item, out, name=key)
    tmp.replace(hdf5_path)


def collect_atari(game: str = "Breakout", dataset_id: str | None = None, episodes: int = DEFAULT_EPISODES,
                  seed: int = 0, epsilons: Sequence[float] = DEFAULT_EPSILONS,
                  max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS, force: bool = False,
                  progress: bool | None = None) -> AtariCollectionReport:
    """Record the game's scripted behaviour policy (`lamo_ray.domains.atari.policies.ram_policy`) mixed with
    epsilon-random actions as Minari dataset ``dataset_id`` (default ``lamo/atari/<game>-v0``).

    Env: `AtariDomain.make_env` of ``ALE/<Game>-v5`` (DT preprocessing: (4, 84, 84) uint8,
    frame skip 4, up to 30 no-op starts, no sticky actions), truncated at ``max_episode_steps``
    agent steps. Episode i takes a uniformly random action with probability
    ``epsilons[i % L]`` at each step, else the policy's. Reference scores are LaMo's Atari
    random / human returns (docs/references/lamo.md "Atari"), so scores are human-normalised.
    Observations are stored as uint8 and gzip-compressed in the HDF5 file (`_gzip_observations`);
    while collecting, each frame is held once in memory (`lamo_ray.data.frames`). Everything derives
    from ``seed``.

    Raises:
        FileExistsError: ``dataset_id`` exists and ``force`` is false (checked before collecting).
        ValueError: unknown game, malformed id, ``episodes`` < 1, epsilons outside [0, 1] or empty.
    """
    from minari.data_collector import EpisodeBuffer

    from lamo_ray.domains.atari.policies import EpsilonMix, ram_policy, run_ram_episode

    spec = atari_game(game)
    dataset_id = dataset_id or spec.dataset_id
    path = writable_path(dataset_id, force)
    if episodes < 1:
        raise ValueError(f"{dataset_id}: episodes must be >= 1, got {episodes}")
    if not epsilons or min(epsilons) < 0 or max(epsilons) > 1:
        raise ValueError(f"{dataset_id}: epsilons must be a non-empty list in [0, 1], got {epsilons}")
    began = time.perf_counter()
    seed_rng, policy_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    reset_seeds = seed_rng.choice(2**31 - 1, size=episodes, replace=False)
    # zero-padded frame history at episode start: the DQN-replay layout the model trains on (lamo_ray.atari)
    env = ATARI.make_env(spec.env_id, max_episode_steps=max_episode_steps, frame_stack_padding="zero")
    levels = [float(x) for x in epsilons]
    episodes_data, returns = [], []
    for i in tqdm(range(episodes), desc=f"collecting {dataset_id}", unit="ep",
                  disable=None if progress is None else not progress):
        policy = EpsilonMix(ram_policy(spec.name, policy_rng), levels[i % len(levels)], spec.n_actions, policy_rng)
        episode = run_ram_episode(env, policy, int(reset_seeds[i]))
        frames = frames_from_stacks(episode.pop("observations"))
        if frames is None:  # FrameStackObservation always overlaps consecutive stacks
            raise RuntimeError(f"{dataset_id}: episode {i}: stacked observations do not share frames")
        episodes_data.append((frames, episode))
        returns.append(float(episode["rewards"].sum()))
    level_returns = {level: float(np.mean(returns[j::len(levels)])) for j, level in enumerate(levels)
                     if returns[j::len(levels)]}
    for level, value in level_returns.items():
        log.info("%s: epsilon %.2f -> mean return %.1f", dataset_id, level, value)

    buffers = [EpisodeBuffer(id=i, seed=int(reset_seeds[i]), observations=stacked_view(frames, FRAME_STACK), **ep)
               for i, (frames, ep) in enumerate(episodes_data)]
    ref_min, ref_max = spec.refs
    dataset = write_minari(
        dataset_id, path, buffers, env=env, eval_env=env,
        algorithm_name=f"scripted {spec.name} policy ({spec.policy}) mixed with epsilon-random actions",
        code_permalink="lamo_ray/domains/atari/ (lamo_ray repository)",
        ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=episodes,
        description=(f"{spec.env_id} with DT preprocessing ((4, 84, 84) uint8 stacked frames, frame skip 4, up to 30 "
                     f"no-op starts, no sticky actions), {episodes} episodes truncated at {max_episode_steps} steps; "
                     f"episode i acts randomly with probability epsilons[i % {len(levels)}], epsilons={levels}; "
                     f"seed {seed}. Reference scores: LaMo's random / human (docs/references/lamo.md)."))
    dataset.storage.update_metadata({"epsilons": levels, "epsilon_mean_returns": list(level_returns.values()),
                                     "behaviour_policy": spec.policy, "collection_seed": seed,
                                     "max_episode_steps_collected": max_episode_steps})
    env.close()
    del buffers, episodes_data
    _gzip_observations(path / "data" / "main_data.hdf5")
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    dataset.storage.update_metadata({"dataset_size": round(stored / 1e6, 1)})
    seconds = time.perf_counter() - began
    transitions = int(dataset.total_steps)
    raw = transitions * int(np.prod(OBSERVATION_SHAPE))
    log.info("%s: wrote %d episodes, %d transitions to %s in %.1f s (%.1f MB on disk, %.0f MB as raw stacks)",
             dataset_id, episodes, transitions, path, seconds, stored / 1e6, raw / 1e6)
    return AtariCollectionReport(path, level_returns, episodes, transitions, raw, stored, seconds)


def collect_command(args: argparse.Namespace) -> int:
    """``python -m lamo_ray.collect atari``."""
    report = collect_atari(args.game, args.dataset_id, args.episodes, args.seed, args.epsilons,
                           args.max_episode_steps or None, args.force)
    print(f"{args.dataset_id or atari_game(args.game).dataset_id}: {report.episodes} episodes, {report.transitions} transitions, {report.seconds:.1f} s, "
          f"{report.stored_bytes / 1e6:.1f} MB on disk ({report.raw_bytes / 1e6:.0f} MB as raw uint8 stacks), "
          f"at {report.path}")
    for level, value in report.epsilon_returns.items():
        print(f"  epsilon {level:g}: mean return {value:.1f}")
    return 0


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m lamo_ray.collect atari``."""
    parser.add_argument("--game", type=str.lower, choices=list(GAMES), default="breakout",
                        help="Breakout, Pong or Qbert (case-insensitive)")
    parser.add_argument("--dataset-id", help="default lamo/atari/<game>-v0")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(DEFAULT_EPSILONS),
                        help="probability of a random action, used in turn by episode index (1 = random play)")
    parser.add_argument("--max-episode-steps", type=int, default=DEFAULT_MAX_EPISODE_STEPS,
                        help="truncate episodes after this many agent steps (0: the ALE's own 27,000)")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset id")
    parser.set_defaults(run=collect_command)
