"""The TD3 critic of ODT-TD3 (the authors' ``critic.py`` and ``trainer.py``;
docs/references/odt_td3.md "Critic and TD3").

- Twin Q networks, each an MLP 256-256 with ReLU, optionally a parameter-free LayerNorm after each
  hidden layer (the paper's setting for every domain but MuJoCo). Input: the (normalised state,
  action) of one context position, not the DT context.
- Target: ``r + gamma (1 - done) min(Q1', Q2')(s', a')``, ``a'`` from the target (EMA) DT on the
  window shifted by one step, plus N(0, ``noise``^2) clipped to +-``noise_clip``, clamped to the
  action range.
- Actor's RL term: ``-Q1(s_t, a_t)`` of the DT's actions, averaged over the real (unpadded) positions.
- Soft update: ``target <- tau source + (1 - tau) target`` (tau 0.005), for the target critic and the
  target DT, after each actor update.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _mlp(in_dim: int, hidden: int, layer_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d in (in_dim, hidden):
        layers += [nn.Linear(d, hidden)]
        if layer_norm:
            layers += [nn.LayerNorm(hidden, elementwise_affine=False)]  # parameter-free, as the authors'
        layers += [nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, 1))


class TwinQ(nn.Module):
    """Q1 and Q2 over (state, action).

    Args:
        state_dim, act_dim: sizes of one position's state and action.
        hidden: width of both hidden layers (256).
        layer_norm: LayerNorm (no parameters) after each hidden layer.

    ``forward(states (..., S), actions (..., A))`` returns ``(q1, q2)``, each ``(...)``.
    """

    def __init__(self, state_dim: int, act_dim: int, hidden: int = 256, layer_norm: bool = True):
        super().__init__()
        self.q1 = _mlp(state_dim + act_dim, hidden, layer_norm)
        self.q2 = _mlp(state_dim + act_dim, hidden, layer_norm)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([states, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def target_actions(next_actions: torch.Tensor, noise: float, noise_clip: float,
                   low: float | torch.Tensor = -1.0, high: float | torch.Tensor = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """TD3's target policy smoothing: ``clamp(a' + clip(N(0, noise^2), -noise_clip, noise_clip), low, high)``."""
    eps = torch.randn(next_actions.shape, generator=generator, device=next_actions.device) * noise
    return torch.clamp(next_actions + eps.clamp(-noise_clip, noise_clip), low, high)


def critic_loss(critic: TwinQ, target_critic: TwinQ, states: torch.Tensor, actions: torch.Tensor,
                rewards: torch.Tensor, next_states: torch.Tensor, next_actions: torch.Tensor,
                dones: torch.Tensor, mask: torch.Tensor, gamma: float) -> tuple[torch.Tensor, dict[str, float]]:
    """TD3's critic loss over the real positions of a batch of context windows.

    Shapes: ``states``/``next_states`` (B, K, S), ``actions`` (data) and ``next_actions`` (already
    smoothed, `target_actions`) (B, K, A), ``rewards``/``dones``/``mask`` (B, K); ``mask`` 1 where the
    position and its successor are real.

    Returns the loss (sum of both Q's mean squared TD errors) and logging values (``q1_mean``,
    ``target_mean``).
    """
    with torch.no_grad():
        tq1, tq2 = target_critic(next_states, next_actions)
        target = rewards + gamma * (1.0 - dones) * torch.minimum(tq1, tq2)
    q1, q2 = critic(states, actions)
    real = mask > 0
    loss = ((q1 - target)[real] ** 2).mean() + ((q2 - target)[real] ** 2).mean()
    return loss, {"q1_mean": float(q1.detach()[real].mean()), "target_mean": float(target[real].mean())}


def actor_rl_loss(critic: TwinQ, states: torch.Tensor, predicted_actions: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """``-Q1(s_t, a_t)`` of the DT's predicted actions, mean over real positions (``mask`` > 0).
    The gradient reaches the DT through ``predicted_actions`` (the critic is not stepped by it)."""
    q1, _ = critic(states, predicted_actions)
    return -q1[mask > 0].mean()


def td3_actor_loss(critic: TwinQ, states: torch.Tensor, predicted_actions: torch.Tensor, actions: torch.Tensor,
                   mask: torch.Tensor, sup_coeff: float, rl_coeff: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The TD3 actor's loss, the one place it is written: ``sup_coeff x`` masked MSE of the predicted
    actions (B, K, A) to the data's ``+ rl_coeff x`` `actor_rl_loss` (the authors' ``trainer.py``:
    ``actor_sup_coeff * sup_loss + actor_rl_coeff * rl_loss``). Used by the offline steps of
    ``online.rl_from_start`` and by every online actor update. Returns (total, MSE, -Q1), scalars."""
    from lamo_ray.model import action_loss

    sup = action_loss(predicted_actions, actions, mask, discrete=False)
    rl = actor_rl_loss(critic, states, predicted_actions, mask)
    return sup_coeff * sup + rl_coeff * rl, sup, rl


def ema_copy(module: nn.Module) -> nn.Module:
    """A frozen copy to serve as a target network."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- tau source + (1 - tau) target``, parameter by parameter (buffers copied)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)
