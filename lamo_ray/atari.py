"""What is truly Atari-specific: DT's preprocessing, the games we know, and RAM-scripted behaviour policies.

Everything else (data loading, sampling, the model, training, rollouts) is shared with the other
domains; an Atari experiment is a sweep file (``sweeps/atari*.yaml``).

Environment (`make_atari_env`, used by `lamo_ray.envs.make_env` for ``ALE/*`` and ``*NoFrameskip-v4``
ids): the ALE env without its own frame skip and without sticky actions, wrapped in gymnasium's
``AtariPreprocessing`` (84 x 84 grayscale, frame skip 4 with max-pooling over the last two frames,
up to 30 no-op starts, no terminal on life loss) and ``FrameStackObservation`` (4 frames):
observations ``(4, 84, 84)`` uint8, discrete actions. At episode start the frame history is the
first frame repeated for evaluation (``frame_stack_padding="reset"``: LaMo evaluates on
d4rl-atari's ``FrameStack``, which does this; REFERENCE.md "Data", Atari) and zeros for collection
(``"zero"``: the layout of the DQN-replay training data, whose stacks LaMo's buffer zero-pads too).
No sticky actions, as DT's and LaMo's Atari evaluation.

Behaviour policies (`ram_policy`) read the emulator RAM (addresses from the AtariARI annotations,
checked here by stepping the games):

- Breakout: the paddle follows the ball's x (RAM 99 ball x, 101 ball y, 72 paddle x); FIRE when no
  ball is in play.
- Pong: the paddle follows the ball's y (RAM 51 paddle y, 54 ball y), with a dead band of 12 so it
  does not oscillate (the paddle moves ~20 RAM units per agent step).
- Qbert: no RAM heuristic (navigating the pyramid needs more than a few lines): uniformly random
  moves (UP/RIGHT/LEFT/DOWN), each held for 1-4 steps ("sticky" random).

`EpsilonMix` mixes a policy with uniformly random actions (probability epsilon per step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

# DT Atari preprocessing (FACTS.md "Environments"; REFERENCE.md "Model", Atari).
PREPROCESSING: dict[str, Any] = {"noop_max": 30, "frame_skip": 4, "screen_size": 84, "grayscale_obs": True,
                                 "terminal_on_life_loss": False}
FRAME_STACK = 4
OBSERVATION_SHAPE = (FRAME_STACK, 84, 84)

# REFERENCE.md "Model", Atari: (random, human) returns by lower-case game name;
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
            ``<Game>NoFrameskip-v4``. ale-py must be registered (`lamo_ray.envs.make_env` does it).
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


# --------------------------------------------------------------------------- behaviour policies

RamPolicy = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class BreakoutPaddle:
    """Breakout actions: 0 NOOP, 1 FIRE, 2 RIGHT, 3 LEFT. ``offset``: ball x minus paddle x when
    centred (10, tuned here: mean return ~60 in ~1200 steps vs ~2 for random actions)."""

    offset: int = 10
    dead_band: int = 2

    def __call__(self, ram: np.ndarray) -> int:
        ball_x, ball_y, paddle_x = int(ram[99]), int(ram[101]), int(ram[72])
        if ball_y == 0:
            return 1
        error = ball_x - (paddle_x + self.offset)
        return 2 if error > self.dead_band else 3 if error < -self.dead_band else 0


@dataclass(frozen=True)
class PongPaddle:
    """Pong actions: 0 NOOP, 2 RIGHT (paddle up), 3 LEFT (paddle down)."""

    offset: int = 0
    dead_band: int = 12

    def __call__(self, ram: np.ndarray) -> int:
        paddle_y, ball_y = int(ram[51]), int(ram[54])
        if ball_y == 0:
            return 0
        error = ball_y - (paddle_y + self.offset)
        return 3 if error > self.dead_band else 2 if error < -self.dead_band else 0


class StickyRandomMoves:
    """Qbert: a uniformly random move (2 UP, 3 RIGHT, 4 LEFT, 5 DOWN) held for 1-4 steps."""

    moves = (2, 3, 4, 5)

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._action, self._left = 0, 0

    def __call__(self, ram: np.ndarray) -> int:
        if self._left == 0:
            self._action, self._left = int(self._rng.choice(self.moves)), int(self._rng.integers(1, 5))
        self._left -= 1
        return self._action


def ram_policy(name: str, rng: np.random.Generator) -> RamPolicy:
    """The scripted behaviour policy of game ``name`` (see `GAMES` [name].policy)."""
    key = game(name).name.lower()
    if key == "breakout":
        return BreakoutPaddle()
    if key == "pong":
        return PongPaddle()
    return StickyRandomMoves(rng)


class EpsilonMix:
    """With probability ``epsilon`` a uniformly random action of ``n_actions``, else ``policy(ram)``."""

    def __init__(self, policy: RamPolicy, epsilon: float, n_actions: int, rng: np.random.Generator):
        self.policy, self.epsilon, self.n_actions, self._rng = policy, epsilon, n_actions, rng

    def __call__(self, ram: np.ndarray) -> int:
        if self.epsilon > 0 and self._rng.random() < self.epsilon:
            return int(self._rng.integers(self.n_actions))
        return int(self.policy(ram))


def run_ram_episode(env: gym.Env, policy: RamPolicy, seed: int) -> dict[str, np.ndarray]:
    """One episode of ``policy`` (a function of the RAM) on the preprocessed ``env`` from
    ``reset(seed=seed)``, until terminated or truncated.

    Returns Minari episode arrays: observations ``(T+1, 4, 84, 84)`` uint8, actions ``(T,)`` int64,
    rewards ``(T,)`` float32, terminations / truncations ``(T,)`` bool.
    """
    from lamo_ray.collect import run_episode  # collect imports this module

    ale = env.unwrapped.ale
    return run_episode(env, lambda obs: policy(ale.getRAM()), seed, action_dtype=np.int64, reward_dtype=np.float32)
