"""Tests for lamo_ray/model.py: tiny backbones (2-3 layers, 32 hidden) saved to tmp dirs."""

from __future__ import annotations

import logging
import math
import time

import huggingface_hub.constants
import pytest
import torch
import transformers

from lamo_ray.config import ModelConfig
from lamo_ray.model import (
    BackboneUnavailableError,
    DecisionTransformer,
    action_loss,
    build_backbone,
    lora_target_modules,
)

B, K, S, A, MAX_EP_LEN = 3, 5, 7, 4, 50
VOCAB = 64


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 with its LM head, saved like a downloaded pre-trained model."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64,
                                     bos_token_id=None, eos_token_id=None)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("tiny_llama")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def tiny_cfg(backbone: str = "gpt2", **overrides) -> ModelConfig:
    """A random-init 2-layer GPT-2 by default; pass backbone=<dir> and pretrained=True for a saved one."""
    fields = {"backbone": backbone, "pretrained": False, "n_layer": 2, "n_embd": 32, "n_head": 4}
    if overrides.get("pretrained"):
        fields.update(n_layer=None, n_embd=None, n_head=None)
    fields.update(overrides)
    return ModelConfig(**fields)


def batch(seed: int = 0, state_shape: tuple[int, ...] = (S,), discrete: bool = False, pad: int = 2):
    """Random inputs; the first sequence is left-padded by ``pad`` steps."""
    g = torch.Generator().manual_seed(seed)
    if len(state_shape) == 3:
        states = torch.randint(0, 256, (B, K, *state_shape), generator=g, dtype=torch.uint8)
    else:
        states = torch.randn(B, K, *state_shape, generator=g)
    actions = torch.randint(0, A, (B, K), generator=g) if discrete else torch.rand(B, K, A, generator=g) * 2 - 1
    rtg = torch.randn(B, K, 1, generator=g)
    timesteps = torch.randint(0, MAX_EP_LEN - K, (B, 1), generator=g) + torch.arange(K)
    mask = torch.ones(B, K)
    mask[0, :pad] = 0
    return states, actions, rtg, timesteps, mask


