"""Rollout evaluation: batching does not change results, RTG is decremented by reward / scale,
windows are left-padded like training segments, scores are normalized with the right references."""

import math

import numpy as np
import pytest
import torch

from lamo_ray.config import EvalConfig, validate_trial
from lamo_ray.checkpoint import PolicySpec
from lamo_ray.evaluate import Rollout, build_policy, normalized_score, reference_scores, summarize

ENV = "Reacher-v5"


def trial(K=3, scale=10.0):
    return validate_trial({
        "data": {"source": "unused", "context_length": K, "rtg_scale": scale, "max_ep_len": 64},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1,
                  "finetune": "full", "embedding": "linear"},
    })


def spec_for(cfg):
    return PolicySpec(trial=cfg, state_shape=(10,), act_dim=2, discrete_actions=False,
                      state_mean=np.zeros(10, np.float32), state_std=np.ones(10, np.float32))


class SpyPolicy(torch.nn.Module):
    """Deterministic policy that records its inputs: action = tanh of the last state's first 2 dims."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        self.calls.append({k: v.clone() for k, v in dict(states=states, actions=actions, rtg=returns_to_go,
                                                            timesteps=timesteps, mask=attention_mask).items()})
        return torch.tanh(states[:, -1, :2])


def test_rtg_decrements_by_reward_over_scale_and_windows_left_pad():
    cfg = trial(K=3, scale=10.0)
    spy = SpyPolicy()
    rollout = Rollout(spec_for(cfg), ENV, num_envs=1, model=spy)
    (rec,) = rollout.run([(-4.0, 123)])
    assert rec["length"] == 50 and rec["seed"] == 123
    first, second, fourth = spy.calls[0], spy.calls[1], spy.calls[3]
    # step 0: one real token at the right, K-1 padded on the left
    assert first["mask"][0].tolist() == [0.0, 0.0, 1.0]
    assert first["rtg"][0, -1, 0].item() == pytest.approx(-0.4)
    assert first["timesteps"][0].tolist() == [0, 0, 0]
    # step 1: rtg_1 = rtg_0 - r_0 / scale, previous action in the window, current action slot zero
    r0 = (first["rtg"][0, -1, 0] - second["rtg"][0, -1, 0]).item() * 10.0
    assert second["mask"][0].tolist() == [0.0, 1.0, 1.0]
    assert r0 < 0  # Reacher rewards are negative distances / control costs
    assert torch.allclose(second["actions"][0, -2], torch.tanh(first["states"][0, -1, :2]))
    assert torch.all(second["actions"][0, -1] == 0)
    # step 3: the window slides (K = 3 most recent steps)
    assert fourth["mask"][0].tolist() == [1.0, 1.0, 1.0]
    assert fourth["timesteps"][0].tolist() == [1, 2, 3]
    # the episode return equals the sum of the rewards the RTG sequence implies
    rtgs = [c["rtg"][0, -1, 0].item() for c in spy.calls]
    implied = (rtgs[0] - rtgs[-1]) * 10.0
    assert rec["return"] < implied + 1e-3  # the last reward is not in the RTG sequence
    assert math.isfinite(rec["return"])


def test_batched_envs_give_the_same_episodes_as_one_env():
    cfg = trial()
    torch.manual_seed(0)
    model = build_policy(spec_for(cfg), load_weights=False)
    episodes = [(-4.0, s) for s in range(5)] + [(-8.0, s) for s in range(5)]
    one = Rollout(spec_for(cfg), ENV, num_envs=1, model=model).run(episodes)
    many = Rollout(spec_for(cfg), ENV, num_envs=4, model=model).run(episodes)
    assert [r["seed"] for r in many] == [s for _, s in episodes]
    np.testing.assert_allclose([r["return"] for r in many], [r["return"] for r in one], rtol=1e-4, atol=1e-4)


class ConstantPolicy(torch.nn.Module):
    """Always the same (out-of-range) continuous action."""

    def __init__(self, action):
        super().__init__()
        self.action = torch.tensor(action)

    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        return self.action.expand(states.shape[0], -1)


def test_raw_actions_reach_the_env_unless_clip_actions():
    """LaMo passes the model's raw action to env.step: Reacher's control cost sees it unclipped."""
    def episode_return(clip):
        cfg = validate_trial({**trial().model_dump(), "eval": {"clip_actions": clip}})
        (rec,) = Rollout(spec_for(cfg), ENV, num_envs=1, model=ConstantPolicy([3.0, -3.0])).run([(-4.0, 7)])
        return rec["return"]

    clipped, raw = episode_return(True), episode_return(False)
    # Reacher-v5's control cost per step is |a|^2 (reward_control_weight 1): 2 with a = (1, -1), 18 with
    # (3, -3); the physics is the same (MuJoCo clamps the control), so 50 steps differ by exactly 50 x 16
    assert clipped - raw == pytest.approx(50 * (18 - 2), rel=1e-6)


def test_same_seed_same_return_different_seed_differs():
    cfg = trial()
    spy = SpyPolicy()
    recs = Rollout(spec_for(cfg), ENV, num_envs=2, model=spy).run([(-4.0, 1), (-4.0, 1), (-4.0, 2)])
    assert recs[0]["return"] == recs[1]["return"]
    assert recs[0]["return"] != recs[2]["return"]


def test_normalized_score_and_reference_precedence():
    assert normalized_score(5.0, 0.0, 10.0) == pytest.approx(50.0)
    assert math.isnan(normalized_score(5.0, None, 10.0))
    ev = EvalConfig()
    assert reference_scores(ev, "Hopper-v5", (None, None)) == (-20.272305, 3234.3)
    assert reference_scores(ev, "Hopper-v5", (0.0, 1.0)) == (0.0, 1.0)
    ev = EvalConfig(ref_min_score=-1.0, ref_max_score=1.0)
    assert reference_scores(ev, "Hopper-v5", (0.0, 2.0)) == (-1.0, 1.0)
    assert reference_scores(EvalConfig(), "Reacher-v5", (None, None)) == (None, None)


def test_summarize_reports_best_target():
    recs = [{"target_return": 1.0, "return": r, "length": 10} for r in (1.0, 3.0)] + \
           [{"target_return": 2.0, "return": r, "length": 20} for r in (5.0, 7.0)]
    s = summarize(recs, (0.0, 10.0))
    assert s["eval/target_1/return_mean"] == 2.0 and s["eval/target_2/return_mean"] == 6.0
    assert s["eval/target_2/normalized_score"] == pytest.approx(60.0)
    assert s["normalized_score"] == pytest.approx(60.0) and s["return_mean"] == 6.0
    assert s["eval/target_1/length_mean"] == 10.0 and s["eval/target_2/episodes"] == 2.0
    # 95% Student-t interval over the target's episodes: scores 50, 70 -> 60 +- 12.706 * 14.142 / sqrt(2)
    assert s["normalized_score_ci_low"] == pytest.approx(60.0 - 127.062, rel=1e-4)
    assert s["eval/target_2/normalized_score_ci_high"] == pytest.approx(60.0 + 127.062, rel=1e-4)
    one = summarize(recs[:1], (0.0, 10.0))
    assert math.isnan(one["normalized_score_ci_low"])          # one episode: no interval
    unknown = summarize(recs, (None, None))
    assert math.isnan(unknown["normalized_score"]) and math.isnan(unknown["normalized_score_ci_high"])


def test_collection_records_trajectories_and_explores_with_clamped_noise():
    """Online collection (issue 18): the record's trajectory is exactly what happened (states as the
    env gave them, executed actions, rewards summing to the return), noise is seeded, clamped to the
    action space, and held in the context."""
    cfg = trial(K=3)
    spy = SpyPolicy()
    rollout = Rollout(spec_for(cfg), ENV, num_envs=2, model=spy)
    plain = rollout.run([(-4.0, 1), (-4.0, 2)], record=True)
    for rec in plain:
        t = rec["trajectory"]
        assert t.observations.shape == (rec["length"], 10) and t.actions.shape == (rec["length"], 2)
        assert t.rewards.sum() == pytest.approx(rec["return"], abs=1e-4) and not t.terminated  # Reacher times out
        # noise-free: the executed action is the policy's, tanh of the state's first 2 dims
        assert np.allclose(t.actions, np.tanh(t.observations[:, :2]), atol=1e-5)
    noisy = [rollout.run([(-4.0, 1)], record=True, action_noise=0.5, noise_seed=s)[0] for s in (7, 7, 8)]
    a = [r["trajectory"].actions for r in noisy]
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], a[2])      # seeded
    assert np.abs(a[0]).max() <= 1.0 and not np.allclose(a[0], np.tanh(noisy[0]["trajectory"].observations[:, :2]))
    spy.calls.clear()
    rollout.run([(-4.0, 1)], record=True, action_noise=0.5, noise_seed=7)
    assert torch.allclose(spy.calls[1]["actions"][0, -2], torch.from_numpy(a[0][0]))  # the context holds it
    with pytest.raises(ValueError, match="action_noise"):
        rollout.run([(-4.0, 1)], action_noise=-0.1)


def test_reward_shift_and_delay_reach_rtg_and_record_but_not_the_score():
    """data.reward_shift / data.delayed_reward (ODT-TD3): the return-to-go a rollout conditions on and the
    recorded trajectory use the transformed rewards, equal to transforming the raw ones after the fact;
    the episode's return (the score) is the env's own."""
    from lamo_ray.data.rewards import RewardTransform

    cfg = trial(K=3)
    (raw,) = Rollout(spec_for(cfg), ENV, num_envs=1, model=SpyPolicy()).run([(-4.0, 5)], record=True)
    moved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"reward_shift": -1.0, "delayed_reward": 4})})
    spy = SpyPolicy()
    (rec,) = Rollout(spec_for(moved), ENV, num_envs=1, model=spy).run([(-4.0, 5)], record=True)
    assert rec["return"] == pytest.approx(raw["return"], abs=1e-6) and rec["length"] == raw["length"] == 50
    expected = RewardTransform(shift=-1.0, delay=4).trajectory(raw["trajectory"].rewards)
    assert np.allclose(rec["trajectory"].rewards, expected, atol=1e-5)
    assert np.count_nonzero(expected) == 13 and expected[3] == pytest.approx(raw["trajectory"].rewards[:4].sum() - 4, abs=1e-5)
    rtgs = np.array([c["rtg"][0, -1, 0].item() for c in spy.calls])
    assert np.allclose(-np.diff(rtgs) * 10.0, expected[:-1], atol=1e-4)


def test_eval_context_length_pads_the_older_steps():
    """eval.context_length (ODT's eval_context_length): the model sees only the last N steps, padded to K
    like an episode's start; the rolling windows still hold K steps."""
    cfg = trial(K=4)
    short = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"context_length": 2})})
    spy = SpyPolicy()
    Rollout(spec_for(short), ENV, num_envs=1, model=spy).run([(-4.0, 3)])
    full = SpyPolicy()
    Rollout(spec_for(cfg), ENV, num_envs=1, model=full).run([(-4.0, 3)])
    assert full.calls[5]["mask"][0].tolist() == [1.0, 1.0, 1.0, 1.0]
    call = spy.calls[5]
    assert call["mask"][0].tolist() == [0.0, 0.0, 1.0, 1.0]
    for key in ("states", "actions", "rtg", "timesteps"):
        assert torch.all(call[key][0, :2] == 0), key
        assert torch.equal(call[key][0, 2:], full.calls[5][key][0, 2:]), key
    with pytest.raises(Exception, match="eval.context_length"):
        validate_trial({"data": {"source": "x", "context_length": 2}, "eval": {"context_length": 3}})


