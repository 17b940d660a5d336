"""The Decision Transformer's trunk: a Hugging Face causal LM built from ``model.backbone`` and the module
swaps we make on it (split out of `lamo_ray.model`, issue 29; `lamo_ray.model` re-exports every name).

- `build_backbone`: a causal LM (GPT-2 or a Llama-family model), pre-trained or randomly initialised
  (the DT baseline), optionally cut to its first N blocks (`_keep_first_blocks`). Where a name's
  config and weights come from (hub id, local dir, offline ``smollm2-135m``) is `lamo_ray.backbones`.
- `NoPositionEmbedding`: GPT-2's position table ``wpe`` swapped out (LaMo D4RL; `_drop_position_table`).
- `FastDropout`: ``nn.Dropout`` with a cheaper CPU mask, swapped in everywhere (`_use_fast_dropout`).

Used by `lamo_ray.model.DecisionTransformer` and `lamo_ray.mddt`. Log records keep the name
``lamo_ray.model``, where these functions logged before the split.
"""

from __future__ import annotations

import logging

import torch
import transformers
from torch import nn

from lamo_ray.backbones import baseline_config, load_config, load_pretrained
from lamo_ray.config import ModelConfig

logger = logging.getLogger("lamo_ray.model")

# Config attributes that hold GPT-2's three dropouts (resid, embd, attn) or Llama's attention dropout.
DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout")


# --------------------------------------------------------------------------- backbone


def _set_depth(config: transformers.PretrainedConfig, n_layer: int) -> None:
    """Set the number of transformer blocks (GPT-2 ``n_layer``, Llama ``num_hidden_layers``)."""
    config.num_hidden_layers = n_layer
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:n_layer]


def _set_width(config: transformers.PretrainedConfig, n_embd: int | None, n_head: int | None) -> None:
    """Set hidden size and heads, keeping Llama's ``head_dim`` / ``num_key_value_heads`` consistent.

    Raises:
        ValueError: the hidden size is not divisible by the number of heads.
    """
    if n_embd is not None:
        config.hidden_size = n_embd
    if n_head is not None:
        config.num_attention_heads = n_head
        if getattr(config, "num_key_value_heads", None) is not None:
            config.num_key_value_heads = n_head  # ours: plain multi-head attention for the baseline
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"hidden size {config.hidden_size} is not divisible by "
                         f"{config.num_attention_heads} attention heads")
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = config.hidden_size // config.num_attention_heads


def _set_activation(config: transformers.PretrainedConfig, activation: str) -> None:
    """Set the MLP activation (GPT-2 ``activation_function``, Llama ``hidden_act``).

    Raises:
        ValueError: the architecture has neither attribute.
    """
    for key in ("activation_function", "hidden_act"):
        if hasattr(config, key):
            setattr(config, key, activation)
            return
    raise ValueError(f"model.activation: {type(config).__name__} has no MLP activation setting we know")


def _set_vocab(config: transformers.PretrainedConfig, vocab_size: int) -> None:
    """Shrink the vocabulary; special-token ids outside it become None (docs/references/environment.md "Models")."""
    config.vocab_size = vocab_size
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = getattr(config, key, None)
        if isinstance(token, int) and token >= vocab_size:
            setattr(config, key, None)