def copy_own_modules(src: DecisionTransformer, dst: DecisionTransformer) -> None:
    """Copy embeddings, timestep embedding, LayerNorm and head (everything outside the backbone)."""
    own = {k: v for k, v in src.state_dict().items() if not k.startswith("backbone.")}
    missing, unexpected = dst.load_state_dict(own, strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("embedding", ["mlp", "linear"])
def test_vector_continuous_shapes(embedding):
    model = DecisionTransformer(tiny_cfg(embedding=embedding), (S,), A, MAX_EP_LEN).eval()
    inputs = batch()
    out = model(*inputs)
    assert out.shape == (B, K, A)
    assert torch.isfinite(out).all()
    last = model.predict_action(*inputs)
    assert last.shape == (B, A) and not last.requires_grad
    torch.testing.assert_close(last, out[:, -1])
    if embedding == "linear":  # DT head: Linear + Tanh
        assert out.abs().max() <= 1


def test_image_discrete_shapes():
    model = DecisionTransformer(tiny_cfg(), (4, 36, 36), 5, MAX_EP_LEN, discrete_actions=True).eval()
    states, actions, rtg, timesteps, mask = batch(state_shape=(4, 36, 36), discrete=True)
    assert states.dtype == torch.uint8 and actions.dtype == torch.long
    out = model(states, actions, rtg, timesteps, mask)
    assert out.shape == (B, K, 5)
    assert model.predict_action(states, actions, rtg, timesteps, mask).shape == (B, 5)


def test_wrong_input_shape_raises():
    model = DecisionTransformer(tiny_cfg(), (S,), A, MAX_EP_LEN)
    states, actions, rtg, timesteps, mask = batch()
    with pytest.raises(ValueError, match="states"):
        model(states[..., :-1], actions, rtg, timesteps, mask)


# --------------------------------------------------------------------------- masking and positions


@pytest.mark.parametrize("backbone", ["gpt2", "llama"])
def test_left_padding_content_does_not_leak(backbone, gpt2_dir, llama_dir):
    path = gpt2_dir if backbone == "gpt2" else llama_dir
    model = DecisionTransformer(tiny_cfg(path, pretrained=True), (S,), A, MAX_EP_LEN).eval()
    states, actions, rtg, timesteps, mask = batch(pad=2)
    out = model(states, actions, rtg, timesteps, mask)
    assert torch.isfinite(out).all()
    g = torch.Generator().manual_seed(1)
    states2, actions2, rtg2 = states.clone(), actions.clone(), rtg.clone()
    states2[0, :2] = torch.randn(2, S, generator=g) * 10
    actions2[0, :2] = torch.randn(2, A, generator=g)
    rtg2[0, :2] = 100.0
    timesteps2 = timesteps.clone()
    timesteps2[0, :2] = 0
    out2 = model(states2, actions2, rtg2, timesteps2, mask)
    torch.testing.assert_close(out2[0, 2:], out[0, 2:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out2[1:], out[1:])
    assert not torch.allclose(out2[0, :2], out[0, :2])  # the padded positions did see the change


@pytest.mark.parametrize("backbone", ["gpt2", "llama"])
def test_sdpa_attention_matches_eager_on_left_padded_batches(backbone, gpt2_dir, llama_dir):
    path = gpt2_dir if backbone == "gpt2" else llama_dir
    models = {}
    for attention in ("eager", "sdpa"):
        torch.manual_seed(0)
        models[attention] = DecisionTransformer(tiny_cfg(path, pretrained=True, attention=attention), (S,), A,
                                                MAX_EP_LEN).eval()
        assert models[attention].backbone.config._attn_implementation == attention
    copy_own_modules(models["eager"], models["sdpa"])
    states, actions, rtg, timesteps, mask = batch(pad=2)
    eager, sdpa = (models[a](states, actions, rtg, timesteps, mask) for a in ("eager", "sdpa"))
    torch.testing.assert_close(sdpa[0, 2:], eager[0, 2:], rtol=1e-5, atol=1e-5)  # real positions
    torch.testing.assert_close(sdpa[1:], eager[1:], rtol=1e-5, atol=1e-5)
    default = DecisionTransformer(tiny_cfg(path, pretrained=True), (S,), A, MAX_EP_LEN)
    assert default.backbone.config._attn_implementation == "sdpa"  # 'auto': transformers' default


def test_position_embedding_has_no_effect(gpt2_dir, tmp_path):
    lm = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    ids = torch.arange(10).unsqueeze(0)
    before = lm(ids).logits
    with torch.no_grad():
        lm.transformer.wpe.weight.normal_(0.0, 1.0)
    assert not torch.allclose(lm(ids).logits, before)  # wpe matters to plain GPT-2 ...
    lm.save_pretrained(tmp_path)

    original = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune="full"), (S,), A, MAX_EP_LEN)
    changed = DecisionTransformer(tiny_cfg(str(tmp_path), pretrained=True, finetune="full"), (S,), A, MAX_EP_LEN)
    copy_own_modules(original, changed)
    inputs = batch()
    torch.testing.assert_close(changed.eval()(*inputs), original.eval()(*inputs))  # ... but not to ours
    assert not any("wpe" in name for name, _ in changed.named_parameters())


def test_position_embedding_counts_positions_from_the_first_real_step(gpt2_dir):
    """position_embedding: true (LaMo Atari, stock GPT-2): wpe is used, and a left-padded history gets
    the outputs of the same history unpadded (LaMo's Atari evaluation feeds it unpadded)."""
    cfg = tiny_cfg(gpt2_dir, pretrained=True, finetune="full", position_embedding=True, dropout=0.0)
    model = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN).eval()
    assert isinstance(model.trunk.wpe, torch.nn.Embedding)
    pad = 2
    states, actions, rtg, timesteps, mask = batch(pad=pad)
    padded = model(states, actions, rtg, timesteps, mask)[0, pad:]
    alone = model(states[:1, pad:], actions[:1, pad:], rtg[:1, pad:], timesteps[:1, pad:], mask[:1, pad:])[0]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.trunk.wpe.weight.normal_(0.0, 1.0)
    assert not torch.allclose(model(states, actions, rtg, timesteps, mask)[0, pad:], padded)


