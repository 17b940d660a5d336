"""L2P ("Learning to Prompt", Wang et al. 2022) as L2M's baseline: a pool of prompts with learned keys,
prepended to the input of every transformer layer of a frozen MDDT (docs/references/l2m.md "Baselines";
ml-jku/L2M ``prompt/l2p.py`` ``L2PPrompt`` with ``prompt_kwargs/l2p.yaml``, and
``multiprompt_decision_transformer_model.py``'s per-layer prompts).

- ``size`` prompts (L2M: 100); each has a key (``hidden`` numbers) and, for every layer, ``length``
  tokens of ``hidden`` numbers (L2M: 5), all initialised uniform(-1, 1).
- Selection (`PromptPool.select`): the query is the masked mean of the state tokens' input embeddings
  (as L2M's pool, `lamo_ray.pools.modulation`); the ``top_k`` keys (L2M: 5) with the highest cosine
  similarity choose the sample's prompts, with the same count penalty from the second task on
  (`lamo_ray.pools.modulation.KeyedPool`). The chosen prompts are concatenated in similarity order
  (``top_k x length`` tokens per layer) and dropped out in training (L2M's default 0.1).
- Deep prompts (`prompted_trunk`): at every GPT-2 block the layer's prompt tokens are put in front of
  the sequence's hidden states (the previous layer's prompt outputs are dropped), every real token
  attends to them, and the prompts attend causally among themselves; after the last block only the
  sequence's positions are kept, then the final LayerNorm. As L2M's ``prune_hidden_states`` loop.
- Key loss (`PromptPool.key_loss`): ``- sum over the k chosen keys of cos(key, query)``, averaged over
  the batch (L2M's ``reduce_sim``), weighted 0.5 in the total.
- The model stays frozen; only prompts and keys train.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lamo_ray.pools.modulation import KeyedPool


class PromptPool(KeyedPool):
    """Keys and per-layer prompts (module docstring).

    Args:
        hidden: the trunk's hidden size h. n_layer: its blocks.
        size, length, top_k: prompts in the pool, tokens per prompt and layer, prompts per sample.
        dropout: on the selected prompts, in training.

    Raises:
        ValueError: a size, length, top_k or n_layer below 1, or top_k above size.
    """

    def __init__(self, hidden: int, n_layer: int, size: int = 100, length: int = 5, top_k: int = 5,
                 dropout: float = 0.1):
        if min(size, length, top_k, n_layer) < 1 or top_k > size:
            raise ValueError(f"continual.prompt_pool: need size, length, top_k, n_layer >= 1 and top_k <= size, got "
                             f"{size}, {length}, {top_k}, {n_layer}")
        super().__init__(size, hidden)
        self.length, self.top_k, self.n_layer = length, top_k, n_layer
        self.prompts = nn.Parameter(torch.empty(size, n_layer, length, hidden).uniform_(-1.0, 1.0))
        self.dropout = nn.Dropout(dropout)
        self.selected: torch.Tensor | None = None   # (B, top_k) prompts per sample for the next trunk pass

    def select(self, query: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """The ``top_k`` prompts of each sample, highest score first: ``query`` (B, h) -> (B, top_k) long.

        Raises:
            ValueError: ``task`` given (L2P has no task-id oracle here).
        """
        if task is not None:
            raise ValueError("L2P selects its prompts by their keys; it has no task-id oracle")
        chosen = self.scores(query).topk(self.top_k, dim=-1).indices
        self.count(chosen)
        self.selected = chosen
        return chosen

    def key_loss(self, query: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """``- mean over samples of sum_k cos(keys[chosen[:, k]], query)`` (L2M's ``reduce_sim``); the
        query is detached, so keys learn only through it."""
        return -F.cosine_similarity(self.keys[chosen], query.detach()[:, None, :], dim=-1).sum(-1).mean()

    def layer_prompts(self) -> torch.Tensor:
        """The selected prompts per layer: (B, n_layer, top_k x length, h), dropout applied in training.

        Raises:
            RuntimeError: no selection yet (call `select` first).
        """
        if self.selected is None:
            raise RuntimeError("PromptPool: no prompts selected for this pass (call select first)")
        p = self.prompts[self.selected]                      # (B, top_k, n_layer, length, h)
        b, k, n, length, h = p.shape
        return self.dropout(p.permute(0, 2, 1, 3, 4).reshape(b, n, k * length, h))


def prompted_trunk(trunk: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   prompts: torch.Tensor) -> torch.Tensor:
    """A GPT-2 trunk's forward with deep prompts (module docstring).

    Args:
        trunk: a ``GPT2Model`` without a position table (`lamo_ray.trunk._drop_position_table`), as the
            MDDT's.
        inputs_embeds: (B, T, h). attention_mask: (B, T), 1 real, 0 padding.
        prompts: (B, n_layer, P, h), P >= 0 prompt tokens per layer.

    Returns:
        (B, T, h): the final LayerNorm's output at the sequence's positions (with P = 0, what
        ``trunk(inputs_embeds=..., attention_mask=...).last_hidden_state`` gives).

    Raises:
        ValueError: a trunk that is not GPT-2's without a position table, an attention other than
            'sdpa' / 'eager', or prompts for another number of layers.
    """
    from lamo_ray.trunk import NoPositionEmbedding

    blocks = getattr(trunk, "h", None)
    if blocks is None or not hasattr(trunk, "ln_f"):
        raise ValueError(f"{type(trunk).__name__}: L2P's prompts need a GPT-2 trunk (blocks h[i], ln_f)")
    if not isinstance(getattr(trunk, "wpe", None), NoPositionEmbedding):
        raise ValueError("L2P's prompts need the MDDT's trunk without a position table (positions would shift)")
    if prompts.shape[1] != len(blocks):
        raise ValueError(f"prompts for {prompts.shape[1]} layers, the trunk has {len(blocks)}")
    b, t, _ = inputs_embeds.shape
    p = prompts.shape[2]
    keep = torch.cat([attention_mask.new_ones(b, p), attention_mask], dim=1).bool()        # (B, P + T) keys
    causal = torch.ones(p + t, p + t, dtype=torch.bool, device=inputs_embeds.device).tril()
    allowed = causal[None] & keep[:, None, :]
    allowed |= torch.eye(p + t, dtype=torch.bool, device=allowed.device)[None]   # a padded query sees itself
    impl = getattr(trunk.config, "_attn_implementation", "eager")
    if impl == "sdpa":     # the mask format each attention takes (as transformers' own masks)
        mask = allowed[:, None]                                                         # (B, 1, P+T, P+T) bool
    elif impl == "eager":
        mask = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=allowed.device)
        mask = mask.masked_fill(~allowed, torch.finfo(inputs_embeds.dtype).min)[:, None]   # additive
    else:
        raise ValueError(f"L2P's prompts support the trunk's 'sdpa' and 'eager' attention, not {impl!r}")
    hidden = trunk.drop(inputs_embeds)
    for i, block in enumerate(blocks):
        hidden = torch.cat([prompts[:, i].to(hidden.dtype), hidden[:, -t:]], dim=1)
        out = block(hidden, attention_mask=mask, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out
    return trunk.ln_f(hidden[:, -t:])
