"""The LaMo Decision Transformer: a pre-trained causal LM trunk with LoRA, MLP embeddings and an LM loss.

The parts, in the order of the model they build (docs/references/lamo.md "Model"; 1-3 live in their own
modules since issue 29 and are re-exported here):

1. `build_backbone` (`lamo_ray.trunk`): a Hugging Face causal LM (GPT-2 or a Llama-family model),
   pre-trained or randomly initialised (the DT baseline), optionally cut to its first N blocks. Where a
   name's config and weights come from (hub id, local dir, offline ``smollm2-135m``) is `lamo_ray.backbones`.
2. `lora_target_modules` (`lamo_ray.lora`): which attention projections LoRA adapts; `SeparateQKV` gives
   GPT-2's fused QKV projection LaMo's separate Q/K/V adapters.
3. Token embeddings (`lamo_ray.embeddings`): `MLPEmbedding` (LaMo's ``--mlp_embedding``), `ImageEncoder`
   (image states), `ActionEmbedding` (discrete actions).
4. `DecisionTransformer`: (return-to-go, state, action) tokens -> trunk -> action from the state token.
5. `action_loss`: masked MSE or cross-entropy.

Shapes: B batch, K context length in timesteps (3K tokens), S state dim, A action dim
(number of actions if discrete), h hidden size, L text length.

We use transformers and peft directly; the official LaMo code vendored a modified GPT-2 and a LoRA
library. The two modifications it needs are module swaps on the unmodified Hugging Face model:
GPT-2's position table ``wpe`` becomes `NoPositionEmbedding` (LaMo D4RL), and its fused ``c_attn``
becomes `SeparateQKV` so that peft gives Q, K and V their own adapters as loralib's
``MergedLinear`` does in LaMo's code (fused back when LoRA is merged for the rollout actors).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from lamo_ray.backbones import BackboneUnavailableError, baseline_config, load_config, load_pretrained  # noqa: F401 - error re-exported
from lamo_ray.config import ModelConfig
# the trunk, LoRA and the embeddings live in their own modules (issue 29); every name is re-exported here
from lamo_ray.embeddings import (ActionEmbedding, ImageEncoder, MLPEmbedding, _action_head,  # noqa: F401
                                 _token_embedding)
from lamo_ray.heads import TanhGaussianHead
from lamo_ray.lora import SeparateQKV, fuse_qkv, lora_target_modules, separate_qkv  # noqa: F401
from lamo_ray.trunk import (DROPOUT_KEYS, FastDropout, NoPositionEmbedding, _blocks_name,  # noqa: F401
                            _drop_position_table, _keep_first_blocks, _set_activation, _set_depth, _set_vocab,
                            _set_width, _use_fast_dropout, build_backbone)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the model


class DecisionTransformer(nn.Module):
    """LaMo's Decision Transformer (docs/references/lamo.md "Model").

    Per timestep three tokens (return-to-go, state, action) -> 3K tokens; embedding LayerNorm,
    then the learned timestep embedding (none with ``cfg.timestep_embedding`` false: the ODT-TD3
    authors' ``--ordering 0``); the backbone trunk (no position table unless
    ``cfg.position_embedding``) with the (B, 3K) attention mask; the action is predicted from each
    state token's output.

    Args:
        cfg: backbone, embeddings, fine-tuning mode, LoRA.
        state_shape: (S,) vector states, or (C, H, W) images: LaMo's Atari variant (`ImageEncoder`,
            plus a residual MLP block for ``cfg.embedding == "mlp"``; the timestep embedding is added
            to every token *before* the embedding LayerNorm, as LaMo's Atari code (and DT) do).
        act_dim: action dimension A, or number of discrete actions.
        max_ep_len: size of the timestep embedding table (timesteps must be < max_ep_len).
        discrete_actions: integer actions embedded by `ActionEmbedding` (LaMo Atari); the head
            (Linear + Tanh, LaMo Atari) gives logits for cross-entropy.
        language_loss: keep the token embedding / LM head usable and, for "full", trainable (`lm_loss`).
        load_weights: passed to `build_backbone` (False: same architecture, random init).
        backbone_config: passed to `build_backbone` as ``base_config`` (`PolicySpec.backbone_config`).

    Fine-tuning (``cfg.finetune``):
        "lora": peft LoRA on the attention projections (`lora_target_modules`): for GPT-2 separate
            A/B for Q, K and V (`SeparateQKV`; LaMo D4RL) or one on the fused ``c_attn``
            (``cfg.lora.fused_qkv``; LaMo Atari); trainable are LoRA A/B, the targeted layers' bias
            (``cfg.lora.bias`` "lora_only"), and our embeddings, timestep embedding, LayerNorm and
            head (LaMo adapt mode + ``--adapt_embed``).
        "full": everything trainable. "frozen": backbone frozen, our embeddings and head trainable.
        The token embedding (and a tied LM head) gets gradient only from the language loss, so it is
        trainable only with ``language_loss`` and "full". Without the language loss every trainable
        parameter gets a gradient from the action loss, so DDP needs no ``find_unused_parameters``
        (for K >= 2: with K = 1 the action token feeds no prediction).

    Raises:
        BackboneUnavailableError: see `build_backbone`.
        ValueError: bad ``state_shape`` or backbone layout.
    """

    def __init__(self, cfg: ModelConfig, state_shape: tuple[int, ...], act_dim: int, max_ep_len: int,
                 discrete_actions: bool = False, language_loss: bool = False, load_weights: bool = True,
                 backbone_config: dict | None = None):
        super().__init__()
        if len(state_shape) not in (1, 3):
            raise ValueError(f"state_shape must be (S,) or (C, H, W), got {state_shape}")
        self.state_shape = tuple(state_shape)
        self.act_dim = act_dim
        self.discrete_actions = discrete_actions
        self.language_loss = language_loss
        # Without a language loss the baseline needs no real vocabulary (docs/references/environment.md "Models": vocab_size=1).
        tiny_vocab = not (cfg.pretrained or language_loss)
        backbone = build_backbone(cfg, load_weights=load_weights, vocab_size=1 if tiny_vocab else None,
                                  base_config=backbone_config)
        # the backbone's config as loaded (before our overrides): rebuilds this model without its files
        self.backbone_base_config: dict = backbone.lamo_base_config
        self.has_vocabulary = not tiny_vocab
        self.position_embedding = cfg.position_embedding
        if not cfg.position_embedding:
            _drop_position_table(backbone.base_model)
        h = self.hidden_size = backbone.config.hidden_size

        self.embed_return = _token_embedding(1, h, cfg.embedding)
        # LaMo's Atari code adds the timestep embedding before the LayerNorm; its D4RL code after
        self.timestep_before_ln = len(state_shape) == 3
        if len(state_shape) == 3:
            self.embed_state = ImageEncoder(self.state_shape, h, cfg.embedding)
        else:
            self.embed_state = _token_embedding(state_shape[0], h, cfg.embedding)
        if discrete_actions:
            self.embed_action = ActionEmbedding(act_dim, h, cfg.embedding)
        else:
            self.embed_action = _token_embedding(act_dim, h, cfg.embedding)
        # None: no timestep signal (``cfg.timestep_embedding`` false; the ODT-TD3 authors' ``--ordering 0``)
        self.embed_timestep = nn.Embedding(max_ep_len, h) if cfg.timestep_embedding else None
        self.embed_ln = nn.LayerNorm(h)
        self.stochastic = cfg.action_head == "tanh_gaussian"
        if self.stochastic:
            if discrete_actions:
                raise ValueError("model.action_head 'tanh_gaussian' is for continuous actions; this data's actions "
                                 "are discrete")
            self.action_head = TanhGaussianHead(h, act_dim)
        else:
            self.action_head = _action_head(h, act_dim, cfg.embedding, discrete_actions, cfg.bounded_actions)
        self.backbone = self._finetune(backbone, cfg, language_loss)
        _use_fast_dropout(self)

        counts = self.parameter_counts()
        logger.info("DecisionTransformer(%s, %s, %s): %d trainable / %d total parameters (%.3f%%)",
                    cfg.backbone, "pretrained" if cfg.pretrained else "random init", cfg.finetune,
                    counts["trainable"], counts["total"], 100 * counts["trainable_share"])

    @staticmethod
    def _finetune(backbone: transformers.PreTrainedModel, cfg: ModelConfig, language_loss: bool) -> nn.Module:
        """Apply ``cfg.finetune``; returns the backbone, wrapped in a peft model for "lora" (GPT-2's
        ``c_attn`` first split by `separate_qkv` unless ``cfg.lora.fused_qkv``)."""
        if cfg.finetune == "lora":
            if not cfg.lora.fused_qkv:
                separate_qkv(backbone)
            targets, fan_in_fan_out = lora_target_modules(backbone, fused_qkv=cfg.lora.fused_qkv)
            import peft  # here, not at module level: ~2.5 s of imports that DT workers and rollout actors skip

            lora = peft.LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                   target_modules=targets, fan_in_fan_out=fan_in_fan_out, bias=cfg.lora.bias)
            return peft.get_peft_model(backbone, lora)  # freezes every non-LoRA backbone weight
        if cfg.finetune == "frozen":
            backbone.requires_grad_(False)
        elif not language_loss:
            backbone.get_input_embeddings().requires_grad_(False)
            backbone.get_output_embeddings().requires_grad_(False)
        return backbone

    @property
    def trunk(self) -> nn.Module:
        """The backbone without its LM head (GPT-2 ``transformer``, Llama ``model``), LoRA inside."""
        return self._lm().base_model

    def _lm(self) -> nn.Module:
        """The causal LM itself (inside the peft wrapper for "lora")."""
        return self.backbone.get_base_model() if self.uses_lora else self.backbone

    @property
    def uses_lora(self) -> bool:
        """The backbone is a peft LoRA model."""
        return hasattr(self.backbone, "peft_config")

    def rollout_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights for inference (rollout actors): LoRA merged into the frozen weights, W + (alpha / r) B A
        (peft ``merge_and_unload`` on a copy; this model is unchanged; `SeparateQKV` fused back into
        GPT-2's ``c_attn``), so the state dict is that of the
        same architecture with ``finetune: full`` (`rollout_model_config`): rollout actors then build no
        peft model (no peft import, no LoRA branch per forward). Other modes: ``state_dict()``.
        Tensors are detached CPU copies."""
        if not self.uses_lora:
            return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        import copy

        twin = copy.deepcopy(self)
        twin.backbone = twin.backbone.merge_and_unload()
        fuse_qkv(twin.backbone)  # separate Q/K/V adapters merged: back to GPT-2's fused c_attn
        return {k: v.detach().cpu() for k, v in twin.state_dict().items()}

    def _check_inputs(self, states, actions, returns_to_go, timesteps, attention_mask) -> None:
        b, k = timesteps.shape
        action_shape = (b, k) if self.discrete_actions else (b, k, self.act_dim)
        expected = {"states": (b, k, *self.state_shape), "actions": action_shape,
                    "returns_to_go": (b, k, 1), "attention_mask": (b, k)}
        given = {"states": states, "actions": actions, "returns_to_go": returns_to_go,
                 "attention_mask": attention_mask}
        for key, shape in expected.items():
            if tuple(given[key].shape) != shape:
                raise ValueError(f"{key}: expected shape {shape}, got {tuple(given[key].shape)}")

    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                timesteps: torch.Tensor, attention_mask: torch.Tensor, distribution: bool = False):
        """Action predictions at every timestep.

        Args:
            states: (B, K, S) float, or (B, K, C, H, W) uint8/float pixels.
            actions: (B, K, A) float, or (B, K) long for discrete actions (padded entries must be valid ids).
            returns_to_go: (B, K, 1), already divided by the rtg scale.
            timesteps: (B, K) long, < max_ep_len.
            attention_mask: (B, K), 1 for real steps, 0 for (left) padding.

            distribution: with the tanh-Gaussian head (``stochastic``), return the action distribution
                (`lamo_ray.online.stochastic.TanhGaussianHead`) instead of its mean action.

        Returns:
            (B, K, A) actions (logits if discrete; tanh of the Gaussian's mean for the stochastic head).
            The prediction at step t sees R_<=t, s_<=t, a_<t.

        Raises:
            ValueError: an input's shape does not match, or ``distribution`` without a stochastic head.
        """
        if distribution and not self.stochastic:
            raise ValueError("distribution=True needs model.action_head: tanh_gaussian")
        self._check_inputs(states, actions, returns_to_go, timesteps, attention_mask)
        b, k = timesteps.shape
        tokens = torch.stack(
            (self.embed_return(returns_to_go), self.embed_state(states), self.embed_action(actions)), dim=2
        ).reshape(b, 3 * k, self.hidden_size)  # (B, 3K, h): R_1, s_1, a_1, R_2, ...
        if self.embed_timestep is None:  # ODT-TD3's --ordering 0: LayerNorm on the stacked tokens alone
            tokens = self.embed_ln(tokens)
        else:
            time = self.embed_timestep(timesteps).repeat_interleave(3, dim=1)
            if self.timestep_before_ln:  # LaMo Atari (and the original DT, HF, CORL): add, then LayerNorm
                tokens = self.embed_ln(tokens + time)
            else:  # LaMo D4RL (docs/references/lamo.md "Model"): LayerNorm on the stacked tokens, then add
                tokens = self.embed_ln(tokens) + time
        token_mask = attention_mask.repeat_interleave(3, dim=1).long()  # (B, 3K)
        # with GPT-2's position table: the first real token is position 0 whatever the left padding, as
        # in LaMo's Atari evaluation, which feeds the unpadded history (docs/references/lamo.md "Atari")
        positions = (token_mask.cumsum(1) - 1).clamp(min=0) if self.position_embedding else None
        hidden = self.trunk(inputs_embeds=tokens, attention_mask=token_mask, position_ids=positions,
                            use_cache=False).last_hidden_state
        state_out = hidden.reshape(b, k, 3, self.hidden_size)[:, :, 1]  # (B, K, h): outputs at the state tokens
        if self.stochastic:
            dist = self.action_head(state_out)
            return dist if distribution else self.action_head.mean_action(dist)
        return self.action_head(state_out)

    @torch.no_grad()
    def predict_gaussian(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                         timesteps: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stochastic head's pre-tanh Gaussian for the latest step: ``(loc, std)``, each (B, A), without
        gradient (an action sample is ``tanh(loc + std * eps)``). Inputs as `predict_action`.

        Raises:
            ValueError: the model has no stochastic head.
        """
        dist = self.forward(states, actions, returns_to_go, timesteps, attention_mask, distribution=True)
        return dist.base_dist.loc[:, -1], dist.base_dist.scale[:, -1]

    @torch.no_grad()
    def predict_action(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                       timesteps: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The action for the latest step: same inputs as `forward` -> (B, A), without gradient.

        The caller keeps the last K steps of each history, left-padded, the current state last
        (its action entry a placeholder, which the causal mask hides), and sets ``eval()``.
        """
        return self.forward(states, actions, returns_to_go, timesteps, attention_mask)[:, -1]

    def lm_loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy of text (B, L) token ids -> scalar, through the backbone's own
        LM head, LoRA active, without position table (docs/references/lamo.md "Model", "Loss").

        Raises:
            RuntimeError: the model was built without a vocabulary (random init, language_loss=False).
        """
        if not self.has_vocabulary:
            raise RuntimeError("this DecisionTransformer has a 1-token vocabulary: build it with language_loss=True")
        return self.backbone(input_ids=input_ids, labels=input_ids, use_cache=False).loss

    def parameter_counts(self) -> dict:
        """{"trainable": int, "total": int, "trainable_share": float}; tied weights counted once."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total, "trainable_share": trainable / total}


def rollout_model_config(cfg: ModelConfig) -> ModelConfig:
    """The config of the model `DecisionTransformer.rollout_state_dict` fits: "lora" becomes "full"
    (same architecture, LoRA merged); other modes unchanged."""
    return cfg.model_copy(update={"finetune": "full"}) if cfg.finetune == "lora" else cfg


# --------------------------------------------------------------------------- loss


def action_loss(preds: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, discrete: bool) -> torch.Tensor:
    """Masked action loss over the real (B, K) positions (docs/references/lamo.md "Loss").

    Continuous: preds, targets (B, K, A) -> MSE averaged over real positions and action dims.
    Discrete: preds (B, K, A) logits, targets (B, K) long -> cross-entropy averaged over real positions.
    mask (B, K): 1 real, 0 padding. An all-padding batch gives 0.

    Raises:
        ValueError: shapes do not match.
    """
    expected = preds.shape[:2] if discrete else preds.shape
    if targets.shape != expected or mask.shape != preds.shape[:2]:
        raise ValueError(f"action_loss: preds {tuple(preds.shape)}, targets {tuple(targets.shape)}, "
                         f"mask {tuple(mask.shape)} do not match (discrete={discrete})")
    mask = mask.to(preds.dtype)
    if discrete:
        targets = torch.where(mask > 0, targets, 0)  # padded targets may hold any value
        per_step = F.cross_entropy(preds.flatten(0, 1), targets.flatten(), reduction="none").view_as(mask)
        return (per_step * mask).sum() / mask.sum().clamp(min=1)
    per_step = ((preds - targets) ** 2).sum(-1)  # (B, K)
    return (per_step * mask).sum() / (mask.sum() * preds.shape[-1]).clamp(min=1)
