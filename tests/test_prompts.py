"""L2P's prompt pool (L2M's baseline): the prompted trunk without prompts is the trunk, prompts reach
every layer and only real tokens, top-k selection with the count penalty, the key loss, and a prompted
MDDT trains only its pool and decodes as its forward does."""

import pytest
import torch
import torch.nn.functional as F

from lamo_ray.config import ModelConfig
from lamo_ray.continual.prompts import PromptPool, prompted_trunk
from lamo_ray.mddt import MultiDomainDecisionTransformer

CFG = ModelConfig(backbone="gpt2", pretrained=False, n_layer=2, n_embd=32, n_head=2, finetune="full", dropout=0.0)


def inputs(b=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, k)
    mask[0, :2] = 0           # left padding
    return dict(states=torch.randn(b, k, 39, generator=g), actions=torch.rand(b, k, 4, generator=g) * 2 - 1,
                returns_to_go=torch.randn(b, k, 1, generator=g), rewards=torch.randn(b, k, 1, generator=g),
                timesteps=torch.arange(k).repeat(b, 1), attention_mask=mask)


def model():
    torch.manual_seed(0)
    return MultiDomainDecisionTransformer(CFG, max_ep_len=10).eval()


def test_the_prompted_trunk_without_prompts_is_the_trunk_on_real_tokens():
    trunk = model().trunk
    x = torch.randn(3, 8, 32)
    mask = torch.ones(3, 8)
    mask[1, :3] = 0
    ours = prompted_trunk(trunk, x, mask, torch.zeros(3, 2, 0, 32))
    theirs = trunk(inputs_embeds=x, attention_mask=mask.long()).last_hidden_state
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)


def test_prompts_of_every_layer_change_the_output_and_padding_stays_invisible():
    trunk = model().trunk
    x = torch.randn(2, 6, 32)
    mask = torch.ones(2, 6)
    mask[0, :2] = 0
    prompts = torch.randn(2, 2, 4, 32)
    base = prompted_trunk(trunk, x, mask, prompts)
    for layer in (0, 1):
        other = prompts.clone()
        other[:, layer] += torch.randn_like(other[:, layer])   # (not a constant: LayerNorm would remove it)
        assert not torch.allclose(prompted_trunk(trunk, x, mask, other)[:, -1], base[:, -1], atol=1e-4)
    noisy = x.clone()
    noisy[0, :2] = 100.0                                  # the padded steps' content
    assert torch.allclose(prompted_trunk(trunk, noisy, mask, prompts)[0, 2:], base[0, 2:], atol=1e-5)
    later = x.clone()
    later[:, -1] += 1.0                                  # causal: the last token does not reach the others
    assert torch.allclose(prompted_trunk(trunk, later, mask, prompts)[:, :-1], base[:, :-1], atol=1e-5)


def test_top_k_selection_counts_penalty_and_key_loss():
    pool = PromptPool(8, 2, size=6, length=2, top_k=3, dropout=0.0)
    query = torch.randn(5, 8)
    cos = F.cosine_similarity(query[:, None], pool.keys.detach()[None], dim=-1)
    pool.train()
    chosen = pool.select(query)
    assert torch.equal(chosen, cos.topk(3, dim=-1).indices)                       # highest first
    assert pool.counts.sum() == 15 and torch.equal(pool.counts, torch.bincount(chosen.flatten(), minlength=6).float())
    expected = -torch.stack([sum(F.cosine_similarity(pool.keys[j], query[i], dim=0) for j in chosen[i])
                             for i in range(5)]).mean()
    assert torch.allclose(pool.key_loss(query, chosen), expected, atol=1e-6)
    prompts = pool.layer_prompts()
    assert prompts.shape == (5, 2, 6, 8)
    assert torch.equal(prompts[1, 1, 2:4], pool.prompts[chosen[1, 1], 1])           # k-th prompt's tokens, layer 1
    pool.start_task(1)                                                             # penalty: (cos+1)/2 x inv_freq
    inv = 1.0 / (pool.counts / pool.counts.sum() + 1e-6)                          # L2M's base_prompt.py:100-101
    penalised = (cos + 1) / 2 * (inv / inv.sum())
    assert torch.equal(pool.select(query), penalised.topk(3, dim=-1).indices)
    pool.eval()
    assert torch.equal(pool.select(query), cos.topk(3, dim=-1).indices)           # no penalty in evaluation
    with pytest.raises(ValueError, match="no task-id oracle"):
        pool.select(query, task=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="top_k <= size"):
        PromptPool(8, 2, size=3, top_k=4)


def test_a_prompted_mddt_trains_only_its_pool_and_decodes_as_its_forward():
    m = model()
    frozen = {k: v.clone() for k, v in m.state_dict().items()}
    m.attach_pool(PromptPool(32, 2, size=6, length=2, top_k=2, dropout=0.1))
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"pool.keys", "pool.prompts"}
    x = inputs()
    m.train()
    loss = m.loss(m(**x), x["actions"], x["attention_mask"]) + 0.5 * m.pool.key_loss(m.pool_query, m.pool.selected)
    loss.backward()
    assert m.pool.prompts.grad.abs().sum() > 0 and m.pool.keys.grad.abs().sum() > 0
    assert all(torch.equal(m.state_dict()[k], v) for k, v in frozen.items())
    m.eval()
    logits = m(**x)
    acts = m.predict_action(**x)           # with prompts: one full forward per action dimension
    first = m.tokenizer.detokenize(logits[:, -1, 0].argmax(-1))
    assert torch.equal(acts[:, 0], first) and acts.shape == (4, 4)
    plain = model()
    assert not torch.allclose(plain(**x), logits, atol=1e-4)     # the prompts act on the frozen model


def test_sdpa_and_eager_attention_give_the_same_prompted_output():
    trunk = model().trunk
    x, prompts = torch.randn(2, 5, 32), torch.randn(2, 2, 3, 32)
    mask = torch.ones(2, 5)
    mask[1, :2] = 0
    sdpa = prompted_trunk(trunk, x, mask, prompts)
    trunk.config._attn_implementation = "eager"
    eager = prompted_trunk(trunk, x, mask, prompts)
    assert torch.allclose(sdpa, eager, atol=1e-5)
