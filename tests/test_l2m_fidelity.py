"""Issue 28's L2M points that read L2M's code directly (ml-jku/L2M at 0a4747b): the modulators'
initialisation, the success rule, gradient accumulation with one micro-batch per domain."""

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lamo_ray.continual.pool import ModulationPool, l2m_init_bound


def test_modulator_init_bound_is_l2ms_kaiming_uniform_over_its_whole_pool_tensor():
    """ml-jku/L2M ``src/algos/prompt/l2m.py:109-111``: ``lora_a`` (pool 30, 6 layers, length 6, 768, rank 8)
    gets ``kaiming_uniform_(a=sqrt(5))`` as one tensor, so torch's fan-in is 6 x 6 x 768 x 8 and the
    bound ~0.0021; the single LoRA (``src/algos/prompt/lora.py:47-55``, an Embedding (6, 6 x 8 x 768))
    ~0.0052. Before: kaiming per (h, r) matrix, bound 1 / sqrt(h) (0.036 at paper scale)."""
    # the bound torch itself computes for L2M's tensors (meta: shapes only, no memory)
    pool = torch.empty(30, 6, 6, 768, 8, device="meta")
    single = torch.empty(6, 6 * 8 * 768, device="meta")
    for tensor, layers in ((pool, 6), (single, None)):
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(tensor)
        torch_bound = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3.0 / fan_in)
        assert l2m_init_bound(768, 3072, 8, layers) == pytest.approx(torch_bound, rel=1e-12)
    assert l2m_init_bound(768, 3072, 8, 6) == pytest.approx(0.002126, abs=1e-6)
    assert l2m_init_bound(768, 3072, 8) == pytest.approx(0.005208, abs=1e-6)
    # a small pool draws its A matrices from that bound: within it, and filling it
    torch.manual_seed(0)
    for single_lora, layers in ((False, 2), (True, None)):
        p = ModulationPool(32, 128, 2, size=5, rank=4, single=single_lora)
        bound = l2m_init_bound(32, 128, 4, layers)
        for a in (p.q_a, p.v_a, p.ff_a):
            assert a.abs().max() <= bound and a.abs().max() > 0.95 * bound
        assert all(b.abs().sum() == 0 for b in (p.q_b, p.v_b, p.ff_b))


class _SuccessThenLost(gym.Env):
    """A 5-step episode whose success flag is set at step 2 only (an object placed, then knocked off)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (39,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(39, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(39, np.float32), 1.0, False, self.t >= 5, {"success": float(self.t == 2)}


@pytest.mark.parametrize("rule, success", [("any_step", True), ("last_step", False)])
def test_success_rule_any_step_is_continual_worlds_last_step_is_l2ms(rule, success):
    """L2M's evaluation callback reads ``info["success"]`` when the episode is done (ml-jku/L2M
    ``src/callbacks/custom_eval_callback.py:298-303``); Continual World's ``SuccessCounter`` counts the
    flag at any step. An episode that succeeds at step 2 and ends at step 5 without the flag is a
    success by the second rule only. Before: every continual evaluation counted any step (no rule)."""
    from lamo_ray.checkpoint import PolicySpec
    from lamo_ray.config import ModelConfig, validate_trial
    from lamo_ray.continual.evaluation import TaskRollout
    from lamo_ray.mddt import MultiDomainDecisionTransformer

    env_id = "L2MTest/SuccessThenLost-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_SuccessThenLost)
    cfg = validate_trial({"data": {"source": "unused", "context_length": 2, "rtg_scale": 200, "max_ep_len": 50},
                          "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1}})
    spec = PolicySpec(trial=cfg, state_shape=(39,), act_dim=4, discrete_actions=False, state_mean=None, state_std=None)
    model = MultiDomainDecisionTransformer(ModelConfig(backbone="gpt2", pretrained=False, n_layer=1, n_embd=16,
                                                       n_head=1, finetune="full"), max_ep_len=50)
    records = TaskRollout(spec, env_id, num_envs=2, model=model, max_episode_steps=5, success_rule=rule).run(
        [(100.0, 0), (100.0, 1), (100.0, 2)])
    assert [r["success"] for r in records] == [success] * 3 and all(r["length"] == 5 for r in records)
    with pytest.raises(ValueError, match="continual.success_rule"):
        TaskRollout(spec, env_id, num_envs=1, model=model, success_rule="first_step")


def test_l2m_sweeps_score_by_l2ms_rule_and_log_it_as_a_param():
    """Both L2M sweeps resolve every trial to ``continual.success_rule: last_step`` (L2M's,
    ``custom_eval_callback.py:298-303``), and the rule is among the params each trial's MLflow run gets
    (`lamo_ray.config.asdict_flat`, as `lamo_ray.tracking.start_trial_run` logs them), so a reported
    success rate says which rule made it. Before: no such key."""
    from lamo_ray.config import asdict_flat, load_sweep

    for name in ("l2m_cw10", "l2m_local"):
        sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / f"{name}.yaml")
        rules = {asdict_flat(t["config"])["continual.success_rule"] for t in sweep.trials}
        assert rules == {"last_step"}, name


def test_a_success_rule_on_dmcontrol_tasks_is_refused_naming_the_key():
    """DMControl has no success flag: neither rule can score it, and the error names the rule's key."""
    from lamo_ray.config import ContinualConfig

    for rule in ("last_step", "any_step"):
        with pytest.raises(ValueError, match=f"continual.success_rule '{rule}'"):
            ContinualConfig(pretrain_tasks=["reach"], tasks=["hammer", "walker-run"], steps_per_task=1, eval_every=1,
                            method="ft", success_rule=rule)


