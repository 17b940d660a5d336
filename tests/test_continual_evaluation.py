"""Every task of a continual run evaluated on the trial's rollout actors (real local Ray, Meta-World):
success rates per task, the same as one in-process rollout with the same weights and seeds, the
oracle's task index reaching the pool, actors sized by work, and a killed actor replaced."""

import numpy as np
import pytest
import ray
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import ModelConfig, validate_trial
from lamo_ray.continual.evaluation import TaskEvaluator
from lamo_ray.continual.pool import ModulationPool
from lamo_ray.continual.prompts import PromptPool
from lamo_ray.domains.metaworld import env_id
from lamo_ray.evaluate import Rollout
from lamo_ray.mddt import MultiDomainDecisionTransformer

pytestmark = pytest.mark.slow
TASKS = ["window-close", "hammer"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def spec_and_model():
    """A Meta-World policy spec (39 / 4, raw states) and a tiny MDDT (seed 0) in training mode."""
    cfg = validate_trial({"data": {"source": "unused", "context_length": 2, "rtg_scale": 200, "max_ep_len": 50},
                          "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1}})
    spec = PolicySpec(trial=cfg, state_shape=(39,), act_dim=4, discrete_actions=False, state_mean=None, state_std=None)
    torch.manual_seed(0)
    return spec, MultiDomainDecisionTransformer(ModelConfig(backbone="gpt2", pretrained=False, n_layer=1, n_embd=16,
                                                            n_head=1, finetune="full"), max_ep_len=50)


def test_each_task_is_scored_by_its_actor_as_an_in_process_rollout(local_ray):
    spec, model = spec_and_model()
    model.attach_pool(ModulationPool(16, 64, 1, size=3, rank=2))
    with torch.no_grad():   # modulators that matter (L2M's A init is small: bound 1 / sqrt(n_layer (2h + 4h) r))
        model.pool.q_a.normal_(0, 1.0)
        model.pool.q_b.normal_(0, 1.0)
    model.eval()
    evaluator = TaskEvaluator(spec, model, {t: env_id(t) for t in TASKS}, {t: (39, 4) for t in TASKS},
                              {t: 1000.0 for t in TASKS}, episodes=3, seed=1, max_episode_steps=30)
    try:
        index = {"window-close": 2, "hammer": 0}
        got = evaluator(model, TASKS, index.get)
        assert set(got) == set(TASKS) and all(0.0 <= v <= 1.0 for v in got.values())
        for task in TASKS:   # the same episodes in this process: same seeds, same weights, same oracle index
            records = Rollout(spec, env_id(task), num_envs=3, model=model, max_episode_steps=30).run(
                [(1000.0, 1 + 10_000 + e) for e in range(3)], task_index=index[task], record=True)
            assert got[task] == np.mean([r["success"] for r in records])
            assert evaluator.last_returns[task] == pytest.approx(np.mean([r["return"] for r in records]), rel=1e-5)
        returns = dict(evaluator.last_returns)
        assert evaluator(model, TASKS, index.get) == got and evaluator.last_returns == returns   # repeatable
        evaluator(model, TASKS, {"window-close": 1, "hammer": 0}.get)            # another modulator, other episodes
        assert evaluator.last_returns["window-close"] != returns["window-close"]
        with pytest.raises(ValueError, match="no target return or dimensions"):
            TaskEvaluator(spec, model, {"push": env_id("push")}, {}, {}, 1, 0)
    finally:
        evaluator.shutdown()


@pytest.mark.parametrize("kind", ["modulators", "prompts"])
def test_a_pool_attached_after_the_actors_started_reaches_them(local_ray, kind):
    """The runner attaches the pool after pre-training, when the actors already hold a pool-less copy:
    their evaluation must then be the pooled model's (it once stayed the pre-trained model's, because
    loading weights with pool entries into the pool-less copy failed unseen in the actors)."""
    spec, model = spec_and_model()
    model.eval()
    with torch.no_grad():   # at GPT-2's init scale, attention barely reaches the actions; prompts act through it
        model.trunk.h[0].attn.c_attn.weight[:, 32:].mul_(50)
        model.trunk.h[0].attn.c_proj.weight.mul_(50)
    task = "window-close"
    evaluator = TaskEvaluator(spec, model, {task: env_id(task)}, {task: (39, 4)}, {task: 1000.0}, episodes=3, seed=1,
                              max_episode_steps=30)
    try:
        evaluator(model, [task], lambda t: None)
        before = evaluator.last_returns[task]
        if kind == "modulators":   # L2M's pool, its oracle's modulator 1
            model.attach_pool(ModulationPool(16, 64, 1, size=3, rank=2))
            with torch.no_grad():
                model.pool.q_a.normal_(0, 1.0)
                model.pool.q_b.normal_(0, 1.0)
                model.pool.ff_b.normal_(0, 1.0)
            index = 1
        else:                      # L2P's prompts, chosen by their keys
            model.attach_pool(PromptPool(16, 1, size=4, length=2, top_k=2))
            index = None
        model.eval()
        evaluator(model, [task], lambda t: index)
        records = Rollout(spec, env_id(task), num_envs=3, model=model, max_episode_steps=30).run(
            [(1000.0, 1 + 10_000 + e) for e in range(3)], task_index=index)
        assert evaluator.last_returns[task] == pytest.approx(np.mean([r["return"] for r in records]), rel=1e-5)
        assert evaluator.last_returns[task] != pytest.approx(before, rel=1e-5)
    finally:
        evaluator.shutdown()


def test_actors_are_sized_by_work_and_each_task_gets_its_return_scale(monkeypatch):
    """Issue 29: ``eval.num_actors`` actors hold the tasks between them (round robin; at most one actor per
    task), one model copy each, instead of one actor (and one model copy) per task. Tasks of several
    domains (L2M: 200 Meta-World, 100 DMControl): each task decodes with its own return-to-go scale; the
    others keep the trial's; ``continual.success_rule`` reaches every actor."""
    import lamo_ray.continual.evaluation as evaluation

    started = []

    class Actor:
        @staticmethod
        def options(**_):
            return Actor

        @staticmethod
        def remote(tasks, template, **kwargs):
            started.append((tasks, kwargs))

    monkeypatch.setattr(evaluation, "MultiTaskRolloutActor", Actor)
    monkeypatch.setattr(evaluation.RolloutPool, "shutdown", lambda self: None)
    cfg = validate_trial({"data": {"source": "unused", "context_length": 2, "rtg_scale": 200, "max_ep_len": 50},
                          "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1}})
    spec = PolicySpec(trial=cfg, state_shape=(39,), act_dim=4, discrete_actions=False, state_mean=None, state_std=None)
    model = torch.nn.Linear(2, 2)
    envs = {"a": "EnvA-v0", "b": "EnvB-v0", "c": "EnvC-v0"}
    evaluator = TaskEvaluator(spec, model, envs, {"a": (39, 4), "b": (204, 1), "c": (39, 4)},
                              {"a": 1.0, "b": 2.0, "c": 3.0}, 1, 0, rtg_scales={"b": 100.0}, success_rule="last_step",
                              num_actors=2)
    assert [sorted(tasks) for tasks, _ in started] == [["a", "c"], ["b"]]          # 3 tasks, 2 actors
    assert all(kw["success_rule"] == "last_step" for _, kw in started)
    specs = {t: spec_ for tasks, _ in started for t, (spec_, _, _) in tasks.items()}
    assert specs["a"].trial.data.rtg_scale == 200 and specs["b"].trial.data.rtg_scale == 100
    assert (specs["b"].state_shape, specs["b"].act_dim) == ((204,), 1)
    assert cfg.data.rtg_scale == 200          # the trial's own config is untouched
    started.clear()
    TaskEvaluator(spec, model, {"a": "EnvA-v0"}, {"a": (39, 4)}, {"a": 1.0}, 1, 0, num_actors=4)
    assert len(started) == 1                  # never more actors than tasks
    assert evaluator.assignment == {"a": 0, "b": 1, "c": 0}


def test_a_killed_actor_is_replaced_and_the_evaluation_unchanged(local_ray):
    """Issue 29: a rollout actor killed between evaluations is replaced by the pool, with the same tasks,
    the same weights and the same seeds, so the evaluation returns what an undisturbed one does."""
    spec, model = spec_and_model()
    model.eval()
    evaluator = TaskEvaluator(spec, model, {t: env_id(t) for t in TASKS}, {t: (39, 4) for t in TASKS},
                              {t: 1000.0 for t in TASKS}, episodes=2, seed=1, max_episode_steps=20, num_actors=2)
    try:
        first = evaluator(model, TASKS, lambda t: None)
        returns = dict(evaluator.last_returns)
        ray.kill(evaluator.actors[1], no_restart=True)
        assert evaluator(model, TASKS, lambda t: None) == first and evaluator.last_returns == returns
        assert evaluator.actor_restarts == 1
    finally:
        evaluator.shutdown()
