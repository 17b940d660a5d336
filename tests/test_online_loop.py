"""The online loop (issue 18) with tiny shapes on Hopper (variable episode lengths: it falls over):
sampled rollouts from the tanh-Gaussian head, the collector's budget rule and its independence of
the actor layout, resuming the online phase from a checkpoint's state, and ODT's stochastic loss.
Ray: one local instance and three rollout actors for the whole file (each takes ~10 s to start)."""

import io

import numpy as np
import pytest
import ray
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import validate_trial
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset
from lamo_ray.evaluate import Rollout
from lamo_ray.learner import Learner
from lamo_ray.model import DecisionTransformer
from lamo_ray.online.loop import (Collector, OnlinePhase, episode_seed, make_learner, stochastic_loss,
                                  temperature_parameters)
from lamo_ray.optim import MixedPrecision
from lamo_ray.train import TEMPERATURE_GROUP, make_optimizer

ENV, S, A = "Hopper-v5", 11, 3
SEED = 3


def trial(action_head="deterministic", online=None, dropout=0.0, **train):
    online = {"method": "odt" if action_head == "tanh_gaussian" else "td3_odt", "iterations": 2,
              "target_return": 100.0, "num_actors": 1, "envs_per_actor": 1, **(online or {})}
    return validate_trial({
        "seed": SEED,
        "data": {"source": "unused", "context_length": 4, "rtg_scale": 100.0, "max_ep_len": 200},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1,
                  "finetune": "full", "embedding": "linear", "dropout": dropout, "action_head": action_head},
        "train": {"batch_size": 8, "steps": 10, "lr": 1e-3, "warmup_steps": 4, **train},
        "online": online,
    })


def build(cfg, init_seed=0):
    torch.manual_seed(init_seed)
    return DecisionTransformer(cfg.model, (S,), A, cfg.data.max_ep_len)


def spec_of(cfg, model):
    return PolicySpec(trial=cfg, state_shape=(S,), act_dim=A, discrete_actions=False,
                      state_mean=np.zeros(S, np.float32), state_std=np.ones(S, np.float32),
                      backbone_config=model.backbone_base_config)


def stochastic_policy():
    """A tanh-Gaussian DT whose Gaussian means are large: untanh'd samples would leave [-1, 1]."""
    cfg = trial("tanh_gaussian")
    model = build(cfg)
    with torch.no_grad():
        model.action_head.mu.weight.mul_(10.0)
    return cfg, model.eval()


def same_trajectory(a: Trajectory, b: Trajectory) -> bool:
    return (np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
            and np.array_equal(a.rewards, b.rewards) and a.terminated == b.terminated)


