"""The ODT-TD3 learner update (issue 18): transitions from the segment sampler, the critic's TD3
update, the delayed actor update with the RL term, target networks, LoRA, and resume."""

import io

import numpy as np
import pytest
import torch

from lamo_ray.config import ModelConfig, OnlineConfig
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset
from lamo_ray.learner import Learner
from lamo_ray.model import DecisionTransformer
from lamo_ray.online.learner import TD3Learner
from lamo_ray.optim import MixedPrecision

S, A = 3, 2


def dataset(lengths=(6, 4), terminated=(True, False), seed=0):
    rng = np.random.default_rng(seed)
    trajs = [Trajectory(rng.standard_normal((n, S)).astype(np.float32),
                        rng.uniform(-1, 1, (n, A)).astype(np.float32),
                        rng.standard_normal(n).astype(np.float32), term) for n, term in zip(lengths, terminated)]
    return TrajectoryDataset(trajs, (S,), A, False, None, None, None, "test")


def sampler(ds, k=4, seed=0):
    return SegmentSampler(ds, k, 1.0, 100, np.zeros(S, np.float32), np.ones(S, np.float32), seed=seed)


def test_transitions_pair_each_step_with_its_successor():
    ds = dataset()
    batch = sampler(ds).sample(256, transitions=True)
    flat = {tuple(np.round(s, 5)): (i, t) for i, tr in enumerate(ds.trajectories) for t, s in enumerate(tr.observations)}
    seen_done = seen_cut = 0
    for b in range(256):
        for j in np.flatnonzero(batch["attention_mask"][b]):
            i, t = flat[tuple(np.round(batch["states"][b, j], 5))]
            tr = ds.trajectories[i]
            assert batch["rewards"][b, j] == tr.rewards[t]
            last = t == tr.length - 1
            assert batch["dones"][b, j] == float(last and tr.terminated)
            assert batch["critic_mask"][b, j] == float(not last or tr.terminated)
            if not last:
                assert np.allclose(batch["next_states"][b, j], tr.observations[t + 1])
                assert np.allclose(batch["next_actions"][b, j], tr.actions[t + 1])
                assert batch["next_timesteps"][b, j] == t + 1
            seen_done += last and tr.terminated
            seen_cut += last and not tr.terminated
    assert seen_done and seen_cut  # both kinds of final step were sampled
    assert "rewards" not in sampler(ds).sample(4)


def tiny_model(finetune="full"):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="gpt2", pretrained=False, n_layer=1, n_embd=16, n_head=1, finetune=finetune,
                      embedding="linear", dropout=0.0)
    return DecisionTransformer(cfg, (S,), A, 100)


def td3(**settings) -> OnlineConfig:
    """A TD3+ODT trial's ``online`` section (a 32-wide critic), ``settings`` over the paper's defaults."""
    method = "td3" if settings.get("sup_coeff") == 0 else "td3_odt"
    settings.pop("sup_coeff", None)   # a property of the method: 0 for 'td3'
    return OnlineConfig(**{"method": method, "iterations": 1, "target_return": 0.0, "critic_hidden": 32, **settings})