def build_backbone(cfg: ModelConfig, load_weights: bool = True, vocab_size: int | None = None,
                   base_config: dict | None = None) -> transformers.PreTrainedModel:
    """A causal LM with its LM head, from ``cfg.backbone``: a hub id, a local directory, or a named
    offline backbone such as ``smollm2-135m`` (resolved by `lamo_ray.backbones`).

    - ``cfg.pretrained``: pre-trained weights (docs/references/lamo.md "Model": GPT-2 small), from a local
      directory, a fetched offline backbone, the HF cache, or the hub. Never falls back to a random init. With
      ``load_weights=False`` the same architecture is built randomly initialised from the config
      alone (rollout actors that receive a state_dict).
    - not ``cfg.pretrained``: the DT baseline, randomly initialised; architecture from the name's
      config (``GPT2Config()`` for "gpt2" when nothing is cached) with ``cfg.n_layer / n_embd /
      n_head`` overrides. ``vocab_size`` replaces the vocabulary (1 when no language loss is needed).
    - ``cfg.n_layer`` with a pre-trained model keeps the first N blocks (GPT-2 ``transformer.h``,
      Llama ``model.layers``), logged with the parameter count kept.
    - Architectures: GPT-2 (learned ``wpe`` position table, fused ``c_attn``) and Llama-family
      models (rotary positions, separate q/k/v projections, grouped-query attention kept as is).
    - ``cfg.dropout`` sets GPT-2's resid/embd/attn dropout (Llama: attention dropout).
    - ``cfg.activation`` (random init only) sets the MLP activation: LaMo's DT baseline is a 3-layer,
      128-wide, 1-head GPT-2 with ReLU (docs/references/lamo.md "Baseline DT", LaMo ``experiment.py``).
    - ``cfg.attention`` picks transformers' attention implementation ('sdpa' or 'eager'; 'auto' leaves
      transformers' default, which is 'sdpa' where the architecture supports it).
    - GPT-2's ``gelu_new`` runs as ``gelu_pytorch_tanh``: the same function (max difference ~1e-7),
      one fused kernel.

    ``base_config``: the architecture config as loaded for ``cfg.backbone`` (``to_dict()``), used
    instead of loading it again (rollout actors and checkpoints: no files or network needed there).
    The model's ``lamo_base_config`` attribute holds it for whoever builds the model elsewhere.

    Returns a float32 model in train mode. Its position table, if any, is still in place
    (`DecisionTransformer` removes it).

    Raises:
        BackboneUnavailableError: config or weights not found locally and not downloadable.
        ValueError: ``vocab_size`` with a pre-trained backbone; hidden size not divisible by heads; an
            ``attention`` implementation the architecture does not support.
    """
    name = cfg.backbone
    if cfg.pretrained and vocab_size is not None:
        raise ValueError("vocab_size can only be set for a randomly initialised backbone (pretrained: false)")
    if base_config is not None:
        fields = dict(base_config)
        config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    else:
        config = load_config(name) if cfg.pretrained else baseline_config(name)
    base = config.to_dict()
    if not cfg.pretrained:
        _set_width(config, cfg.n_embd, cfg.n_head)
        if cfg.activation is not None:
            _set_activation(config, cfg.activation)
        if vocab_size is not None:
            _set_vocab(config, vocab_size)
    for key in DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, cfg.dropout)
    if getattr(config, "activation_function", None) == "gelu_new":
        # the same tanh-approximated GELU, as one fused kernel instead of GPT-2's six elementwise ops
        # (4-5x faster on CPU; ~15% of a tiny-shape training step): benchmarks/run.py B1
        config.activation_function = "gelu_pytorch_tanh"
    full_depth = config.num_hidden_layers
    n_layer = cfg.n_layer or full_depth
    if n_layer > full_depth and cfg.pretrained:
        raise ValueError(f"model.n_layer {n_layer} > {full_depth} blocks of pre-trained {name!r}")

    attention = {} if cfg.attention == "auto" else {"attn_implementation": cfg.attention}
    if cfg.pretrained and load_weights:
        backbone = load_pretrained(name, config, **attention)
        if n_layer < full_depth:
            total = sum(p.numel() for p in backbone.parameters())
            _keep_first_blocks(backbone, n_layer)
            logger.info("backbone %s: kept the first %d of %d blocks, %d of %d parameters", name, n_layer,
                        full_depth, sum(p.numel() for p in backbone.parameters()), total)
    else:
        _set_depth(config, n_layer)
        backbone = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32, **attention)
    backbone.lamo_base_config = base
    backbone.train()
    return backbone