class RewardSpy(SpyPolicy):
    """A policy that reads the window's rewards (as `lamo_ray.mddt`'s model) and records them and ``task``."""

    uses_rewards = True

    def predict_action(self, states, actions, returns_to_go, rewards, timesteps, attention_mask, task=None):
        self.calls.append({"rewards": rewards.clone(), "rtg": returns_to_go.clone(), "task": task,
                           "mask": attention_mask.clone()})
        return torch.tanh(states[:, -1, :2])


def test_a_reward_reading_model_gets_each_steps_reward_and_the_task_index():
    cfg = trial(K=3, scale=10.0)
    spy = RewardSpy()
    (rec,) = Rollout(spec_for(cfg), ENV, num_envs=1, model=spy).run([(-4.0, 7)], record=True, task_index=2)
    rewards = rec["trajectory"].rewards
    assert all(c["task"].tolist() == [2] for c in spy.calls)
    for t in (1, 2, 5, 20):
        window = spy.calls[t]["rewards"][0, :, 0].numpy()
        assert window[-1] == 0                                            # the current step's reward is unknown
        expected = rewards[max(0, t - 2):t] / 10.0                        # the previous steps', left-padded
        assert np.allclose(window[3 - 1 - len(expected):-1], expected, atol=1e-6)
    with pytest.raises(ValueError, match="task_index"):
        Rollout(spec_for(cfg), ENV, num_envs=1, model=SpyPolicy()).run([(-4.0, 7)], task_index=0)
