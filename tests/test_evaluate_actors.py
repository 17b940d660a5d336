"""Rollout actors on a real local Ray: every requested episode comes back, also when an actor dies."""

import numpy as np
import pytest
import ray
import torch

from lamo_ray.config import EvalConfig, validate_trial
from lamo_ray.checkpoint import PolicySpec
from lamo_ray.evaluate import Evaluator, Rollout, build_policy


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def setup(finetune: str = "full"):
    cfg = validate_trial({"data": {"source": "unused", "context_length": 3, "rtg_scale": 10.0, "max_ep_len": 64},
                          "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1,
                                    "finetune": finetune, "embedding": "linear"}})
    spec = PolicySpec(trial=cfg, state_shape=(10,), act_dim=2, discrete_actions=False,
                      state_mean=np.zeros(10, np.float32), state_std=np.ones(10, np.float32))
    torch.manual_seed(0)
    model = build_policy(spec, load_weights=False)
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return spec, model


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_actors_return_every_episode_and_match_a_local_rollout(local_ray, finetune):
    """Actors get LoRA merged into the weights (no peft model there); episodes match the LoRA model's own."""
    spec, model = setup(finetune)
    ev = EvalConfig(target_returns=[-4.0, -8.0], episodes=3, num_actors=2, envs_per_actor=2)
    evaluator = Evaluator(spec, ev, "Reacher-v5", (-40.0, -5.0), seed=0)
    summary, records = evaluator(model)
    evaluator.shutdown()
    assert len(records) == 6
    assert sorted((r["target_return"], r["seed"]) for r in records) == sorted(evaluator.episodes())
    local = Rollout(spec, "Reacher-v5", num_envs=1, model=model).run(evaluator.episodes())
    by_key = {(r["target_return"], r["seed"]): r["return"] for r in local}
    for r in records:
        assert r["return"] == pytest.approx(by_key[(r["target_return"], r["seed"])], rel=1e-4, abs=1e-4)
    assert set(summary) >= {"normalized_score", "eval/target_-4/return_mean", "eval/target_-8/normalized_score"}


def test_dead_actor_is_replaced_and_no_episode_is_lost(local_ray):
    spec, model = setup()
    ev = EvalConfig(target_returns=[-4.0], episodes=4, num_actors=2, envs_per_actor=2)
    evaluator = Evaluator(spec, ev, "Reacher-v5", (-40.0, -5.0), seed=0)
    first, _ = evaluator(model.state_dict())
    ray.kill(evaluator.actors[0], no_restart=True)
    second, records = evaluator(model.state_dict())
    evaluator.shutdown()
    assert evaluator.actor_restarts == 1
    assert len(records) == 4
    assert second["eval/target_-4/return_mean"] == pytest.approx(first["eval/target_-4/return_mean"], rel=1e-5)
