"""Local MuJoCo datasets with D4RL's recipe: a stable-baselines3 SAC behaviour policy on Gymnasium ``<Env>-v5``.

D4RL's files cannot be downloaded here, so `collect_mujoco` follows D4RL's recipe on Gymnasium
``Hopper-v5`` / ``Walker2d-v5`` / ``HalfCheetah-v5``: a SAC behaviour policy gives
``lamo/mujoco/<env>/medium-v0`` (a snapshot at about a third of the final return),
``medium-replay-v0`` (its replay buffer up to that snapshot) and ``expert-v0`` (the final policy).

    python -m lamo_ray.collect mujoco [--env Hopper|Walker2d|HalfCheetah] [--timesteps N] [--episodes N]
                                      [--snapshot-every N] [--eval-episodes 5] [--ref-episodes 20]
                                      [--learning-starts 1000] [--max-episode-steps 1000] [--seed S]
                                      [--namespace lamo/mujoco/<env>] [--threads 1] [--force]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lamo_ray.domains.mujoco import ENV_IDS, KINDS as MUJOCO_KINDS, MUJOCO, mujoco_dataset_ids, mujoco_env_name
from lamo_ray.episodes import mean_return, run_episode, sb3_policy, sb3_replay_episodes, uniform_random, writable_path, write_minari

log = logging.getLogger(__name__)

DEFAULT_TIMESTEPS = 100_000       # CLI default SAC budget (D4RL trained for up to 1M+ steps)
LOCAL_TIMESTEPS = 30_000          # ensure_mujoco_dataset: what a local sweep generates on first use
DEFAULT_EPISODES = 100            # medium / expert rollouts each (D4RL: 1M transitions each)
LOCAL_EPISODES = 50
DEFAULT_SNAPSHOTS = 20            # intermediate SAC snapshots kept (every timesteps // 20 steps)
DEFAULT_EVAL_EPISODES = 5         # episodes per snapshot evaluation
DEFAULT_REF_EPISODES = 20
DEFAULT_LEARNING_STARTS = 1000    # ours; SB3's default is 100, RL Zoo's Hopper SAC 10,000
MEDIUM_FRACTION = 1 / 3                  # D4RL "medium": a policy at about a third of the expert's return


@dataclass
class MujocoCollectionReport:
    """What `collect_mujoco` wrote.

    Attributes:
        ids, paths: dataset id and Minari folder per kind (`MUJOCO_KINDS`).
        episodes, transitions, dataset_returns: per kind, size and mean episode return.
        snapshot_timesteps, snapshot_returns: each intermediate SAC snapshot's training step and
            mean evaluation return (stochastic policy, the same reset seeds for every snapshot).
        final_return: the final policy on those same seeds.
        medium_timestep, medium_return: the snapshot chosen for ``medium`` (return closest to
            ``MEDIUM_FRACTION * final_return``); ``medium-replay`` is the replay buffer up to it.
        ref_min_score, ref_max_score: uniform-random / final-policy mean returns.
        train_seconds: SAC training (with snapshot evaluations); seconds: the whole collection.
    """

    ids: dict[str, str]
    paths: dict[str, Path]
    episodes: dict[str, int]
    transitions: dict[str, int]
    dataset_returns: dict[str, float]
    snapshot_timesteps: list[int]
    snapshot_returns: list[float]
    final_return: float
    medium_timestep: int
    medium_return: float
    ref_min_score: float
    ref_max_score: float
    train_seconds: float
    seconds: float


def _snapshot_callback(every: int, total: int, evaluate: Callable[[], float], bar: tqdm):
    """An SB3 callback that advances ``bar`` each step and, every ``every`` steps before
    ``total``, keeps a copy of the actor's weights with ``evaluate()``'s mean return."""
    import copy

    from stable_baselines3.common.callbacks import BaseCallback

    class SnapshotCallback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.snapshots: list[tuple[int, dict, float]] = []

        def _on_step(self) -> bool:
            bar.update(1)
            if self.num_timesteps % every == 0 and self.num_timesteps < total:
                value = evaluate()
                self.snapshots.append((self.num_timesteps, copy.deepcopy(self.model.actor.state_dict()), value))
                bar.set_postfix(step=self.num_timesteps, eval_return=f"{value:.0f}")
                log.info("SAC snapshot at step %d of %d: mean return %.1f", self.num_timesteps, total, value)
            return True

    return SnapshotCallback()


def collect_mujoco(env: str = "Hopper", timesteps: int = DEFAULT_TIMESTEPS,
                   episodes: int = DEFAULT_EPISODES, seed: int = 0, snapshot_every: int | None = None,
                   eval_episodes: int = DEFAULT_EVAL_EPISODES, ref_episodes: int = DEFAULT_REF_EPISODES,
                   learning_starts: int = DEFAULT_LEARNING_STARTS, max_episode_steps: int | None = None,
                   namespace: str | None = None, version: int = 0, force: bool = False, threads: int = 1,
                   progress: bool | None = None) -> MujocoCollectionReport:
    """D4RL's recipe for MuJoCo locomotion data on Gymnasium ``<Env>-v5``: train a behaviour
    policy with stable-baselines3 SAC and record four Minari datasets (`mujoco_dataset_ids`,
    default ``lamo/mujoco/<env>/{medium,medium-replay,expert,random}-v0``). "random" is ``episodes``
    episodes of uniform random actions (the issue-18 reading of D4RL's hopper-random, where the
    ODT-TD3 paper's online gains are largest), with the same reference scores as the other three.

    Source followed: D4RL (Fu et al. 2020, sec. 5): "medium" = rollouts of a SAC policy stopped
    early at about a third of the expert's return, "medium-replay" = the replay buffer up to that
    policy, "expert" = rollouts of the fully trained SAC policy. Ours: SB3's SAC with its default
    hyper-parameters (256x256 MLPs, lr 3e-4, batch 256) except ``learning_starts`` and a replay
    buffer that holds every step; ``episodes`` episodes each for medium and expert instead of
    D4RL's 1M transitions.

    Procedure: SAC trains for ``timesteps`` env steps; every ``snapshot_every`` steps (default
    ``timesteps // 20``) a copy of the actor is kept and evaluated on ``eval_episodes`` episodes
    (the same reset seeds each time). The final policy is evaluated on those seeds too; the
    snapshot whose mean return is closest to ``MEDIUM_FRACTION`` x the final return is the
    medium policy. All rollouts sample the stochastic SAC policy. Each dataset's Minari metadata
    holds ``ref_min_score`` = mean return of uniform-random actions and ``ref_max_score`` = mean
    return of the final policy, each over ``ref_episodes`` episodes with their own seeds, so the
    normalized score is relative to this run's own SAC expert. (The D4RL HDF5 files instead get
    D4RL's references, `lamo_ray.domains.mujoco.D4RL_REF_SCORES`, and Minari's ``mujoco/*`` datasets their
    stored ones.) Metadata also records the snapshot table and the chosen snapshot.

    Everything derives from ``seed`` (SAC seed, reset seeds, sampling): the same arguments give
    identical datasets on the same machine and library versions. ``threads`` sets torch's
    intra-op threads while collecting (restored afterwards).

    Args:
        env: ``Hopper``, ``Walker2d``, ``HalfCheetah`` (any case, or the ``-v5`` id).
        timesteps: SAC budget in env steps.
        max_episode_steps: time limit for training and rollouts (default the env's 1000).
        progress: tqdm bars (training steps, then rollouts); None shows them only on a terminal.

    Returns:
        a `MujocoCollectionReport`.

    Raises:
        FileExistsError: one of the four ids exists and ``force`` is false (checked before training).
        ValueError: unknown env, malformed ids, ``timesteps`` < 2, ``snapshot_every`` not in
            [1, timesteps), ``episodes``/``eval_episodes``/``ref_episodes``/``threads`` < 1,
            ``learning_starts`` < 0.
    """
    import torch
    from minari.data_collector import EpisodeBuffer
    from stable_baselines3 import SAC

    name = mujoco_env_name(env)
    env_id = ENV_IDS[name]
    ids = mujoco_dataset_ids(name, version, namespace)
    paths = {kind: writable_path(dataset_id, force) for kind, dataset_id in ids.items()}
    snapshot_every = timesteps // DEFAULT_SNAPSHOTS if snapshot_every is None else snapshot_every
    if timesteps < 2:
        raise ValueError(f"{env_id}: timesteps must be >= 2, got {timesteps}")
    if not 1 <= snapshot_every < timesteps:
        raise ValueError(f"{env_id}: snapshot_every must be in [1, timesteps={timesteps}), got {snapshot_every}")
    for key, value in (("episodes", episodes), ("eval_episodes", eval_episodes), ("ref_episodes", ref_episodes),
                       ("threads", threads)):
        if value < 1:
            raise ValueError(f"{env_id}: {key} must be >= 1, got {value}")
    if learning_starts < 0:
        raise ValueError(f"{env_id}: learning_starts must be >= 0, got {learning_starts}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"{env_id}: max_episode_steps must be >= 1, got {max_episode_steps}")

    began = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # a fourth child for the random episodes: the first three (and so the other datasets) are as before
        sac_seq, reset_seq, torch_seq, random_seq = np.random.SeedSequence(seed).spawn(4)
        reset_seeds = np.random.default_rng(reset_seq).choice(
            2**31 - 1, size=eval_episodes + 2 * episodes + 2 * ref_episodes, replace=False)
        eval_seeds, medium_seeds, expert_seeds, min_seeds, max_seeds = np.split(
            reset_seeds, np.cumsum([eval_episodes, episodes, episodes, ref_episodes]))
        torch_seeds = [int(s) for s in torch_seq.generate_state(3)]
        hide = None if progress is None else not progress

        train_env = MUJOCO.make_env(env_id, max_episode_steps=max_episode_steps)
        eval_env = MUJOCO.make_env(env_id, max_episode_steps=max_episode_steps)
        model = SAC("MlpPolicy", train_env, seed=int(sac_seq.generate_state(1)[0] % 2**31), device="cpu",
                    buffer_size=timesteps, learning_starts=learning_starts, verbose=0)
        with tqdm(total=timesteps, desc=f"SAC on {env_id}", unit="step", disable=hide) as bar:
            callback = _snapshot_callback(snapshot_every, timesteps,
                                          lambda: mean_return(eval_env, sb3_policy(model), eval_seeds), bar)
            model.learn(total_timesteps=timesteps, callback=callback)
        train_seconds = time.perf_counter() - began
        final_actor = {k: v.clone() for k, v in model.actor.state_dict().items()}
        final_return = mean_return(eval_env, sb3_policy(model), eval_seeds)
        snapshots = callback.snapshots
        target = MEDIUM_FRACTION * final_return
        medium_step, medium_actor, medium_return = min(snapshots, key=lambda s: abs(s[2] - target))
        log.info("%s: final policy (step %d) %.1f; medium = snapshot at step %d (%.1f, target %.1f)",
                 env_id, timesteps, final_return, medium_step, medium_return, target)

        def rollouts(kind: str, seeds: np.ndarray, torch_seed: int) -> list[dict[str, np.ndarray]]:
            torch.manual_seed(torch_seed)
            policy = sb3_policy(model)
            return [run_episode(eval_env, policy, int(s))
                    for s in tqdm(seeds, desc=f"rollouts {ids.get(kind, kind)}", unit="ep", disable=hide)]

        torch.manual_seed(torch_seeds[0])
        ref_max = mean_return(eval_env, sb3_policy(model), max_seeds)
        ref_min = mean_return(eval_env, uniform_random(eval_env, np.random.default_rng(torch_seeds[0])), min_seeds)
        data = {"expert": rollouts("expert", expert_seeds, torch_seeds[1])}
        model.actor.load_state_dict(medium_actor)
        data["medium"] = rollouts("medium", medium_seeds, torch_seeds[2])
        data["medium-replay"] = sb3_replay_episodes(model, medium_step)
        random_rng = np.random.default_rng(random_seq)
        random_seeds = random_rng.choice(2**31 - 1, size=episodes, replace=False)
        random_policy = uniform_random(eval_env, random_rng)
        data["random"] = [run_episode(eval_env, random_policy, int(s))
                          for s in tqdm(random_seeds, desc=f"rollouts {ids['random']}", unit="ep", disable=hide)]
        model.actor.load_state_dict(final_actor)
        log.info("%s: ref_min_score (uniform random) %.1f, ref_max_score (final SAC policy) %.1f", env_id, ref_min, ref_max)

        policies = {"medium": f"SAC snapshot at step {medium_step} of {timesteps}",
                    "medium-replay": f"SAC replay buffer, steps 0-{medium_step} of {timesteps}",
                    "expert": f"final SAC policy after {timesteps} steps",
                    "random": "uniform random actions"}
        seed_lists = {"medium": medium_seeds, "expert": expert_seeds, "random": random_seeds}
        for kind in MUJOCO_KINDS:
            buffers = [EpisodeBuffer(id=i, seed=int(seed_lists[kind][i]) if kind in seed_lists else None, **episode)
                       for i, episode in enumerate(data[kind])]
            dataset = write_minari(
                ids[kind], paths[kind], buffers, env=eval_env, eval_env=eval_env,
                algorithm_name=f"stable-baselines3 SAC ({policies[kind]}), D4RL recipe",
                code_permalink="lamo_ray/domains/mujoco/collect.py (lamo_ray repository)",
                ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=ref_episodes,
                description=(f"{env_id}, D4RL-style {kind} data: {policies[kind]}; medium = the snapshot whose "
                             f"mean return is closest to {MEDIUM_FRACTION:.3g} x the final policy's; seed {seed}. "
                             "ref_min_score: uniform-random actions; ref_max_score: the final SAC policy."))
            dataset.storage.update_metadata({
                "collection_seed": seed, "sac_timesteps": timesteps, "sac_learning_starts": learning_starts,
                "snapshot_timesteps": [s[0] for s in snapshots],
                "snapshot_returns": [s[2] for s in snapshots], "final_return": final_return,
                "medium_snapshot_timestep": medium_step, "medium_snapshot_return": medium_return})
        train_env.close()
        eval_env.close()
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - began
    episodes_n = {kind: len(data[kind]) for kind in MUJOCO_KINDS}
    transitions = {kind: int(sum(len(e["rewards"]) for e in data[kind])) for kind in MUJOCO_KINDS}
    returns = {kind: float(np.mean([e["rewards"].sum() for e in data[kind]])) for kind in MUJOCO_KINDS}
    for kind in MUJOCO_KINDS:
        log.info("%s: %d episodes, %d transitions, mean return %.1f", ids[kind], episodes_n[kind],
                 transitions[kind], returns[kind])
    return MujocoCollectionReport(ids, paths, episodes_n, transitions, returns, [s[0] for s in snapshots],
                                  [s[2] for s in snapshots], final_return, medium_step, medium_return,
                                  ref_min, ref_max, train_seconds, seconds)


def collect_command(args: argparse.Namespace) -> int:
    """``python -m lamo_ray.collect mujoco``."""
    report = collect_mujoco(args.env, args.timesteps, args.episodes, args.seed, args.snapshot_every,
                            args.eval_episodes, args.ref_episodes, args.learning_starts,
                            args.max_episode_steps, args.namespace, force=args.force, threads=args.threads)
    print(f"SAC on {ENV_IDS[mujoco_env_name(args.env)]}: {args.timesteps} steps in {report.train_seconds:.1f} s, "
          f"final policy mean return {report.final_return:.1f}; collection total {report.seconds:.1f} s")
    for step, value in zip(report.snapshot_timesteps, report.snapshot_returns):
        print(f"  snapshot step {step}: mean return {value:.1f}" + ("  <- medium" if step == report.medium_timestep else ""))
    for kind in MUJOCO_KINDS:
        print(f"{report.ids[kind]}: {report.episodes[kind]} episodes, {report.transitions[kind]} transitions, "
              f"mean return {report.dataset_returns[kind]:.1f}, at {report.paths[kind]}")
    print(f"  ref_min_score (uniform random) {report.ref_min_score:.1f}, "
          f"ref_max_score (final SAC policy) {report.ref_max_score:.1f}")
    return 0


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m lamo_ray.collect mujoco``."""
    parser.add_argument("--env", default="Hopper", help="Hopper, Walker2d or HalfCheetah (Gymnasium -v5; any case)")
    parser.add_argument("--timesteps", type=int, default=DEFAULT_TIMESTEPS, help="SAC training budget in env steps")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help="rollout episodes for each of medium and expert")
    parser.add_argument("--snapshot-every", type=int,
                        help=f"steps between kept SAC snapshots (default timesteps // {DEFAULT_SNAPSHOTS})")
    parser.add_argument("--eval-episodes", type=int, default=DEFAULT_EVAL_EPISODES,
                        help="episodes per snapshot evaluation")
    parser.add_argument("--ref-episodes", type=int, default=DEFAULT_REF_EPISODES,
                        help="episodes for each of ref_min_score (random) and ref_max_score (final policy)")
    parser.add_argument("--learning-starts", type=int, default=DEFAULT_LEARNING_STARTS,
                        help="SAC's uniformly random warm-up steps before training")
    parser.add_argument("--max-episode-steps", type=int, help="time limit (default the env's 1000)")
    parser.add_argument("--namespace", help="dataset ids are <namespace>/<kind>-v0; default lamo/mujoco/<env>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--force", action="store_true", help="replace existing dataset ids")
    parser.set_defaults(run=collect_command)
