"""The Decision Transformer's token embeddings and deterministic action heads (split out of
`lamo_ray.model`, issue 29; `lamo_ray.model` re-exports every name).

- `MLPEmbedding` (LaMo's ``--mlp_embedding``), `ImageEncoder` (image states, LaMo Atari),
  `ActionEmbedding` (discrete actions); `_token_embedding` picks MLP or Linear for a vector input;
- `_action_head`: the deterministic action head (the stochastic one is `lamo_ray.heads.TanhGaussianHead`).

Shapes: B batch, K context length in timesteps, h hidden size, A action dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPEmbedding(nn.Module):
    """LaMo ``--mlp_embedding``: Linear(in,h) -> GELU -> Linear(h,h) plus a residual from the first Linear.

    (..., in) -> (..., h). docs/references/lamo.md "Model".
    """

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        return hidden + self.fc2(F.gelu(hidden))


class ImageEncoder(nn.Module):
    """LaMo's Atari state encoder: (B, K, C, H, W) uint8 or float in [0, 255] -> (B, K, h).

    Conv(32, 8, stride 4) -> ReLU -> Conv(64, 4, 2) -> ReLU -> Conv(64, 3, 1) -> ReLU -> flatten ->
    Linear(h), on pixels / 255 (docs/references/lamo.md "Atari"; LaMo ``experiment-atari/model.py``
    ``cnn(...)`` with no output activation, where the original DT ended with Tanh). With
    ``kind="mlp"`` (LaMo's ``--mlp_embedding``) a residual MLP block follows (`MLPEmbedding` (h, h)).
    Frames are converted to float a batch at a time, here.

    Raises:
        ValueError: frames smaller than the 36 x 36 the three convolutions need.
    """

    def __init__(self, state_shape: tuple[int, int, int], hidden_size: int, kind: str = "linear"):
        super().__init__()
        channels, height, width = state_shape
        out_h, out_w = self._conv_out(height), self._conv_out(width)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"image state {state_shape} is too small for the image encoder (needs H, W >= 36)")
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Linear(64 * out_h * out_w, hidden_size)
        self.mlp = MLPEmbedding(hidden_size, hidden_size) if kind == "mlp" else nn.Identity()

    @staticmethod
    def _conv_out(size: int) -> int:
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            size = (size - kernel) // stride + 1
        return size

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b, k = states.shape[:2]
        frames = states.reshape(b * k, *states.shape[2:]).to(self.fc.weight.dtype) / 255.0  # (B*K, C, H, W)
        return self.mlp(self.fc(self.conv(frames))).reshape(b, k, -1)


class ActionEmbedding(nn.Module):
    """Discrete actions (..., ) long -> (..., h), LaMo Atari: nn.Embedding for "linear"; for "mlp"
    (``ResidualEmbedBlock``) Embedding -> GELU -> Linear(h, h) plus a residual from the Embedding."""

    def __init__(self, act_dim: int, hidden_size: int, kind: str):
        super().__init__()
        self.embedding = nn.Embedding(act_dim, hidden_size)
        self.fc = nn.Linear(hidden_size, hidden_size) if kind == "mlp" else None

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(actions)
        return hidden if self.fc is None else hidden + self.fc(F.gelu(hidden))


def _token_embedding(in_dim: int, hidden_size: int, kind: str) -> nn.Module:
    """(..., in) -> (..., h): `MLPEmbedding` for "mlp", a Linear for "linear" (DT)."""
    return MLPEmbedding(in_dim, hidden_size) if kind == "mlp" else nn.Linear(in_dim, hidden_size)


def _action_head(hidden_size: int, act_dim: int, kind: str, discrete: bool, tanh: bool) -> nn.Module:
    """(..., h) -> (..., A). Continuous: "mlp": Linear -> GELU -> Linear (LaMo); "linear": Linear (DT);
    then a Tanh if ``tanh`` (`lamo_ray.config.ModelConfig.bounded_actions`: by default DT's yes, LaMo's
    no). Discrete (LaMo Atari ``predict_action``, whatever the embedding): Linear + Tanh, so the logits
    lie in [-1, 1]."""
    if discrete:
        return nn.Sequential(nn.Linear(hidden_size, act_dim), nn.Tanh())
    if kind == "mlp":
        layers = [nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, act_dim)]
    else:
        layers = [nn.Linear(hidden_size, act_dim)]
    return nn.Sequential(*layers, *([nn.Tanh()] if tanh else []))