def _blocks_name(trunk: nn.Module, n_blocks: int) -> str:
    """Attribute of ``trunk`` holding its transformer blocks (GPT-2 ``h``, Llama ``layers``).

    Raises:
        ValueError: no ``nn.ModuleList`` child with ``n_blocks`` entries.
    """
    for attr, child in trunk.named_children():
        if isinstance(child, nn.ModuleList) and len(child) == n_blocks:
            return attr
    raise ValueError(f"cannot find the {n_blocks} transformer blocks in {type(trunk).__name__}")


def _keep_first_blocks(backbone: transformers.PreTrainedModel, n_layer: int) -> None:
    """Cut a loaded model to its first ``n_layer`` blocks, in place, and update its config."""
    trunk = backbone.base_model
    attr = _blocks_name(trunk, backbone.config.num_hidden_layers)
    setattr(trunk, attr, nn.ModuleList(list(getattr(trunk, attr))[:n_layer]))
    _set_depth(backbone.config, n_layer)


# --------------------------------------------------------------------------- position table


class NoPositionEmbedding(nn.Module):
    """Stands in for GPT-2's ``wpe``: position_ids (B or 1, T) -> zeros (B or 1, T, h).

    docs/references/lamo.md "Model": GPT-2's position embedding is not added; the learned timestep embedding
    replaces it. The DT ``trajectory_gpt2.GPT2Model`` that Wiki-RL and LaMo vendor comments out
    ``wpe`` in ``forward`` for every call, language inputs included; our language loss shares the
    trunk and likewise runs without it.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.register_buffer("dtype_anchor", torch.zeros(0), persistent=False)  # follows .to(dtype/device)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.dtype_anchor.new_zeros(*position_ids.shape, self.hidden_size)


def _drop_position_table(trunk: nn.Module) -> None:
    """Replace GPT-2's ``wpe`` by `NoPositionEmbedding`; rotary models (Llama) have no table.

    Raises:
        ValueError: another kind of learned position table we do not handle.
    """
    if isinstance(getattr(trunk, "wpe", None), nn.Embedding):
        trunk.wpe = NoPositionEmbedding(trunk.wpe.embedding_dim)
        return
    for attr in ("embed_positions", "position_embeddings"):
        if hasattr(trunk, attr):
            raise ValueError(f"{type(trunk).__name__} has a learned position table '{attr}'; "
                             "only GPT-2 (wpe) and rotary (Llama-family) backbones are supported")


# --------------------------------------------------------------------------- dropout


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask costs a quarter of the random numbers: (...) -> (...), same shape.

    Same semantics as ``nn.Dropout(p)``: in training each element is zeroed independently and the
    rest scaled by 1 / (1 - p); identity in eval mode or for p = 0. On CPU, torch's dropout draws one
    32-bit number per element (``bernoulli_``); here one 64-bit draw from torch's default generator
    (so ``torch.manual_seed`` makes it reproducible) gives four 16-bit lanes, each kept when it is
    >= ``round(p * 65536)`` of the 65536 levels: the drop probability is p to within 1/131072. On
    other devices it is torch's dropout. Measured (benchmarks/run.py): dropout forward+backward on a
    (64, 60, 128) activation 3.4 -> 1.0 ms on 2 threads (forward + backward).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or not x.is_floating_point():
            return super().forward(x)
        if self.p >= 1.0:
            return x * 0.0
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)
        threshold = -32768 + round(self.p * 65536)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= threshold
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def _use_fast_dropout(module: nn.Module) -> None:
    """Replace every ``nn.Dropout`` under ``module`` (trunk, peft's ``lora_dropout``) by `FastDropout`
    with the same p, in place. Modules that only read ``.p`` (GPT-2's SDPA attention dropout) keep
    working: the replacement is an ``nn.Dropout``."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p, inplace=False))
        else:
            _use_fast_dropout(child)