def test_dt_baseline_activation():
    """LaMo's D4RL DT baseline: GPT2Config(n_embd=128, n_layer=3, n_head=1, activation relu)."""
    cfg = ModelConfig(backbone="gpt2", pretrained=False, n_layer=3, n_embd=128, n_head=1, activation="relu",
                      finetune="full", embedding="linear")
    model = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN)
    assert model.trunk.config.activation_function == "relu" and len(model.trunk.h) == 3
    x = torch.linspace(-2.0, 2.0, 9)
    assert torch.equal(model.trunk.h[0].mlp.act(x), torch.relu(x))
    with pytest.raises(ValueError, match="model.activation"):
        ModelConfig(backbone="gpt2", pretrained=True, activation="relu")


# --------------------------------------------------------------------------- fine-tuning modes


OWN_PREFIXES = ("embed_return.", "embed_state.", "embed_action.", "embed_timestep.", "embed_ln.", "action_head.")


def test_lora_trains_only_adapters_bias_embeddings_and_head(gpt2_dir):
    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True), (S,), A, MAX_EP_LEN)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone_trainable = {n for n in trainable if n.startswith("backbone.")}
    assert trainable - backbone_trainable == {n for n, _ in model.named_parameters() if n.startswith(OWN_PREFIXES)}
    for name in backbone_trainable:
        assert ".c_attn." in name and ("lora_A" in name or "lora_B" in name or name.endswith("bias")), name
    for layer in range(3):  # LaMo D4RL: Q, K and V each with their own A and B, and their bias
        for proj in ("q", "k", "v"):
            for part in ("lora_A.default.weight", "lora_B.default.weight", "base_layer.bias"):
                assert any(f"h.{layer}.attn.c_attn.{proj}.{part}" in n for n in backbone_trainable), (layer, proj, part)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("c_attn.q.base_layer.weight" in n for n in frozen) and any("mlp.c_fc" in n for n in frozen)
    assert lora_target_modules(build_backbone(tiny_cfg(gpt2_dir, pretrained=True)), fused_qkv=True) == (["c_attn"], True)


def test_fused_qkv_shares_one_adapter_without_bias(gpt2_dir):
    """LaMo's Atari code: peft on the fused c_attn (one A/B), bias='none' (docs/references/lamo.md "Atari")."""
    cfg = tiny_cfg(gpt2_dir, pretrained=True, lora={"rank": 4, "alpha": 4, "fused_qkv": True, "bias": "none"})
    model = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN)
    backbone_trainable = {n: p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert all("lora_" in n for n in backbone_trainable)            # no bias trains
    assert not any(".c_attn.q." in n for n in backbone_trainable)   # one adapter on the fused projection
    assert sum(p.numel() for p in backbone_trainable.values()) == 3 * (4 * 32 + 3 * 32 * 4)


def test_separate_qkv_computes_what_the_fused_projection_does(gpt2_dir):
    from transformers.pytorch_utils import Conv1D

    from lamo_ray.model import SeparateQKV

    torch.manual_seed(0)
    fused = Conv1D(3 * 32, 32)
    torch.nn.init.normal_(fused.bias)
    split = SeparateQKV(fused)
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(split(x), fused(x))
    refused = split.fused()
    torch.testing.assert_close(refused.weight, fused.weight, rtol=0, atol=0)
    torch.testing.assert_close(refused.bias, fused.bias, rtol=0, atol=0)


def test_lora_at_init_equals_full_model(gpt2_dir):
    lora = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune="lora"), (S,), A, MAX_EP_LEN).eval()
    full = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune="full"), (S,), A, MAX_EP_LEN).eval()
    copy_own_modules(full, lora)
    inputs = batch()
    torch.testing.assert_close(lora(*inputs), full(*inputs))
    with torch.no_grad():  # and the adapters are live: a non-zero B changes the output
        next(p for n, p in lora.named_parameters() if "lora_B" in n).fill_(0.5)
    assert not torch.allclose(lora(*inputs), full(*inputs))


