"""The LaMo Decision Transformer: a pre-trained causal LM trunk with LoRA, MLP embeddings and an LM loss.

Reads top to bottom like the model it builds (docs/references/lamo.md "Model"):

1. `build_backbone`: a Hugging Face causal LM (GPT-2 or a Llama-family model), pre-trained or
   randomly initialised (the DT baseline), optionally cut to its first N blocks. Where a name's
   config and weights come from (hub id, local dir, offline ``smollm2-135m``) is `lamo_ray.backbones`.
2. `lora_target_modules`: which attention projections LoRA adapts; `SeparateQKV` gives GPT-2's fused
   QKV projection LaMo's separate Q/K/V adapters.
3. Token embeddings: `MLPEmbedding` (LaMo's ``--mlp_embedding``), `ImageEncoder` (image states),
   `ActionEmbedding` (discrete actions).
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
from lamo_ray.heads import TanhGaussianHead

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- embeddings and heads


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