def actor(model, precision="fp32", grad_clip=0.25):
    """The DT's `Learner`: AdamW at 1e-3 over its trainable parameters, no schedule."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return Learner(opt, MixedPrecision.for_device(precision, torch.device("cpu")), grad_clip)


def learner(settings=None, finetune="full"):
    model = tiny_model(finetune)
    torch.manual_seed(1)
    return TD3Learner(model, actor(model), S, A, settings or td3())


def params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_policy_delay_and_target_networks():
    ln = learner(td3(policy_delay=2, tau=0.5))
    batch = sampler(dataset()).sample(32, transitions=True)
    before, target_before = params(ln.model), params(ln.target_model)
    first = ln.update(batch)
    assert "online/actor_sup_loss" not in first
    assert all(torch.equal(p, before[n]) for n, p in ln.model.named_parameters())  # no actor step yet
    second = ln.update(batch)
    assert "online/actor_rl_loss" in second
    name = "embed_state.weight"
    now = dict(ln.model.named_parameters())[name].detach()
    assert not torch.equal(now, before[name])
    expected = 0.5 * target_before[name] + 0.5 * now
    assert torch.allclose(dict(ln.target_model.named_parameters())[name], expected)


def test_the_critic_learns_terminal_rewards():
    """One-step trajectories (all terminal): the TD3 target is the reward itself."""
    ln = learner(td3(critic_lr=3e-3))
    smp = sampler(dataset(lengths=(1,) * 64, terminated=(True,) * 64), k=1)
    batch = smp.sample(64, transitions=True)
    assert batch["dones"].all() and batch["critic_mask"].all()
    losses = [ln.update(batch)["online/critic_loss"] for _ in range(150)]
    assert losses[-1] < 0.1 * losses[0]


def test_the_rl_term_alone_raises_q_of_the_dts_actions_and_lora_keeps_the_trunk_frozen():
    ln = learner(td3(sup_coeff=0.0, rl_coeff=1.0), finetune="lora")
    ln.critic_learner.optimizer.param_groups[0]["lr"] = 0.0   # the critic holds still
    batch = sampler(dataset(lengths=(20, 20))).sample(64, transitions=True)
    frozen = {n: p.detach().clone() for n, p in ln.model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in ln.model.named_parameters() if "lora_" in n}
    critic = params(ln.critic)
    assert frozen and lora
    t = {k: torch.from_numpy(v) for k, v in batch.items()}

    def q_of_dt():
        with torch.no_grad():
            pred = ln.model(t["states"], t["actions"], t["returns_to_go"], t["timesteps"], t["attention_mask"])
            return ln.critic(t["states"], pred)[0][t["attention_mask"] > 0].mean().item()

    start = q_of_dt()
    for _ in range(20):
        ln.update(batch)
    assert q_of_dt() > start
    assert all(torch.equal(p, critic[n]) for n, p in ln.critic.named_parameters())
    assert all(torch.equal(p, frozen[n]) for n, p in ln.model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, lora[n]) for n, p in ln.model.named_parameters() if n in lora)


def test_state_dict_resumes_the_same_updates():
    a = learner()
    batch = sampler(dataset()).sample(16, transitions=True)
    for _ in range(3):
        a.update(batch, torch.Generator().manual_seed(0))
    saved = io.BytesIO()  # through bytes, as a checkpoint (and no tensors shared with a)
    # the DT's optimiser is the trial's learner's, saved beside the TD3 state (train.py's optimizer.pt)
    torch.save({"model": a.model.state_dict(), "learner": a.state_dict(), "actor": a.actor.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    assert "optimizer" not in state["learner"]   # not saved twice
    b = learner()
    b.model.load_state_dict(state["model"])
    b.load_state_dict(state["learner"])
    b.actor.load_state_dict(state["actor"])
    ra = a.update(batch, torch.Generator().manual_seed(5))
    rb = b.update(batch, torch.Generator().manual_seed(5))
    assert ra == pytest.approx(rb) and b.updates == a.updates == 4


def test_settings_reject_what_cannot_learn():
    """The learner takes the trial's ``online`` section: one schema validates its knobs (before issue 29,
    a second dataclass re-declared them with its own checks)."""
    with pytest.raises(ValueError, match="rl_coeff"):
        td3(rl_coeff=-0.1)
    with pytest.raises(ValueError, match="rl_coeff > 0"):
        td3(sup_coeff=0.0, rl_coeff=0.0)          # 'td3' without its critic term: nothing to learn
    with pytest.raises(ValueError, match="policy_delay"):
        td3(policy_delay=0)
    with pytest.raises(ValueError, match="no critic"):
        TD3Learner(tiny_model(), actor(tiny_model()), S, A, OnlineConfig(method="odt", iterations=1, target_return=0.0))


def test_the_online_actor_update_runs_in_the_trials_precision_and_the_critic_on_its_device():
    """Issue 29: the TD3 actor update goes through the trial's `Learner` and its precision, as the
    offline steps do: forward and loss under its autocast (bf16 here, on the CPU); the critic step stays
    fp32. Before: the learner had no precision at all. A learner on CUDA puts its critic there: on this
    CPU-only torch an error naming CUDA."""
    entered = []
    real = MixedPrecision.autocast

    def spy(self):
        entered.append(self.name)
        return real(self)

    model = tiny_model()
    ln = TD3Learner(model, actor(model, "bf16"), S, A, td3(policy_delay=2))
    batch = sampler(dataset()).sample(8, transitions=True)
    before = params(model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MixedPrecision, "autocast", spy)
        ln.update(batch)                      # critic only (policy_delay 2): no autocast
        assert entered == []
        out = ln.update(batch)                # critic, then the actor under bf16
    assert entered == ["bf16"] and np.isfinite(out["online/actor_rl_loss"])
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in ln.critic.parameters())
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, AssertionError), match="CUDA|NVIDIA"):
            TD3Learner(model, actor(model), S, A, td3(), device="cuda")