def test_l2m_cw10_pretrains_as_l2ms_code_500k_steps_of_one_micro_batch_per_domain(monkeypatch):
    """L2M's pre-training command (ml-jku/L2M ``README.md:189``: ``+agent_params.accumulation_steps=2``,
    ``run_params=pretrain``: ``total_timesteps: 1000000`` updates of ``batch_size: 256``,
    ``cdt_pretrain_disc.yaml:4,15``; ``warmup_steps: 4000`` and the cosine's ``T_max`` counted in those
    updates, ``decision_transformer_sb3.py:846-862``): 500k optimiser steps of 2 micro-batches, one per
    domain in turn (``src/buffers/samplers.py:8-59``). The resolved sweep and the sampler its trials
    build. Before: 1M steps of one 256-sample batch with each sample's domain drawn at random."""
    from lamo_ray.config import load_sweep
    from lamo_ray.domains.tasks import task_domain
    from lamo_ray.continual.trial import DomainTurns, phase_sampler

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "l2m_cw10.yaml")
    for trial in sweep.trials:
        t = trial["config"].train
        assert (t.steps, t.grad_accumulation, t.batch_size, t.warmup_steps) == (500_000, 2, 256, 4000)
        assert trial["config"].continual.pretrain_mixing == "domain"
    cfg = sweep.trials[0]["config"]
    domains = list(dict.fromkeys(task_domain(t) for t in cfg.continual.pretrain_sources))
    assert domains == ["metaworld", "dmcontrol"] and len(domains) == cfg.train.grad_accumulation

    class Stub:
        def __init__(self, tasks, *args, **kwargs):
            self.tasks = tasks

        def sample(self, batch_size):
            return {"tasks": self.tasks}

    monkeypatch.setattr("lamo_ray.data.shards.ShardedSampler", Stub)
    sources = cfg.continual.pretrain_sources
    sampler = phase_sampler(cfg, {t: t for t in sources}, sources, [42, 0, 0])
    assert isinstance(sampler, DomainTurns)
    for _ in range(3):   # every optimiser step: one micro-batch of Meta-World's 40 tasks, one of DMC10
        step = [sampler.sample(256)["tasks"] for _ in range(cfg.train.grad_accumulation)]
        assert [len(b) for b in step] == [40, 10] and {task_domain(x) for x in step[1]} == {"dmcontrol"}


def test_the_count_penalty_is_l2ms_inverse_frequency_plus_1e_minus_6():
    """ml-jku/L2M ``src/algos/prompt/base_prompt.py:87-101``: ``inv = 1 / (freq + 1e-6)`` over each key's
    share of the selections, normalised to sum 1, multiplying ``(cos + 1) / 2`` from the second task
    (``l2p.py:223-229``): a key never used wins over a used one unless its similarity is ~1e-6 of it.
    Here key 0 (used once) matches the query well and key 1 (unused) is slightly opposed: L2M picks 1.
    Before: ``1 / (count + 1)`` (0.5 vs 1), which picked 0."""
    pool = ModulationPool(8, 32, 1, size=3, rank=2)
    with torch.no_grad():
        pool.keys.copy_(torch.eye(3, 8))
    pool.train()
    pool.select(torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0]]))
    pool.start_task(1)
    assert pool.inv_freq.tolist() == pytest.approx([1 / (2e6 + 1), 0.5, 0.5], rel=1e-4)
    assert pool.select(torch.tensor([[1.0, -0.2, -0.9, 0, 0, 0, 0, 0]])).tolist() == [1]


