"""Atari: the games LaMo evaluates (Breakout, Qbert, Pong) with DT's preprocessing and human-normalised scores.

Everything else (data loading, sampling, the model, training, rollouts) is shared with the other
domains; an Atari experiment is a sweep file (``sweeps/atari*.yaml``).

Environment (`make_atari_env`, `AtariDomain.make_env` for ``ALE/*`` and ``*NoFrameskip-v4`` ids):
the ALE env without its own frame skip and without sticky actions, wrapped in gymnasium's
``AtariPreprocessing`` (84 x 84 grayscale, frame skip 4 with max-pooling over the last two frames,
up to 30 no-op starts, no terminal on life loss) and ``FrameStackObservation`` (4 frames):
observations ``(4, 84, 84)`` uint8, discrete actions. At episode start the frame history is the
first frame repeated for evaluation (``frame_stack_padding="reset"``: LaMo evaluates on
d4rl-atari's ``FrameStack``, which does this; docs/references/lamo.md "Atari") and zeros for collection
(``"zero"``: the layout of the DQN-replay training data, whose stacks LaMo's buffer zero-pads too).
No sticky actions, as DT's and LaMo's Atari evaluation.

Data: DQN-replay checkpoints in the d4rl-atari layout, ``d4rl-atari/<game>-<mixed|medium|expert>-vI``
(`lamo_ray.domains.atari.dqn_replay`, what LaMo trains on), and, made here, ``lamo/atari/<game>-v0``
(`lamo_ray.domains.atari.collect`: RAM-scripted policies of `lamo_ray.domains.atari.policies` mixed
with epsilon-random actions).

    python -m lamo_ray.collect atari [--game Breakout|Pong|Qbert] [--episodes N] [--dataset-id ID]
                                     [--seed S] [--epsilons 0.02 0.1 0.25 0.5 1] [--max-episode-steps 4096]
                                     [--force]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from lamo_ray.domains.base import Domain, EvaluationDefaults, register
from lamo_ray.episodes import in_store

log = logging.getLogger(__name__)

# DT Atari preprocessing (docs/references/environment.md "Environments"; docs/references/lamo.md "Atari").
PREPROCESSING: dict[str, Any] = {"noop_max": 30, "frame_skip": 4, "screen_size": 84, "grayscale_obs": True,
                                 "terminal_on_life_loss": False}
FRAME_STACK = 4
OBSERVATION_SHAPE = (FRAME_STACK, 84, 84)

# docs/references/lamo.md "Atari": (random, human) returns by lower-case game name;
# human-normalised score = (return - random) / (human - random).
REF_SCORES: dict[str, tuple[float, float]] = {
    "breakout": (1.7, 31.8),
    "qbert": (163.9, 13455.0),
    "pong": (-20.7, 9.3),
}


@dataclass(frozen=True)
class AtariGame:
    """A game we can collect data on and score.

    Attributes:
        name: ALE name, e.g. "Breakout".
        n_actions: size of the game's minimal action set (ALE default, as the DQN-replay data).
        policy: what `ram_policy` does for it (for dataset metadata and messages).
    """

    name: str
    n_actions: int
    policy: str

    @property
    def refs(self) -> tuple[float, float]:
        """(random, human) returns from `REF_SCORES`."""
        return REF_SCORES[self.name.lower()]

    @property
    def env_id(self) -> str:
        """The id we evaluate on (`make_atari_env` removes v5's frame skip and sticky actions)."""
        return f"ALE/{self.name}-v5"

    @property
    def dataset_id(self) -> str:
        """Our locally collected Minari dataset."""
        return f"lamo/atari/{self.name.lower()}-v0"


GAMES: dict[str, AtariGame] = {
    "breakout": AtariGame("Breakout", 4, "RAM: paddle follows the ball's x; FIRE when no ball is in play"),
    "pong": AtariGame("Pong", 6, "RAM: paddle follows the ball's y (dead band 12)"),
    "qbert": AtariGame("Qbert", 6, "random moves (UP/RIGHT/LEFT/DOWN), each held 1-4 steps"),
}


def game(name: str) -> AtariGame:
    """The `GAMES` entry for ``name`` (case-insensitive: "Breakout", "breakout").

    Raises:
        ValueError: an unknown game; the message lists the known ones.
    """
    key = name.lower()
    if key not in GAMES:
        raise ValueError(f"unknown Atari game {name!r}; known: {', '.join(g.name for g in GAMES.values())}")
    return GAMES[key]


def is_atari_id(env_id: str) -> bool:
    """``ALE/<Game>-v5`` style ids and gym's ``<Game>NoFrameskip-v4``."""
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def make_atari_env(env_id: str, max_episode_steps: int | None = None, frame_stack_padding: str = "reset",
                   **kwargs: Any) -> gym.Env:
    """The preprocessed env (module docstring): observations (4, 84, 84) uint8, discrete actions.

    Args:
        env_id: ``ALE/<Game>-v5`` (its frame skip is set to 1 and its sticky actions to 0 unless
            ``kwargs`` say otherwise, since the preprocessing skips frames itself) or
            ``<Game>NoFrameskip-v4``. ale-py must be registered (`AtariDomain.make_env` does it).
        max_episode_steps: time limit in agent steps (after frame skip); default the ALE's own
            limit of 108,000 frames (27,000 agent steps).
        frame_stack_padding: the frame history at episode start: "reset" repeats the first frame
            (evaluation, as LaMo's d4rl-atari env), "zero" pads with black frames (data collection).
        **kwargs: ALE env kwargs (e.g. the ones a Minari dataset recorded); ``frameskip`` must be 1.

    Raises:
        ValueError: ``frameskip`` other than 1, or an unknown ``frame_stack_padding``.
        gym.error.UnregisteredEnv: unknown id.
    """
    kwargs = dict(kwargs)
    if frame_stack_padding not in ("reset", "zero"):
        raise ValueError(f"{env_id}: frame_stack_padding must be 'reset' or 'zero', got {frame_stack_padding!r}")
    if kwargs.setdefault("frameskip", 1) != 1:
        raise ValueError(f"{env_id}: frameskip must be 1 (AtariPreprocessing skips {PREPROCESSING['frame_skip']} "
                         f"frames itself), got {kwargs['frameskip']}")
    if env_id.startswith("ALE/"):
        kwargs.setdefault("repeat_action_probability", 0.0)
    env = gym.make(env_id, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, **PREPROCESSING)
    env = gym.wrappers.FrameStackObservation(env, FRAME_STACK, padding_type=frame_stack_padding)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    return env


class AtariDomain(Domain):
    """Atari games with DT preprocessing and human-normalised scores (module docstring)."""

    name = "atari"
    env_package = "ale_py"
    dataset_prefixes = ("d4rl-atari/",)
    local_prefix = "lamo/atari/"
    ref_scores_by_name = REF_SCORES
    evaluation = EvaluationDefaults(target_returns={"ALE/Breakout-v5": (90, 120)}, rtg_scale=1.0, max_ep_len=4096,
                                    max_episode_steps=4096)

    def serves_env(self, env_id: str) -> bool:
        return is_atari_id(env_id)

    def serves_dataset(self, source: str) -> bool:
        from lamo_ray.domains.atari.dqn_replay import is_dqn_replay_source

        return super().serves_dataset(source) or is_dqn_replay_source(source)

    def make_env(self, env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
        """`make_atari_env` (DT preprocessing) after registering ale-py's ids."""
        self.register_envs()
        return make_atari_env(env_id, max_episode_steps=max_episode_steps, **kwargs)

    def own_format(self, source: str) -> bool:
        from lamo_ray.domains.atari.dqn_replay import is_dqn_replay_source

        return is_dqn_replay_source(source)

    def load_dataset(self, source: str):
        """DQN-replay checkpoints (`lamo_ray.domains.atari.dqn_replay.load_dqn_replay`); None for the
        Minari datasets made here."""
        from lamo_ray.domains.atari.dqn_replay import is_dqn_replay_source, load_dqn_replay

        return load_dqn_replay(source) if is_dqn_replay_source(source) else None

    def ensure_dataset(self, dataset_id: str, seed: int = 0) -> None:
        """`lamo_ray.domains.atari.collect.collect_atari` at its default size unless ``dataset_id``
        (``lamo/atari/<game>-vN``) is in the Minari store.

        Raises:
            ValueError: ``dataset_id`` names no known game.
        """
        if in_store(dataset_id):
            return
        from lamo_ray.domains.atari.collect import collect_atari

        name = self.local_name(dataset_id, list(GAMES))
        log.info("generating %s (scripted %s policy + epsilon-random actions, seed %d); first use only",
                 dataset_id, GAMES[name].name, seed)
        collect_atari(GAMES[name].name, dataset_id, seed=seed)

    def add_collect_command(self, commands: argparse._SubParsersAction) -> None:
        from lamo_ray.domains.atari.collect import add_collect_arguments

        add_collect_arguments(commands.add_parser(
            self.name, help="RAM-scripted Atari policy + epsilon-random actions -> Minari dataset"))


ATARI = register(AtariDomain())