def test_gpt2_small_lora_trainable_share(caplog):
    """GPT-2 small shape (GPT2Config() defaults), LoRA r 16, linear embeddings, state 17, act 6.

    Built on the meta device (no memory, no init). language_loss=True keeps GPT-2's 50257-token
    vocabulary so the total is GPT-2 small's, as in LaMo. LaMo's D4RL adapter (docs/references/lamo.md "LoRA"):
    Q, K and V each with their own rank-16 A and B, 3 x 2 x 16 x 768 = 73,728 LoRA parameters per
    layer, 884,736 in all; with the c_attn biases 912,384 = 0.73% of GPT-2 small (LaMo's "0.7%").
    Our embeddings, the 1000-step timestep table (768k) and the head bring the share to 1.36%.
    """
    cfg = ModelConfig(backbone="gpt2", pretrained=False, embedding="linear", finetune="lora")
    with caplog.at_level(logging.INFO, logger="lamo_ray.model"), torch.device("meta"):
        model = DecisionTransformer(cfg, (17,), 6, 1000, language_loss=True)
    assert model.hidden_size == 768 and len(model.trunk.h) == 12
    lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    assert lora == 12 * 3 * 2 * 16 * 768 == 884_736
    lora_and_bias = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "c_attn" in n)
    assert lora_and_bias == lora + 12 * 3 * 768 == 912_384
    counts = model.parameter_counts()
    own = (2 * 768 + (17 + 1) * 768 + (6 + 1) * 768 + 1000 * 768 + 2 * 768 + (768 + 1) * 6)
    assert counts["trainable"] == lora_and_bias + own
    assert 124_000_000 < counts["total"] < 126_000_000
    # the frozen trunk is GPT-2 small (124,439,808) without its 1024 x 768 position table
    gpt2_small = sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone.") and "lora_" not in n)
    assert gpt2_small == 124_439_808 - 1024 * 768
    assert "trainable" in caplog.text and f"{counts['total']} total" in caplog.text

    fused = ModelConfig(backbone="gpt2", pretrained=False, embedding="linear", finetune="lora",
                        lora={"fused_qkv": True})
    with torch.device("meta"):
        shared = DecisionTransformer(fused, (17,), 6, 1000, language_loss=True)
    # peft on the fused c_attn: one A (16 x 768) and one B (2304 x 16) per layer = 0.47% of GPT-2 small
    assert sum(p.numel() for n, p in shared.named_parameters() if p.requires_grad and "lora_" in n) == 589_824


def test_frozen_mode_trains_only_own_modules(gpt2_dir):
    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune="frozen"), (S,), A, MAX_EP_LEN)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(OWN_PREFIXES)}


@pytest.mark.parametrize("language_loss", [False, True])
def test_full_mode_token_embedding_trains_only_with_language_loss(gpt2_dir, language_loss):
    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune="full"), (S,), A, MAX_EP_LEN,
                                language_loss=language_loss)
    lm = model.backbone
    assert lm.transformer.wte.weight.requires_grad is language_loss
    assert lm.lm_head.weight is lm.transformer.wte.weight  # tied head follows
    assert lm.transformer.h[0].mlp.c_fc.weight.requires_grad


@pytest.mark.parametrize("finetune", ["lora", "full", "frozen"])
@pytest.mark.parametrize("embedding", ["mlp", "linear"])
def test_every_trainable_parameter_gets_a_gradient(gpt2_dir, finetune, embedding):
    """What lets DDP run without find_unused_parameters (docs/references/environment.md "Models")."""
    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune=finetune, embedding=embedding),
                                (S,), A, MAX_EP_LEN)
    states, actions, rtg, timesteps, mask = batch()
    action_loss(model(states, actions, rtg, timesteps, mask), actions, mask, discrete=False).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_every_trainable_parameter_gets_a_gradient_image_discrete():
    model = DecisionTransformer(tiny_cfg(finetune="full"), (4, 36, 36), 5, MAX_EP_LEN, discrete_actions=True)
    states, actions, rtg, timesteps, mask = batch(state_shape=(4, 36, 36), discrete=True)
    action_loss(model(states, actions, rtg, timesteps, mask), actions, mask, discrete=True).backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


