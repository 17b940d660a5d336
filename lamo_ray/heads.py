"""Online DT's stochastic action head (``decision_transformer.py`` ``DiagGaussianActor``, trainer's
``loss_fn``; docs/references/odt_td3.md "ODT stochastic head"), with torch.distributions' own tanh transform.

- A tanh-squashed Gaussian per action dimension: mean from one Linear, log-std from another through
  tanh, mapped into [-5, 2]; orthogonal initialisation, zero biases.
- Loss = -(log-likelihood of the data's actions + T x entropy), entropy estimated from one sample;
  the temperature T = exp(log T) (initial 0.1) is learned toward the target entropy -act_dim with
  ``T x (entropy - target).detach()``. Data actions are clamped into (-1, 1) first (tanh's range).
  Likelihood and entropy are averaged over the real (unpadded) positions; Online DT averages the
  entropy over the padded ones too.

`lamo_ray.model` builds it for ``model.action_head: tanh_gaussian``; the online phase's losses use it
(`lamo_ray.online.loop`), and `lamo_ray.online.stochastic` re-exports it from here.
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

LOG_STD_BOUNDS = (-5.0, 2.0)
ACTION_EPS = 1e-6  # data actions kept inside tanh's open range


class TanhGaussianHead(nn.Module):
    """Hidden states (..., H) -> a tanh-squashed diagonal Gaussian over (..., A).

    Args:
        hidden: H.
        act_dim: A.
        init_temperature: T at the start (Online DT: 0.1).
    """

    def __init__(self, hidden: int, act_dim: int, init_temperature: float = 0.1):
        super().__init__()
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        for layer in (self.mu, self.log_std):
            nn.init.orthogonal_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.target_entropy = -float(act_dim)

    def forward(self, h: torch.Tensor) -> D.TransformedDistribution:
        low, high = LOG_STD_BOUNDS
        log_std = low + 0.5 * (high - low) * (torch.tanh(self.log_std(h)) + 1.0)
        return D.TransformedDistribution(D.Normal(self.mu(h), log_std.exp()), [D.TanhTransform(cache_size=1)])

    @staticmethod
    def mean_action(dist: D.TransformedDistribution) -> torch.Tensor:
        """tanh of the Gaussian's mean: the action used for evaluation (and for the critic's target)."""
        return torch.tanh(dist.base_dist.loc)

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def losses(self, dist: D.TransformedDistribution, actions: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(policy loss, temperature loss, logging values) for data ``actions`` (..., A) at real
        positions ``mask`` (...). The policy loss uses the temperature detached; the temperature
        loss only moves the temperature."""
        real = mask > 0
        clamped = actions.clamp(-1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
        log_likelihood = dist.log_prob(clamped).sum(-1)[real].mean()
        sample = dist.rsample()
        entropy = -dist.log_prob(sample).sum(-1)[real].mean()
        temperature = self.temperature()
        policy_loss = -(log_likelihood + temperature.detach() * entropy)
        temperature_loss = temperature * (entropy - self.target_entropy).detach()
        return policy_loss, temperature_loss, {"nll": -log_likelihood.item(), "entropy": entropy.item(),
                                               "temperature": temperature.item()}