def test_l2m_sweeps_use_l2ms_adam_eps_and_gelu():
    """L2M's pre-training config (ml-jku/L2M ``configs/agent_params/cdt_pretrain_disc.yaml:29``:
    ``activation_function: gelu``; its optimiser ``make_optimizer`` with torch's default eps 1e-8). The
    lamo_trunk variant keeps GPT-2's own activation (a pre-trained trunk). Before: eps 1e-6, gelu_new."""
    from lamo_ray.config import load_sweep

    for name in ("l2m_cw10", "l2m_local"):
        for trial in load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / f"{name}.yaml").trials:
            cfg = trial["config"]
            assert cfg.train.adam_eps == 1e-8, name
            assert cfg.model.activation == (None if cfg.model.pretrained else "gelu"), (name, trial["variant"])


def test_the_oracles_task_mask_is_l2ms_groups_of_pool_size_over_num_tasks():
    """ml-jku/L2M ``src/algos/prompt/l2p.py:96-108, 125-126``: with ``num_tasks`` set, the pool is split by
    ``arange(pool_size).split(pool_size // num_tasks)``, task i's group is chunk i, and the similarity
    outside it is -inf before the top-1: the keys still choose, within the task's group. CW10 (30, 10):
    3 modulators per task; l2m_local (10, 3): 3 per task and a remainder group {9} for an unseen task.
    Before: task i got modulator i, whatever the keys said."""
    from lamo_ray.continual.pool import oracle_groups

    assert oracle_groups(30, 10) == [range(i, i + 3) for i in range(0, 30, 3)]
    assert oracle_groups(10, 3) == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]
    with pytest.raises(ValueError, match="4 tasks need 1 to 3"):
        oracle_groups(3, 4)
    pool = ModulationPool(8, 32, 1, size=10, rank=2, task_groups=3)
    with torch.no_grad():
        pool.keys.copy_(torch.rand(10, 8) * 0.01)
        pool.keys[5, 0] = 1.0        # the best key overall for this query: modulator 5, in task 1's group
        pool.keys[1, 0] = 0.5        # task 0's best
        pool.keys[9, 0] = 0.1        # the remainder group's only modulator
    query = torch.zeros(4, 8)
    query[:, 0] = 1.0
    assert pool.select(query).tolist() == [5, 5, 5, 5]                                # no task: the whole pool
    assert pool.select(query, task=torch.tensor([0, 1, 2, 3])).tolist()[:2] == [1, 5]
    chosen = pool.select(query, task=torch.tensor([0, 1, 2, 3])).tolist()
    assert chosen[2] in (6, 7, 8) and chosen[3] == 9
    with pytest.raises(ValueError, match="task index 4 but the pool has 4 task groups"):
        pool.select(query, task=torch.tensor([4, 0, 0, 0]))


def test_the_oracle_trial_builds_l2ms_mask_and_refuses_a_pool_with_no_group_for_unseen_tasks():
    """The l2m_oracle method builds its pool with the sequence's task count as ``num_tasks``; a sweep
    whose evaluated tasks include one outside the sequence needs the remainder group, checked when the
    config is read (before any compute)."""
    from lamo_ray.config import ContinualConfig, load_sweep

    for trial in load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "l2m_local.yaml").trials:
        if trial["variant"] == "l2m_oracle":
            c = trial["config"].continual
            assert (c.pool.size, len(c.tasks)) == (10, 3)
    base = dict(pretrain_tasks=["reach"], tasks=["hammer", "push-wall"], method="l2m_oracle", steps_per_task=6,
                eval_every=3)
    ContinualConfig(**base, eval_tasks=["hammer", "push-wall", "reach"], pool={"size": 5, "rank": 2, "alpha": 4})   # groups of 2 + {4}
    with pytest.raises(ValueError, match=r"continual.pool.size 4: .* no modulator left .*\['reach'\]"):
        ContinualConfig(**base, eval_tasks=["hammer", "push-wall", "reach"], pool={"size": 4, "rank": 2, "alpha": 4})