# --------------------------------------------------------------------------- backbones


def test_unavailable_hub_id_raises_without_fallback(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    name = "lamo-ray-tests/no-such-model"
    start = time.monotonic()
    for load_weights in (True, False):
        with pytest.raises(BackboneUnavailableError, match=f"{name}.*download"):
            build_backbone(ModelConfig(backbone=name, pretrained=True), load_weights=load_weights)
    with pytest.raises(BackboneUnavailableError, match=name):
        DecisionTransformer(ModelConfig(backbone=name, pretrained=True), (S,), A, MAX_EP_LEN)
    with pytest.raises(BackboneUnavailableError, match=name):  # the baseline only falls back for "gpt2"
        build_backbone(ModelConfig(backbone=name, pretrained=False))
    assert time.monotonic() - start < 10


def test_baseline_gpt2_uses_gpt2_small_config_offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with torch.device("meta"):
        lm = build_backbone(ModelConfig(backbone="gpt2", pretrained=False, dropout=0.2))
    c = lm.config
    assert (c.n_layer, c.n_embd, c.n_head, c.vocab_size) == (12, 768, 12, 50257)
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.2, 0.2, 0.2)


def test_local_directory_backbone_loads_its_weights(gpt2_dir):
    saved = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).state_dict()
    loaded = build_backbone(tiny_cfg(gpt2_dir, pretrained=True)).state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)


def test_n_layer_keeps_first_blocks_of_pretrained(gpt2_dir):
    saved = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    cut = build_backbone(tiny_cfg(gpt2_dir, pretrained=True, n_layer=2))
    assert len(cut.transformer.h) == 2 and cut.config.n_layer == 2
    for i in range(2):
        for key, value in saved.transformer.h[i].state_dict().items():
            torch.testing.assert_close(cut.transformer.h[i].state_dict()[key], value, rtol=0, atol=0)
    random_same_shape = build_backbone(tiny_cfg(gpt2_dir, pretrained=True, n_layer=2), load_weights=False)
    assert {k: v.shape for k, v in random_same_shape.state_dict().items()} == \
        {k: v.shape for k, v in cut.state_dict().items()}


def test_rollout_copy_without_weights_reproduces_outputs(gpt2_dir):
    """Rollout actors build with load_weights=False and receive the learner's state_dict."""
    cfg = tiny_cfg(gpt2_dir, pretrained=True)
    learner = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN).eval()
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if "lora_B" in name:
                p.normal_()
    actor = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN, load_weights=False).eval()
    actor.load_state_dict(learner.state_dict())
    inputs = batch()
    torch.testing.assert_close(actor.predict_action(*inputs), learner.predict_action(*inputs))


def test_llama_backbone_with_lora_on_qkv(llama_dir):
    cfg = tiny_cfg(llama_dir, pretrained=True, finetune="lora")
    assert lora_target_modules(build_backbone(cfg)) == (["q_proj", "k_proj", "v_proj"], False)
    model = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN)
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert sum(f"self_attn.{proj}.lora_" in n for n in lora_names) == 2 * 2  # A and B, 2 layers
    assert not any("o_proj" in n or "mlp" in n for n in lora_names)
    states, actions, rtg, timesteps, mask = batch()
    out = model(states, actions, rtg, timesteps, mask)
    assert out.shape == (B, K, A)
    action_loss(out, actions, mask, discrete=False).backward()
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_lora_target_modules_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="c_attn"):
        lora_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# --------------------------------------------------------------------------- losses


def test_lm_loss_of_random_model_is_near_log_vocab(gpt2_dir):
    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True), (S,), A, MAX_EP_LEN, language_loss=True)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    loss = model.lm_loss(ids)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert abs(loss.item() - math.log(VOCAB)) < 0.3
    loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None for g in lora_grads)  # LoRA is active in the LM path


def test_lm_loss_needs_a_vocabulary():
    model = DecisionTransformer(tiny_cfg(), (S,), A, MAX_EP_LEN)  # random init, no language loss: 1 token
    with pytest.raises(RuntimeError, match="language_loss"):
        model.lm_loss(torch.zeros(1, 4, dtype=torch.long))


