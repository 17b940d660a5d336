"""L2M's multi-domain DT: action tokens, padding, the autoregressive layout, the loss, and that cached
and uncached decoding agree; it learns a task's action tokens."""

import pytest
import torch

from lamo_ray.config import ModelConfig
from lamo_ray.mddt import ACTION_BINS, ActionTokenizer, MultiDomainDecisionTransformer

CFG = ModelConfig(backbone="gpt2", pretrained=False, n_layer=2, n_embd=32, n_head=2, finetune="full", dropout=0.0)


def model(**kw):
    torch.manual_seed(0)
    return MultiDomainDecisionTransformer(CFG, max_ep_len=50, **kw).eval()


def inputs(b=3, k=4, s=39, a=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, k)
    mask[0, :2] = 0      # a left-padded history
    return dict(states=torch.randn(b, k, s, generator=g), actions=torch.rand(b, k, a, generator=g) * 2 - 1,
                returns_to_go=torch.randn(b, k, 1, generator=g), rewards=torch.randn(b, k, 1, generator=g),
                timesteps=torch.arange(k).repeat(b, 1), attention_mask=mask)


def test_tokenizer_floors_into_64_bins_and_detokenises_to_lower_edges():
    tok = ActionTokenizer()
    a = torch.tensor([-1.0, -0.999, -0.96875, 0.0, 0.03, 0.99, 1.0, 1.5, -2.0])
    assert tok.tokenize(a).tolist() == [0, 0, 1, 32, 32, 63, 63, 63, 0]
    assert torch.allclose(tok.detokenize(torch.tensor([0, 32, 63])), torch.tensor([-1.0, 0.0, 1 - 2 / 64]))
    x = torch.rand(1000) * 2 - 1
    back = tok.detokenize(tok.tokenize(x))
    assert torch.all(back <= x + 1e-6) and torch.all(x - back < 2 / 64 + 1e-6)   # lower edge of its bin


def test_logits_are_autoregressive_over_action_dims_and_causal_over_steps():
    m = model()
    x = inputs()
    logits = m(**x)
    assert logits.shape == (3, 4, 6, ACTION_BINS)
    # changing a_t's dimension 2 changes the logits of its dimensions 3.. only; earlier steps unchanged
    y = {k: v.clone() for k, v in x.items()}
    y["actions"][:, -1, 1] = -y["actions"][:, -1, 1] + 0.5
    changed = m(**y)
    assert torch.allclose(changed[:, :, :2], logits[:, :, :2], atol=1e-6)
    assert torch.allclose(changed[:, :-1], logits[:, :-1], atol=1e-6)
    assert not torch.allclose(changed[1:, -1, 2:], logits[1:, -1, 2:], atol=1e-4)
    # the last step's reward is after every action token: no effect on its logits
    y = {k: v.clone() for k, v in x.items()}
    y["rewards"][:, -1] += 3.0
    assert torch.allclose(m(**y), logits, atol=1e-6)


def test_padding_errors_and_the_loss_counts_real_dims_only():
    m = model()
    x = inputs(a=4)
    logits = m(**x)
    loss = m.loss(logits, x["actions"], x["attention_mask"])
    # the same loss by hand: CE over real steps and the 4 real dims
    tokens = m.tokenizer.tokenize(x["actions"])
    real = x["attention_mask"].bool()
    ce = torch.nn.functional.cross_entropy(logits[:, :, :4][real].reshape(-1, ACTION_BINS), tokens[real].reshape(-1))
    assert loss.item() == pytest.approx(ce.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"state has 205 dimensions.*continual.mddt.state_dim"):
        m(**inputs(s=205))
    with pytest.raises(ValueError, match=r"action has 9 dimensions.*continual.mddt.action_dim"):
        m(**inputs(a=9))
    with pytest.raises(ValueError, match="not an MDDT mode"):
        MultiDomainDecisionTransformer(CFG.model_copy(update={"finetune": "lora"}), max_ep_len=10)


