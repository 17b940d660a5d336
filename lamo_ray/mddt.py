"""L2M's multi-domain Decision Transformer (MDDT; "Learning to Modulate pre-trained Models in RL",
docs/references/l2m.md "Multi-domain Decision Transformer"; ml-jku/L2M
``discrete_decision_transformer_model.py``, ``minmax_tokenizer.py``).

Tasks of different domains train in one model without task ids:

- states zero-padded on the right into one shared state space (`STATE_DIM` 204, Meta-World's 39
  numbers first) and embedded by one Linear;
- actions zero-padded to `ACTION_DIM` (6) with an action mask that drops the padded dims from the
  loss; each dimension is a token: 64 bins over [-1, 1] (`ActionTokenizer`: floor, clamped;
  detokenised to the bin's lower edge), embedded by one shared table (the last index is padding);
- per timestep the tokens ``[s, rtg, a_1 .. a_A, r]`` (A + 3), the timestep embedding added to each,
  then a LayerNorm; the trunk is any Hugging Face causal LM taking ``inputs_embeds`` (random init as
  L2M, or pre-trained as LaMo) without a position table (the timestep embedding is the only position
  signal, as L2M's all-zero position ids);
- autoregressive over action dimensions: ``a_1``'s logits are read at the rtg token, ``a_i``'s at
  ``a_{i-1}``'s token (teacher forcing in training; at inference one dimension after another, with
  the trunk's key/value cache or without: `predict_action`), one shared head Linear(h, 64);
- loss: cross-entropy on the real action tokens only (`MultiDomainDecisionTransformer.loss`).

Returns-to-go and rewards enter divided by the data's scale (L2M: 200 for Meta-World, 100 for DMC).
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from lamo_ray.config import ModelConfig
from lamo_ray.trunk import _drop_position_table, _use_fast_dropout, build_backbone

logger = logging.getLogger(__name__)

STATE_DIM = 204      # L2M's shared state space (Meta-World 39 + the DMC slots)
ACTION_DIM = 6       # L2M's padded action size
ACTION_BINS = 64     # L2M's action tokens per dimension


# transformers 5.x renamed the key/value cache argument and output from ``past_key_values`` to ``cache``
_CACHE_ARG = "cache" if "cache" in inspect.signature(transformers.GPT2Model.forward).parameters else "past_key_values"


def _cache_of(output):
    return output["cache"] if "cache" in output else output["past_key_values"]


class ActionTokenizer:
    """L2M's ``MinMaxTokenizer``: ``bins`` equal bins over [low, high]; a value's token is
    ``floor((a - low) / width)`` clamped to [0, bins - 1]; a token's value is its bin's lower edge."""

    def __init__(self, bins: int = ACTION_BINS, low: float = -1.0, high: float = 1.0):
        if bins < 2 or not low < high:
            raise ValueError(f"need bins >= 2 and low < high, got {bins}, {low}, {high}")
        self.bins, self.low, self.high = bins, low, high
        self.width = (high - low) / bins

    def tokenize(self, actions: torch.Tensor) -> torch.Tensor:
        """Float actions (any shape) -> long tokens of the same shape, in [0, bins)."""
        return torch.floor((actions - self.low) / self.width).long().clamp(0, self.bins - 1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Long tokens -> float32 values (the bins' lower edges)."""
        return tokens.float() * self.width + self.low