def test_action_loss_ignores_padded_positions():
    g = torch.Generator().manual_seed(0)
    preds, targets = torch.randn(B, K, A, generator=g), torch.randn(B, K, A, generator=g)
    mask = torch.ones(B, K)
    mask[0, :3] = 0
    loss = action_loss(preds, targets, mask, discrete=False)
    real = mask.bool()
    torch.testing.assert_close(loss, ((preds[real] - targets[real]) ** 2).mean())
    preds2 = preds.clone()
    preds2[0, :3] = 1e3
    torch.testing.assert_close(action_loss(preds2, targets, mask, discrete=False), loss)

    logits, labels = torch.randn(B, K, A, generator=g), torch.randint(0, A, (B, K), generator=g)
    loss = action_loss(logits, labels, mask, discrete=True)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[real], labels[real]))
    logits2, labels2 = logits.clone(), labels.clone()
    logits2[0, :3], labels2[0, :3] = 1e3, -1
    torch.testing.assert_close(action_loss(logits2, labels2, mask, discrete=True), loss)
    with pytest.raises(ValueError):
        action_loss(logits, labels, mask, discrete=False)


# --------------------------------------------------------------------------- speed-ups that must not change the model


def test_fast_dropout_has_dropout_semantics():
    from lamo_ray.model import FastDropout

    drop = FastDropout(0.1).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002  # 1e6 draws: std of the rate ~3e-4
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through exactly the kept elements
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # reproducible from torch's seed
    torch.manual_seed(1)
    assert not torch.equal(drop(x), y)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_every_dropout_is_fast_dropout_including_lora(gpt2_dir):
    from lamo_ray.model import FastDropout

    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True, finetune="lora", dropout=0.2), (S,), A,
                                MAX_EP_LEN)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(type(m) is FastDropout for m in drops)
    assert {m.p for m in drops} == {0.2, 0.1}  # model.dropout and LoRA's default dropout


def test_gpt2_gelu_runs_fused_with_the_same_values(gpt2_dir):
    model = DecisionTransformer(tiny_cfg(gpt2_dir, pretrained=True), (S,), A, MAX_EP_LEN).eval()
    mlp = model.trunk.h[0].mlp
    assert model.trunk.config.activation_function == "gelu_pytorch_tanh"
    x = torch.randn(4096) * 4
    assert torch.allclose(mlp.act(x), transformers.activations.NewGELUActivation()(x), atol=1e-6)


def test_fused_adamw_matches_default_adamw():
    from lamo_ray.config import TrainConfig
    from lamo_ray.train import make_optimizer

    torch.manual_seed(0)
    a = torch.nn.Linear(16, 8)
    b = torch.nn.Linear(16, 8)
    b.load_state_dict(a.state_dict())
    cfg = TrainConfig(lr=1e-2)
    fused = make_optimizer(list(a.parameters()), cfg)
    ref = torch.optim.AdamW(b.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    assert fused.defaults["fused"]
    for step in range(5):
        x = torch.randn(32, 16, generator=torch.Generator().manual_seed(step))
        for m, opt in ((a, fused), (b, ref)):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_rollout_state_dict_merges_lora_exactly_and_leaves_the_model_alone(gpt2_dir):
    from lamo_ray.model import rollout_model_config

    torch.manual_seed(0)
    cfg = tiny_cfg(gpt2_dir, pretrained=True, finetune="lora")
    model = DecisionTransformer(cfg, (S,), A, MAX_EP_LEN).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = model.rollout_state_dict()
    plain = DecisionTransformer(rollout_model_config(cfg), (S,), A, MAX_EP_LEN, load_weights=False).eval()
    assert not plain.uses_lora and not any("lora" in k for k in weights)
    plain.load_state_dict(weights)  # strict: exactly the plain architecture's keys
    inputs = batch()
    assert torch.allclose(plain(*inputs), model(*inputs), atol=1e-5)
    with model.backbone.disable_adapter():
        assert not torch.allclose(plain(*inputs), model(*inputs), atol=1e-3)  # the adapters change the output
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