@pytest.fixture(scope="module")
def collectors():
    """The TD3 trial's rollout actors: 2 actors x 1 env, and 1 actor x 2 envs (the trial's own layout).
    Few: an actor takes ~10 s to start here (imports), one after another."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = td3_trial()
    spec = spec_of(cfg, build(cfg))
    wide = cfg.online.model_copy(update={"transitions_per_iteration": 200, "num_actors": 2, "envs_per_actor": 1})
    out = {"wide": Collector(spec, ENV, wide, cfg.seed, stochastic=False, max_episode_steps=60),
           "deep": Collector(spec, ENV, cfg.online, cfg.seed, stochastic=False, max_episode_steps=60)}
    yield out
    for c in out.values():
        c.shutdown()
    ray.shutdown()


# --------------------------------------------------------------------------- a. sampled rollouts


def test_sampled_rollouts_are_bounded_seeded_per_episode_and_need_a_stochastic_head():
    cfg, model = stochastic_policy()
    spec = spec_of(cfg, model)
    two = Rollout(spec, ENV, num_envs=2, model=model, max_episode_steps=40)
    one = Rollout(spec, ENV, num_envs=1, model=model, max_episode_steps=40)
    pair = two.run([(100.0, 5), (100.0, 6)], record=True, sample=True, noise_seed=7)
    alone = one.run([(100.0, 6)], record=True, sample=True, noise_seed=7)[0]
    other = one.run([(100.0, 6)], record=True, sample=True, noise_seed=8)[0]
    mean = one.run([(100.0, 6)], record=True)[0]
    actions = np.concatenate([r["trajectory"].actions for r in pair + [other]])
    assert np.abs(actions).max() <= 1.0 and np.abs(actions).max() > 0.9  # tanh-squashed, and the bound matters
    # the same (noise seed, env seed) gives the same episode, whichever slot and batch ran it
    assert same_trajectory(pair[1]["trajectory"], alone["trajectory"]) and pair[1]["return"] == alone["return"]
    # another noise seed, or the mean action, gives another episode from the same env seed
    assert not np.array_equal(other["trajectory"].actions[0], alone["trajectory"].actions[0])
    assert not np.array_equal(mean["trajectory"].actions[0], alone["trajectory"].actions[0])
    assert np.array_equal(other["trajectory"].observations[0], alone["trajectory"].observations[0])  # same reset
    with pytest.raises(ValueError, match="stochastic"):
        deterministic = trial()
        Rollout(spec_of(deterministic, build(deterministic)), ENV, num_envs=1,
                max_episode_steps=5).run([(100.0, 0)], sample=True)


# --------------------------------------------------------------------------- b. the collector


@pytest.mark.slow  # starts Ray and rollout actors
def test_collector_keeps_the_shortest_prefix_and_its_data_do_not_depend_on_the_actor_layout(collectors):
    """Exploring with seeded noise (the deterministic head's collection; the stochastic head's sampling
    draws from the same per-episode generators, test above)."""
    cfg = td3_trial()
    weights = build(cfg).rollout_state_dict()
    wide, deep = collectors["wide"], collectors["deep"]  # 2 actors x 1 env, 1 actor x 2 envs
    assert wide.slots == deep.slots == 2 and len(wide.actors) == 2 and len(deep.actors) == 1
    budget = wide.online.transitions_per_iteration
    x = wide.gather(wide.submit(weights, 0))
    lengths = [t.length for t in x.trajectories]
    assert x.lengths == lengths and len(set(lengths)) > 1  # Hopper falls: episodes of different lengths
    assert sum(lengths) >= budget > sum(lengths[:-1])  # the shortest prefix reaching the budget
    assert (len(lengths) + x.dropped) % 2 == 0 and x.dropped < 2  # whole waves of 2, the rest dropped
    assert x.env_steps >= sum(lengths) and (x.env_steps == sum(lengths)) == (x.dropped == 0)
    assert x.returns == pytest.approx([float(t.rewards.sum()) for t in x.trajectories], rel=1e-5)
    assert len(lengths) >= 4

    # a budget reached by the 3rd episode: the 2nd wave's 2nd episode is collected and dropped
    small = lengths[0] + lengths[1] + 1
    own = deep.online
    deep.online = own.model_copy(update={"transitions_per_iteration": small})  # gather reads it
    try:
        y = deep.gather(deep.submit(weights, 0))
        later = deep.gather(deep.submit(weights, 1))  # another iteration: other env seeds and noise
    finally:
        deep.online = own
    assert len(y.trajectories) == 3 and y.dropped == 1 and y.env_steps == sum(lengths[:4])
    assert sum(y.lengths) >= small > sum(y.lengths[:-1])
    for a, b in zip(y.trajectories, x.trajectories):  # the same episodes, whatever ran them
        assert same_trajectory(a, b)
    assert not np.array_equal(later.trajectories[0].observations[0], y.trajectories[0].observations[0])
    # the noise reached the env: the actions are not the policy's mean (a noise-free local rollout)
    model = build(cfg).eval()
    plain = Rollout(spec_of(cfg, model), ENV, num_envs=1, model=model, max_episode_steps=60).run(
        [(cfg.online.target_return, episode_seed(cfg.seed, 0, 0))], record=True)[0]["trajectory"]
    assert np.array_equal(plain.observations[0], y.trajectories[0].observations[0])
    assert not np.array_equal(plain.actions[0], y.trajectories[0].actions[0])


@pytest.mark.slow  # starts Ray and rollout actors
def test_a_killed_collecting_actor_is_replaced_and_the_collection_unchanged(collectors):
    """Issue 29: a collecting actor killed mid-iteration (here between two iterations' submissions and
    before the gather, so its wave is lost) is replaced by the trial's rollout pool, given the iteration's
    weights, and re-runs its episodes with the same env seeds and noise streams: the iteration keeps the
    transitions an undisturbed collection keeps."""
    cfg = td3_trial()
    weights = build(cfg).rollout_state_dict()
    wide = collectors["wide"]
    undisturbed = wide.gather(wide.submit(weights, 3))
    pending = wide.submit(weights, 3)
    ray.kill(wide.actors[1], no_restart=True)
    again = wide.gather(pending)
    assert wide.pool.restarts == 1
    assert len(again.trajectories) == len(undisturbed.trajectories) and again.lengths == undisturbed.lengths
    for a, b in zip(again.trajectories, undisturbed.trajectories):
        assert same_trajectory(a, b)


# --------------------------------------------------------------------------- c. resume


def offline_data():
    rng = np.random.default_rng(0)
    trajs = [Trajectory(rng.standard_normal((n, S)).astype(np.float32), rng.uniform(-1, 1, (n, A)).astype(np.float32),
                        rng.standard_normal(n).astype(np.float32), False) for n in (12, 9)]
    return TrajectoryDataset(trajs, (S,), A, False, None, None, ENV, "test")


def td3_trial():
    return trial(online={"transitions_per_iteration": 20, "updates_per_iteration": 3, "replay_size": 4,
                         "critic_hidden": 32, "num_actors": 1, "envs_per_actor": 2},
                 dropout=0.1)  # dropout: the updates' RNG must be reseeded


def phase_for(cfg, model, collector):
    temperature = temperature_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad and not any(p is t for t in temperature)]
    actor = Learner.build(params, cfg.train, MixedPrecision.for_device("fp32", torch.device("cpu")),
                          temperature=temperature)
    learner = make_learner(cfg, model, actor, S, A)
    phase = OnlinePhase(cfg, model, learner, offline_data(), np.zeros(S, np.float32), np.ones(S, np.float32),
                        collector, supervised_step=None)
    return phase, actor.optimizer, actor.scheduler


def stable(metrics):
    return {k: v for k, v in metrics.items() if not k.endswith("_s") and "per_s" not in k}


@pytest.mark.slow  # starts Ray and rollout actors
def test_online_phase_resumes_from_a_checkpoint_exactly(collectors):
    cfg = td3_trial()
    model = build(cfg)
    model.train()
    collector = collectors["deep"]
    straight, optimizer, scheduler = phase_for(cfg, model, collector)
    assert straight.learner is not None
    first = straight.run_iteration()
    saved = io.BytesIO()  # what a checkpoint holds after iteration 1, through bytes (nothing shared)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "online": straight.state_dict()}, saved)
    after_one = {n: p.detach().clone() for n, p in model.named_parameters()}
    second = straight.run_iteration()

    saved.seek(0)
    ckpt = torch.load(saved, weights_only=True)
    fresh = build(cfg, init_seed=1)  # other initial weights: everything must come from the checkpoint
    fresh.load_state_dict(ckpt["model"])
    fresh.train()
    resumed, r_optimizer, r_scheduler = phase_for(cfg, fresh, collector)
    resumed.learner.load_state_dict(ckpt["online"]["learner"])  # the order train_loop restores them in
    r_optimizer.load_state_dict(ckpt["optimizer"])
    r_scheduler.load_state_dict(ckpt["scheduler"])
    resumed.load_state_dict(ckpt["online"])
    assert resumed.iteration == 1 and resumed.replay.added_transitions == first["online/transitions"]
    again = resumed.run_iteration()

    assert first["online/transitions"] >= 20 and second["online/transitions"] >= first["online/transitions"] + 20
    assert resumed.iteration == straight.iteration == 2
    assert resumed.replay.added_transitions == straight.replay.added_transitions
    assert resumed.replay.added == straight.replay.added and resumed.replay.start == straight.replay.start
    assert resumed.learner.updates == straight.learner.updates == 6
    assert stable(again) == pytest.approx(stable(second), rel=1e-6, abs=1e-7)
    assert r_scheduler.get_last_lr() == scheduler.get_last_lr()
    moved = False
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-7), name
        moved |= not torch.equal(p, after_one[name])
    assert moved  # the second iteration did change the weights
    for p, q in zip(straight.learner.critic.parameters(), resumed.learner.critic.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-7)
    assert resumed.step_after(1) == cfg.train.steps + 2 * 3 == cfg.total_steps


class WeightsCollector:
    """The `Collector` interface in this process: each iteration's episodes depend on the weights it was
    submitted with (their rewards are a function of them) and on the iteration (its states)."""

    def __init__(self):
        self.submitted: dict[int, dict[str, torch.Tensor]] = {}

    def submit(self, state_dict, iteration):
        from types import SimpleNamespace

        self.submitted[iteration] = {k: v.detach().clone() for k, v in state_dict.items()}
        return SimpleNamespace(iteration=iteration, weights=self.submitted[iteration])

    def gather(self, pending):
        from lamo_ray.online.loop import Collected

        rng = np.random.default_rng(pending.iteration)
        level = float(sum(v.float().sum() for v in pending.weights.values()))
        trajs = [Trajectory(rng.standard_normal((n, S)).astype(np.float32), rng.uniform(-1, 1, (n, A)).astype(np.float32),
                            np.full(n, level, np.float32), False) for n in (12, 10)]
        return Collected(trajs, [float(t.rewards.sum()) for t in trajs], [t.length for t in trajs], [], 0, 22, 0.01)

    def shutdown(self):
        pass


def test_overlapped_collection_uses_the_previous_weights_and_a_resumed_run_repeats_the_uninterrupted_one():
    """Issue 30: with online.overlap the episodes of iteration i+1 are collected with the weights iteration
    i started its updates from (submitted before them); a checkpoint waits for that collection and saves it,
    so a run resumed after iteration 1 adds the same episodes and ends where the uninterrupted run ends.
    Before: the pending collection was not in the checkpoint, and the resumed run collected iteration 2
    with the weights after iteration 1's updates."""
    cfg = td3_trial()
    cfg = cfg.model_copy(update={"online": cfg.online.model_copy(update={"overlap": True, "iterations": 3})})
    model = build(cfg)
    model.train()
    collector = WeightsCollector()
    straight, optimizer, scheduler = phase_for(cfg, model, collector)
    starts = []
    for _ in range(2):
        starts.append({k: v.detach().clone() for k, v in model.rollout_state_dict().items()})
        straight.run_iteration()
    # iteration i+1's collection was submitted with the weights iteration i started from
    for i in (0, 1):
        assert all(torch.equal(collector.submitted[i + 1][k], starts[i][k]) for k in starts[i])
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "online": straight.state_dict()}, saved)
    last = straight.run_iteration()

    saved.seek(0)
    ckpt = torch.load(saved, weights_only=True)
    fresh = build(cfg, init_seed=1)
    fresh.load_state_dict(ckpt["model"])
    fresh.train()
    again = WeightsCollector()
    resumed, r_optimizer, r_scheduler = phase_for(cfg, fresh, again)
    resumed.learner.load_state_dict(ckpt["online"]["learner"])
    r_optimizer.load_state_dict(ckpt["optimizer"])
    r_scheduler.load_state_dict(ckpt["scheduler"])
    resumed.load_state_dict(ckpt["online"])
    repeat = resumed.run_iteration()
    assert again.submitted == {}                      # iteration 2's episodes came from the checkpoint
    assert stable(repeat) == pytest.approx(stable(last), rel=1e-6, abs=1e-7)
    assert [t.rewards[0] for t in resumed.replay.trajectories] == [t.rewards[0] for t in straight.replay.trajectories]
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- d. ODT's loss