def pad_last(x: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """Zero-pad the last dimension of ``x`` on the right to ``size``.

    Raises:
        ValueError: ``x`` is already wider (the message names ``what`` and both sizes).
    """
    if x.shape[-1] > size:
        raise ValueError(f"{what} has {x.shape[-1]} dimensions, more than the multi-domain model's {size}; "
                         f"raise continual.mddt.{'state_dim' if what == 'state' else 'action_dim'}")
    return F.pad(x, (0, size - x.shape[-1])) if x.shape[-1] < size else x


class MultiDomainDecisionTransformer(nn.Module):
    """L2M's MDDT (module docstring).

    Args:
        cfg: backbone (``cfg.backbone``, ``pretrained``, sizes, dropout; ``finetune`` 'full' or
            'frozen' here: L2M's modulators are `lamo_ray.continual`'s business).
        max_ep_len: timestep table size.
        state_dim, act_dim, bins: the padded state and action sizes and the action bins.
        action_dim_embedding: add a learned embedding of the dimension index to each action token
            (L2M's ``a_pos_embds``, off in its configs: without it, and without a position table, the
            trunk must infer which dimension a token is from the tokens before it).
        load_weights, backbone_config: as `lamo_ray.model.build_backbone`.

    Raises:
        BackboneUnavailableError: see `build_backbone`.
        ValueError: ``cfg.finetune`` 'lora' (not an MDDT mode), a learned position table we cannot drop.
    """

    def __init__(self, cfg: ModelConfig, max_ep_len: int, state_dim: int = STATE_DIM, act_dim: int = ACTION_DIM,
                 bins: int = ACTION_BINS, action_dim_embedding: bool = False, load_weights: bool = True,
                 backbone_config: dict | None = None):
        super().__init__()
        if cfg.finetune == "lora":
            raise ValueError("model.finetune 'lora' is not an MDDT mode: pre-train with 'full' (L2M), and fine-tune "
                             "continually with a continual method (L2M's modulators, single LoRA, ...)")
        backbone = build_backbone(cfg, load_weights=load_weights, vocab_size=None if cfg.pretrained else 1,
                                  base_config=backbone_config)
        self.backbone_base_config: dict = backbone.lamo_base_config
        _drop_position_table(backbone.base_model)
        if cfg.finetune == "frozen":
            backbone.requires_grad_(False)
        else:
            backbone.get_input_embeddings().requires_grad_(False)
            backbone.get_output_embeddings().requires_grad_(False)
        self.backbone = backbone
        self.state_dim, self.act_dim, self.bins = state_dim, act_dim, bins
        self.tokenizer = ActionTokenizer(bins)
        h = self.hidden_size = backbone.config.hidden_size
        self.embed_state = nn.Linear(state_dim, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_reward = nn.Linear(1, h)
        self.pad_token = bins
        self.embed_action = nn.Embedding(bins + 1, h, padding_idx=bins)
        self.embed_action_dim = nn.Embedding(act_dim, h) if action_dim_embedding else None
        self.embed_timestep = nn.Embedding(max_ep_len, h)
        self.embed_ln = nn.LayerNorm(h)
        self.action_head = nn.Linear(h, bins)
        self.pool = None            # L2M's modulation pool or L2P's prompt pool, once `attach_pool` adds one
        self.prompted = False       # the pool is L2P's: the trunk runs with its prompts (`prompted_trunk`)
        self.pool_query: torch.Tensor | None = None
        _use_fast_dropout(self)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        logger.info("MultiDomainDecisionTransformer(%s, %s): %d trainable / %d total parameters", cfg.backbone,
                    "pretrained" if cfg.pretrained else "random init", trainable,
                    sum(p.numel() for p in self.parameters()))

    def attach_pool(self, pool) -> None:
        """Modulate the trunk with L2M's pool (`lamo_ray.continual.pool.ModulationPool`) or prompt it with
        L2P's (`lamo_ray.continual.prompts.PromptPool`), and freeze everything else: from now on only the
        pool trains, and every forward selects per sample from the query of its states (or, for L2M's
        pool, the task index given as ``task``)."""
        from lamo_ray.pools.modulation import attach_pool
        from lamo_ray.pools.prompts import PromptPool

        self.requires_grad_(False)
        self.prompted = isinstance(pool, PromptPool)
        if not self.prompted:
            attach_pool(self.trunk, pool)
        self.pool = pool
        pool.requires_grad_(True)

    def _select(self, x: torch.Tensor, attention_mask: torch.Tensor, task: torch.Tensor | None) -> None:
        """With a pool: the query (masked mean over real steps of the state tokens' embeddings, after
        the LayerNorm) and the selection of each sample's modulator for the next trunk passes."""
        if self.pool is None:
            return
        m = attention_mask[..., None].to(x.dtype)
        self.pool_query = (x[:, :, 0] * m).sum(1) / m.sum(1).clamp(min=1)
        self.pool.select(self.pool_query, task)

    @property
    def trunk(self) -> nn.Module:
        """The backbone without its LM head (GPT-2 ``transformer``, Llama ``model``)."""
        return self.backbone.base_model

    #: rollouts feed this model the rewards of its window (`lamo_ray.evaluate.Rollout`)
    uses_rewards = True
    stochastic = False

    @property
    def tokens_per_step(self) -> int:
        """``act_dim + 3``: s, rtg, the action dims, r."""
        return self.act_dim + 3

    def _embed(self, states, actions, returns_to_go, rewards, timesteps, attention_mask) -> torch.Tensor:
        """(B, K, act_dim + 3, h) token embeddings, timestep added, LayerNorm applied."""
        states = pad_last(states, self.state_dim, "state")
        actions = pad_last(actions, self.act_dim, "action")
        tokens = self.tokenizer.tokenize(actions)
        tokens = torch.where(attention_mask[..., None] > 0, tokens, self.pad_token)  # padded steps: pad token
        action_tokens = self.embed_action(tokens)
        if self.embed_action_dim is not None:
            action_tokens = action_tokens + self.embed_action_dim.weight
        parts = [self.embed_state(states)[:, :, None], self.embed_return(returns_to_go)[:, :, None],
                 action_tokens, self.embed_reward(rewards)[:, :, None]]
        x = torch.cat(parts, dim=2) + self.embed_timestep(timesteps)[:, :, None]
        return self.embed_ln(x)

    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                rewards: torch.Tensor, timesteps: torch.Tensor, attention_mask: torch.Tensor,
                task: torch.Tensor | None = None) -> torch.Tensor:
        """Action-token logits at every step.

        Args:
            states: (B, K, S), S <= state_dim (zero-padded here).
            actions: (B, K, A) float in [-1, 1], A <= act_dim (zero-padded here); tokenised here.
            returns_to_go, rewards: (B, K, 1), divided by the data's scale.
            timesteps: (B, K) long < max_ep_len. attention_mask: (B, K), 1 real, 0 (left) padding.
            task: (B,) long task indices for a pool's task-id oracle; None: the pool's keys select.

        Returns:
            (B, K, act_dim, bins) logits; dimension i at step t sees s_<=t, rtg_<=t, a_<t, r_<t and
            a_t's dimensions before i.
        """
        b, k = timesteps.shape
        x = self._embed(states, actions, returns_to_go, rewards, timesteps, attention_mask)
        self._select(x, attention_mask, task)
        n = self.tokens_per_step
        mask = attention_mask.long().repeat_interleave(n, dim=1)
        flat = x.reshape(b, k * n, self.hidden_size)
        if self.prompted:
            from lamo_ray.pools.prompts import prompted_trunk

            hidden = prompted_trunk(self.trunk, flat, mask, self.pool.layer_prompts())
        else:
            hidden = self.trunk(inputs_embeds=flat, attention_mask=mask, use_cache=False).last_hidden_state
        hidden = hidden.reshape(b, k, n, self.hidden_size)
        return self.action_head(hidden[:, :, 1:1 + self.act_dim])  # the rtg token, then a_1 .. a_{A-1}

    def loss(self, logits: torch.Tensor, actions: torch.Tensor, attention_mask: torch.Tensor,
             action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the action tokens over real steps and real action dimensions.

        Args:
            logits: (B, K, act_dim, bins) from `forward`.
            actions: (B, K, A) float targets, A <= act_dim (zero-padded here).
            attention_mask: (B, K). action_mask: (B, act_dim) or (act_dim,) bool, True for a sample's
                real dimensions; default the first A.

        Raises:
            ValueError: shapes that do not match.
        """
        targets = self.tokenizer.tokenize(pad_last(actions, self.act_dim, "action"))
        weight = self.loss_weight(actions, attention_mask, action_mask)
        if logits.shape[:3] != targets.shape or weight.shape != targets.shape:
            raise ValueError(f"loss: logits {tuple(logits.shape)}, actions {tuple(actions.shape)}, action_mask "
                             f"{None if action_mask is None else tuple(action_mask.shape)} do not match")
        ce = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), reduction="none").view_as(weight)
        return (ce * weight).sum() / weight.sum().clamp(min=1)

    def loss_weight(self, actions: torch.Tensor, attention_mask: torch.Tensor,
                    action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, act_dim) float: 1 for the action tokens `loss` averages over (real steps x real action
        dimensions), 0 elsewhere; its sum is the count a data-parallel rank shares the loss by
        (`lamo_ray.distributed.ddp_share`). Arguments as `loss`'s.

        Raises:
            ValueError: an ``action_mask`` that is not (B, act_dim) or (act_dim,)."""
        if action_mask is None:
            action_mask = torch.arange(self.act_dim, device=actions.device) < actions.shape[-1]
        if action_mask.dim() == 1:
            action_mask = action_mask.expand(attention_mask.shape[0], -1)
        if action_mask.shape != (attention_mask.shape[0], self.act_dim):
            raise ValueError(f"loss: action_mask {tuple(action_mask.shape)} is not (B, act_dim) = "
                             f"({attention_mask.shape[0]}, {self.act_dim})")
        return attention_mask[:, :, None].float() * action_mask[:, None, :].float()

    @torch.no_grad()
    def predict_action(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                       rewards: torch.Tensor, timesteps: torch.Tensor, attention_mask: torch.Tensor,
                       cache: bool = True, task: torch.Tensor | None = None) -> torch.Tensor:
        """The latest step's action, one dimension after another (argmax, detokenised): inputs as
        `forward`, the last step's action and reward entries placeholders; returns (B, A) for the
        A action dims given. The padded dims stay 0, as in training data.

        ``cache``: run the context once up to the last rtg token and each further dimension as one
        token with the trunk's key/value cache (A - 1 one-token passes); false: A full forwards. Both
        give the same actions (tests). With L2P's prompts (per-layer inputs, not a cache) always A
        full forwards.
        """
        real = actions.shape[-1]
        actions = pad_last(actions.clone(), self.act_dim, "action")
        actions[:, -1] = 0.0
        if not cache or self.prompted:
            for i in range(real):
                logits = self.forward(states, actions, returns_to_go, rewards, timesteps, attention_mask, task)
                actions[:, -1, i] = self.tokenizer.detokenize(logits[:, -1, i].argmax(-1))
            return actions[:, -1, :real]
        b, k = timesteps.shape
        n = self.tokens_per_step
        x = self._embed(states, actions, returns_to_go, rewards, timesteps, attention_mask)
        self._select(x, attention_mask, task)   # the state tokens do not depend on the actions decoded
        prefix = x.reshape(b, k * n, self.hidden_size)[:, : (k - 1) * n + 2]   # ... s_t, rtg_t
        mask = attention_mask.long().repeat_interleave(n, dim=1)[:, : (k - 1) * n + 2]
        out = self.trunk(inputs_embeds=prefix, attention_mask=mask, use_cache=True)
        past, hidden = _cache_of(out), out.last_hidden_state[:, -1]
        time = self.embed_timestep(timesteps[:, -1])
        for i in range(real):
            token = self.action_head(hidden).argmax(-1)
            actions[:, -1, i] = self.tokenizer.detokenize(token)
            if i == real - 1:
                break
            embedded = self.embed_action(token)
            if self.embed_action_dim is not None:
                embedded = embedded + self.embed_action_dim.weight[i]
            nxt = self.embed_ln(embedded + time)[:, None]
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            out = self.trunk(inputs_embeds=nxt, attention_mask=mask, use_cache=True, **{_CACHE_ARG: past})
            past, hidden = _cache_of(out), out.last_hidden_state[:, -1]
        return actions[:, -1, :real]
