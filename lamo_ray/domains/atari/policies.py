"""RAM-scripted Atari behaviour policies for the local Atari datasets (`lamo_ray.domains.atari.collect`).

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

import gymnasium as gym
import numpy as np

from lamo_ray.domains.atari import game
from lamo_ray.episodes import run_episode

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
    ale = env.unwrapped.ale
    return run_episode(env, lambda obs: policy(ale.getRAM()), seed, action_dtype=np.int64, reward_dtype=np.float32)