def segments(cfg, batch=16):
    ds = offline_data()
    sampler = SegmentSampler(ds, cfg.data.context_length, cfg.data.rtg_scale, cfg.data.max_ep_len,
                             np.zeros(S, np.float32), np.ones(S, np.float32), seed=0)
    return {k: torch.as_tensor(v) for k, v in sampler.sample(batch).items()}


def odt_steps(model, cfg, batch, steps):
    temperature = temperature_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad and not any(p is t for t in temperature)]
    optimizer = make_optimizer(params, cfg.train, temperature)
    infos = []
    for _ in range(steps):
        loss, temperature_loss, info = stochastic_loss(model, batch)
        infos.append(info)
        optimizer.zero_grad(set_to_none=True)
        (loss + temperature_loss).backward()
        optimizer.step()
    return optimizer, infos


def nll(model, batch):
    with torch.no_grad():
        return stochastic_loss(model, batch)[2]["nll"]


def test_odt_loss_fits_the_data_actions_and_the_temperature_follows_the_entropy():
    cfg = trial("tanh_gaussian")
    model = build(cfg)
    batch = segments(cfg)
    (log_t,) = temperature_parameters(model)
    assert model.action_head.target_entropy == -A
    start_nll = nll(model, batch)
    optimizer, infos = odt_steps(model, cfg, batch, steps=30)
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["params"] == [log_t]
    assert optimizer.param_groups[1]["lr"] == TEMPERATURE_GROUP["lr"] != cfg.train.lr
    assert nll(model, batch) < 0.5 * start_nll and infos[-1]["nll"] < 0.5 * infos[0]["nll"]

    # the temperature moves toward the target entropy, by Adam's ~lr (the temperature group's) a step:
    # down while the entropy is above the target, up while it is below
    for target, direction in ((-50.0, -1.0), (50.0, 1.0)):
        model.action_head.target_entropy = target
        before = log_t.item()
        _, infos = odt_steps(model, cfg, batch, steps=10)
        assert all(np.sign(i["entropy"] - target) == -direction for i in infos)
        assert (log_t.item() - before) * direction == pytest.approx(10 * TEMPERATURE_GROUP["lr"], rel=0.2)
        assert (np.diff([i["temperature"] for i in infos]) * direction > 0).all()


def test_the_odt_online_updates_ask_for_the_sessions_device():
    """Issue 29: ODT's online updates put their replay batches on the trial's device (a CUDA session: on
    this CPU-only torch an error naming CUDA, not a silent CPU update); on the CPU they reach the step."""
    cfg = trial("tanh_gaussian")
    model = build(cfg)
    seen = []
    for device in ("cpu", "cuda"):
        phase = OnlinePhase(cfg, model, None, offline_data(), np.zeros(S, np.float32), np.ones(S, np.float32), None,
                            supervised_step=lambda batch: seen.append(batch["states"].device.type) or {}, device=device)
        if device == "cuda" and not torch.cuda.is_available():
            with pytest.raises((RuntimeError, AssertionError), match="CUDA|NVIDIA"):
                phase._updates(0)
        else:
            phase._updates(0)
    assert seen and set(seen) == {"cpu"} and len(seen) == cfg.online.updates_per_iteration
