"""LoRA on the trunk's attention projections (split out of `lamo_ray.model`, issue 29; `lamo_ray.model`
re-exports every name).

- `lora_target_modules`: which attention projections peft's LoRA adapts (GPT-2 or Llama family).
- `SeparateQKV`: GPT-2's fused QKV projection ``c_attn`` as three projections, so that peft gives Q, K
  and V their own adapters as loralib's ``MergedLinear`` does in LaMo's code (`separate_qkv`), fused
  back when LoRA is merged for the rollout actors (`fuse_qkv`).

`lamo_ray.model.DecisionTransformer` wires them to peft (``model.finetune: lora``).
"""

from __future__ import annotations

import torch
from torch import nn


def lora_target_modules(backbone: nn.Module, fused_qkv: bool = False) -> tuple[list[str], bool]:
    """LoRA targets and peft's ``fan_in_fan_out`` for a backbone's attention projections.

    GPT-2 (docs/references/lamo.md "LoRA": c_proj and the MLPs get no LoRA): with ``fused_qkv`` the fused QKV
    ``Conv1D`` ``c_attn``, stored (in, out) so ``fan_in_fan_out=True`` (one A/B for Q, K and V:
    LaMo's Atari code); without it the three projections of `SeparateQKV` (``c_attn.q``, ``.k``,
    ``.v``; `separate_qkv` must have been applied), each with its own A/B (LaMo's D4RL code).
    Llama family: ``q_proj, k_proj, v_proj`` (separate already).

    Raises:
        ValueError: neither layout is present, or ``fused_qkv`` on a backbone without a fused projection.
    """
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    if any(isinstance(m, SeparateQKV) for m in backbone.modules()):
        if fused_qkv:
            raise ValueError("c_attn was already split into q, k, v (separate_qkv); fused_qkv needs the fused c_attn")
        return ["c_attn.q", "c_attn.k", "c_attn.v"], False
    if "c_attn" in leaf_names:
        if not fused_qkv:
            raise ValueError("GPT-2's c_attn is fused: apply separate_qkv first for separate Q/K/V adapters")
        return ["c_attn"], True
    if {"q_proj", "k_proj", "v_proj"} <= leaf_names:
        if fused_qkv:
            raise ValueError(f"model.lora.fused_qkv: {type(backbone).__name__} has separate q/k/v projections and no "
                             "fused QKV projection to share one adapter; set model.lora.fused_qkv: false")
        return ["q_proj", "k_proj", "v_proj"], False
    raise ValueError(f"{type(backbone).__name__}: no GPT-2 'c_attn' nor Llama-style 'q_proj/k_proj/v_proj' "
                     "attention projections to put LoRA on")


class SeparateQKV(nn.Module):
    """GPT-2's fused QKV projection ``c_attn`` as three projections: (..., h) -> (..., 3h), Q|K|V.

    Holds the same weights as the ``Conv1D`` it replaces, as ``nn.Linear`` ``q``, ``k`` and ``v``
    (h -> h each), and gives the same output (up to float rounding). It exists so that peft LoRA
    can give Q, K and V each their own rank-r A and B, which is LaMo's D4RL adapter: loralib
    ``MergedLinear(enable_lora=[True, True, True])`` on ``c_attn`` (docs/references/lamo.md "LoRA";
    ``models/trajectory_gpt2_LoRA.py``), 3 x 2 x r x h LoRA parameters per layer. peft on the fused
    ``c_attn`` would share one A/B between them (r x h + 3h x r). Where we differ: loralib draws one
    LoRA-dropout mask for the shared input, peft one per projection.
    """

    def __init__(self, fused: nn.Module):
        super().__init__()
        weight, bias = fused.weight, fused.bias          # Conv1D: weight (h, 3h) stored (in, out), bias (3h,)
        h_in, out = weight.shape
        h = out // 3
        kwargs = {"device": weight.device, "dtype": weight.dtype}
        self.q, self.k, self.v = (nn.Linear(h_in, h, **kwargs) for _ in range(3))
        with torch.no_grad():
            for i, proj in enumerate((self.q, self.k, self.v)):
                proj.weight.copy_(weight[:, i * h:(i + 1) * h].T)
                proj.bias.copy_(bias[i * h:(i + 1) * h])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.q(x), self.k(x), self.v(x)), dim=-1)

    def fused(self) -> nn.Module:
        """The equivalent GPT-2 ``Conv1D`` (weights copied): the inverse of the constructor, used after
        LoRA is merged so the rollout actors get stock GPT-2 weights."""
        from transformers.pytorch_utils import Conv1D

        h_out, h_in = self.q.weight.shape
        conv = Conv1D(3 * h_out, h_in).to(device=self.q.weight.device, dtype=self.q.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([p.weight.T for p in (self.q, self.k, self.v)], dim=1))
            conv.bias.copy_(torch.cat([p.bias for p in (self.q, self.k, self.v)]))
        return conv


def separate_qkv(backbone: nn.Module) -> int:
    """Replace every GPT-2 ``c_attn`` (fused QKV ``Conv1D``) under ``backbone`` by `SeparateQKV`, in
    place; returns how many were replaced (0 for Llama-family backbones, whose q/k/v are separate)."""
    from transformers.pytorch_utils import Conv1D

    count = 0
    for module in list(backbone.modules()):
        fused = getattr(module, "c_attn", None)
        if isinstance(fused, Conv1D) and fused.weight.shape[1] == 3 * fused.weight.shape[0]:
            module.c_attn = SeparateQKV(fused)
            count += 1
    return count


def fuse_qkv(backbone: nn.Module) -> None:
    """Undo `separate_qkv` in place: every `SeparateQKV` (LoRA already merged) back to a ``Conv1D``."""
    for module in list(backbone.modules()):
        if isinstance(getattr(module, "c_attn", None), SeparateQKV):
            module.c_attn = module.c_attn.fused()