@pytest.mark.parametrize("a, dim_embedding", [(1, False), (4, False), (6, True)])
def test_cached_and_uncached_decoding_agree(a, dim_embedding):
    m = model(action_dim_embedding=dim_embedding)
    x = inputs(a=a, seed=3)
    fast = m.predict_action(**x, cache=True)
    slow = m.predict_action(**x, cache=False)
    assert fast.shape == (3, a) and torch.equal(fast, slow)


def test_learns_the_action_tokens_of_two_domains_in_one_model():
    """Two 'domains' (state sizes 39 and 11, the second in slots 39-49 of the shared space as L2M places
    DMC's observations beside Meta-World's; one action dimension each) in mixed batches, the action +-0.5
    by the sign of one state number, a different number and sign per domain: the loss falls from chance
    (log 64 = 4.16) to near 0, which needs the state of the right domain, and decoding gives the actions.
    (A second dimension, read at the first one's token, takes ~1000 steps at this size: not tested here;
    with both domains in slots 0-38 the rule is not linear in the state and 300 steps do not suffice.)"""
    torch.manual_seed(0)
    m = MultiDomainDecisionTransformer(CFG, max_ep_len=10)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)

    def batch(b=32, k=3):
        s1, s2 = torch.randn(b, k, 39), torch.randn(b, k, 11)
        a1, a2 = 0.5 * torch.sign(s1[..., 3:4]), -0.5 * torch.sign(s2[..., 5:6])
        states = torch.cat([torch.nn.functional.pad(s1, (0, 11)), torch.nn.functional.pad(s2, (39, 0))])
        actions = torch.cat([a1, a2])
        action_mask = torch.cat([torch.tensor([True] + [False] * 5).expand(b, 6),
                                 torch.tensor([True] * 1 + [False] * 5).expand(b, 6)])
        z = torch.zeros(2 * b, k, 1)
        return states, actions, z, z, torch.arange(k).repeat(2 * b, 1), torch.ones(2 * b, k), action_mask

    losses = []
    for _ in range(300):
        s, a, r, rw, t, mask, am = batch()
        loss = m.loss(m(s, a, r, rw, t, mask), a, mask, am)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[:5]) / 5 > 3.5 and sum(losses[-10:]) / 10 < 0.3, (losses[:5], losses[-10:])
    m.eval()
    s, a, r, rw, t, mask, am = batch(b=32)
    assert (m.predict_action(s[:32], a[:32, :, :1], r[:32], rw[:32], t[:32], mask[:32]) == a[:32, -1, :1]).float().mean() > 0.9
    assert (m.predict_action(s[32:, :, :50], a[32:, :, :1], r[32:], rw[32:], t[32:], mask[32:])
            == a[32:, -1, :1]).float().mean() > 0.9   # the bin of +-0.5 is its lower edge


def test_a_pretrained_trunk_keeps_its_blocks_and_trains(tmp_path):
    """"LaMo as the MDDT trunk" (sweeps/l2m_cw10.yaml lamo_trunk): a pre-trained GPT-2 (here a small one
    saved locally) cut to its first n_layer blocks, its weights kept, its position table dropped (the
    timestep embedding is the only position signal, as in L2M), and all of it trained."""
    import transformers

    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=100))
    lm.save_pretrained(tmp_path / "lm")
    cfg = ModelConfig(backbone=str(tmp_path / "lm"), pretrained=True, n_layer=2, finetune="full", dropout=0.0)
    m = MultiDomainDecisionTransformer(cfg, max_ep_len=50)
    from lamo_ray.model import NoPositionEmbedding

    blocks = m.backbone.base_model.h
    assert len(blocks) == 2 and isinstance(m.backbone.base_model.wpe, NoPositionEmbedding)
    for i in range(2):
        for name, value in lm.transformer.h[i].state_dict().items():
            torch.testing.assert_close(blocks[i].state_dict()[name], value)
    x = inputs()
    logits = m(**x)
    m.loss(logits, x["actions"], x["attention_mask"]).backward()
    assert blocks[0].attn.c_attn.weight.grad is not None and blocks[0].attn.c_attn.weight.grad.abs().sum() > 0
