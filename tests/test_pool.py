"""L2M's modulation pool: zero-initialised modulators change nothing, grouped application equals the
per-sample computation, selection by keys / penalty / oracle, the key loss trains only keys, and a
pooled MDDT trains only its pool."""

import pytest
import torch

from lamo_ray.config import ModelConfig
from lamo_ray.continual.pool import ModulationPool
from lamo_ray.mddt import MultiDomainDecisionTransformer

CFG = ModelConfig(backbone="gpt2", pretrained=False, n_layer=2, n_embd=32, n_head=2, finetune="full", dropout=0.0)


def inputs(b=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(states=torch.randn(b, k, 39, generator=g), actions=torch.rand(b, k, 4, generator=g) * 2 - 1,
                returns_to_go=torch.randn(b, k, 1, generator=g), rewards=torch.randn(b, k, 1, generator=g),
                timesteps=torch.arange(k).repeat(b, 1), attention_mask=torch.ones(b, k))


def pooled(size=4, seed=0):
    torch.manual_seed(seed)
    m = MultiDomainDecisionTransformer(CFG, max_ep_len=10)
    base = {k: v.clone() for k, v in m.state_dict().items()}
    m.attach_pool(ModulationPool(32, 128, 2, size=size, rank=4, alpha=8))
    return m, base


def test_zero_modulators_change_nothing_and_only_the_pool_trains():
    m, _ = pooled()
    torch.manual_seed(0)
    plain = MultiDomainDecisionTransformer(CFG, max_ep_len=10).eval()
    m.eval()
    x = inputs()
    assert torch.allclose(m(**x), plain(**x), atol=1e-6)          # B = 0 at init (L2M)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {f"pool.{n}" for n in ("keys", "q_a", "q_b", "v_a", "v_b", "ff_a", "ff_b")}
    assert m.pool.modulator_parameters(0) == 2 * (2 * (32 * 4 + 4 * 32) + (128 * 4 + 4 * 128))


def test_grouped_application_equals_the_per_sample_computation():
    m, _ = pooled()
    with torch.no_grad():
        for p in (m.pool.q_b, m.pool.v_b, m.pool.ff_b):
            p.normal_(0, 0.5)
    m.eval()
    x = inputs(b=6)
    task = torch.tensor([0, 1, 2, 1, 0, 3])
    together = m(**x, task=task)
    for i in range(6):   # each sample alone, with its modulator
        alone = m(**{k: v[i:i + 1] for k, v in x.items()}, task=task[i:i + 1])
        assert torch.allclose(together[i:i + 1], alone, atol=1e-5)
    other = m(**x, task=torch.tensor([1, 1, 2, 1, 0, 3]))     # sample 0 with another modulator differs
    assert not torch.allclose(other[0], together[0], atol=1e-4) and torch.allclose(other[1:], together[1:], atol=1e-5)


def test_selection_by_keys_penalty_and_oracle():
    pool = ModulationPool(8, 32, 1, size=3, rank=2)
    with torch.no_grad():
        pool.keys.copy_(torch.eye(3, 8))
    query = torch.tensor([[1.0, 0.1, 0, 0, 0, 0, 0, 0], [0, 0, 2.0, 0, 0, 0, 0, 0]])
    pool.eval()
    assert pool.select(query).tolist() == [0, 2] and pool.counts.sum() == 0     # evaluation counts nothing
    pool.train()
    for _ in range(5):
        pool.select(query[:1])                                                 # task 0 uses modulator 0
    assert pool.counts.tolist() == [5, 0, 0]
    pool.start_task(1)                                                          # the penalty steers away from 0
    assert pool.select(torch.tensor([[1.0, 0.9, 0, 0, 0, 0, 0, 0]])).tolist() == [1]
    pool.eval()
    assert pool.select(torch.tensor([[1.0, 0.9, 0, 0, 0, 0, 0, 0]])).tolist() == [0]   # not in evaluation
    assert pool.select(query, task=torch.tensor([2, 1])).tolist() == [2, 1]
    with pytest.raises(ValueError, match="task index 3 but the pool has 3"):
        pool.select(query, task=torch.tensor([3, 0]))


def test_key_loss_pulls_only_the_selected_keys():
    pool = ModulationPool(8, 32, 1, size=3, rank=2)
    query = torch.randn(4, 8, requires_grad=True)
    chosen = torch.tensor([0, 0, 2, 2])
    pool.key_loss(query, chosen).backward()
    assert query.grad is None                                                  # the query is detached
    assert pool.keys.grad[1].abs().sum() == 0 and pool.keys.grad[0].abs().sum() > 0
    before = torch.nn.functional.cosine_similarity(pool.keys[chosen], query, dim=-1).mean().item()
    opt = torch.optim.SGD([pool.keys], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        pool.key_loss(query, chosen).backward()
        opt.step()
    assert torch.nn.functional.cosine_similarity(pool.keys[chosen], query, dim=-1).mean().item() > before + 0.2


def test_a_pooled_model_learns_while_the_backbone_stays_put_and_decoding_agrees():
    m, base = pooled(size=2)
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = inputs(b=16, seed=1)
    losses = []
    for _ in range(40):
        logits = m(**x)
        loss = m.loss(logits, x["actions"], x["attention_mask"]) + 0.5 * m.pool.key_loss(m.pool_query, m.pool.selected)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    after = m.state_dict()
    for k, v in base.items():                                                  # no backbone or head weight moved
        wrapped = k.replace(".c_attn.", ".c_attn.base.").replace(".c_fc.", ".c_fc.base.")
        assert torch.equal(v, after[k if k in after else wrapped]), k
    m.eval()
    assert torch.equal(m.predict_action(**x, cache=True), m.predict_action(**x, cache=False))


def test_a_pooled_mddt_runs_meta_world_episodes_in_rollouts():
    """The model in `lamo_ray.evaluate.Rollout` on a Meta-World env: raw 39-dim states padded inside,
    4 of 6 action dims decoded, the oracle's task index passed per episode, 200-step episodes."""
    import numpy as np

    from lamo_ray.checkpoint import PolicySpec
    from lamo_ray.config import validate_trial
    from lamo_ray.domains.metaworld import env_id
    from lamo_ray.evaluate import Rollout

    m, _ = pooled(size=3)
    m.eval()
    cfg = validate_trial({"data": {"source": "unused", "context_length": 3, "rtg_scale": 200, "max_ep_len": 10},
                          "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 2, "n_embd": 32, "n_head": 2}})
    spec = PolicySpec(trial=cfg, state_shape=(39,), act_dim=4, discrete_actions=False, state_mean=None, state_std=None)
    recs = Rollout(spec, env_id("window-close"), num_envs=2, model=m, max_episode_steps=20).run(
        [(1000.0, 0), (1000.0, 1)], record=True, task_index=2)
    assert [r["length"] for r in recs] == [20, 20] and all("success" in r for r in recs)
    actions = recs[0]["trajectory"].actions
    assert actions.shape == (20, 4) and np.all(np.abs(actions) <= 1.0)
    assert set(m.pool.selected.tolist()) == {2}                                  # the oracle's modulator
