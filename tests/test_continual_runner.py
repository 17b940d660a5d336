"""The continual runner (L2M's protocol in one process) on synthetic data with a stand-in evaluator:
the evaluation schedule and stage labels, what each method trains, the oracle's task indices, and a
run resumed from its state after an evaluation."""

import numpy as np
import pytest
import torch

from lamo_ray.config import ContinualConfig, ModelConfig, TrainConfig
from lamo_ray.continual.metrics import success_matrix
from lamo_ray.continual.runner import PRETRAIN, ContinualRunner
from lamo_ray.data.shards import ShardedSampler, write_task
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset
from lamo_ray.mddt import MultiDomainDecisionTransformer

TASKS = ["hammer", "push-wall", "faucet-close", "reach"]
MODEL = ModelConfig(backbone="gpt2", pretrained=False, n_layer=2, n_embd=32, n_head=2, finetune="full", dropout=0.0)
TRAIN = TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2)   # 4 pre-training steps


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for i, task in enumerate(TASKS):
        rng = np.random.default_rng(i)
        trajs = [Trajectory(rng.normal(size=(20, 39)).astype(np.float32), rng.uniform(-1, 1, (20, 4)).astype(np.float32),
                            rng.uniform(0, 1, 20).astype(np.float32), False) for _ in range(5)]
        write_task(TrajectoryDataset(trajs, (39,), 4, False, 0.0, 20.0, None, f"synthetic/{task}-v0"), root / task, task)
    return root


def runner(shards, method, calls=None, train=TRAIN, **overrides):
    settings = dict(pretrain_tasks=["reach", "hammer"], tasks=["hammer", "push-wall", "faucet-close"],
                    steps_per_task=6, eval_every=3, eval_tasks=["hammer", "push-wall", "faucet-close", "reach"],
                    method=method, pool={"size": 5, "rank": 2, "alpha": 4})
    settings.update(overrides)
    cfg = ContinualConfig(**settings)
    torch.manual_seed(0)
    model = MultiDomainDecisionTransformer(MODEL, max_ep_len=50)

    def sampler_for(tasks, seed):
        return ShardedSampler([shards / t for t in tasks], 3, 20.0, 50, 204, 6, seed=seed)

    def evaluate(m, tasks, task_index):
        if calls is not None:
            calls.append((m.training, {t: task_index(t) for t in tasks}))
        return {t: float(sum(p.detach().abs().sum() for p in m.parameters()) % 1) for t in tasks}

    return ContinualRunner(model, cfg, train, sampler_for, evaluate, seed=0)




def test_evaluations_every_eval_every_and_at_each_stage_end(shards):
    calls = []
    r = runner(shards, "l2m", calls)
    history = r.run()
    assert [(e.stage, e.step) for e in r.history] == [(PRETRAIN, 4), (0, 7), (0, 10), (1, 13), (1, 16), (2, 19), (2, 22)]
    assert [(e.stage, e.step) for e in history] == [(e.stage, e.step) for e in r.history[1:]]
    assert all(not training for training, _ in calls)                           # evaluated in eval mode
    assert success_matrix(history, ["hammer", "push-wall", "faucet-close"], tasks=TASKS).shape == (4, 3)
    assert r.model.pool.size == 5 and r.model.pool.counts.sum() == 3 * 6 * 8   # every stage sample selected once


def test_what_each_method_trains_and_the_oracles_modulators(shards):
    calls = []
    ft = runner(shards, "ft")
    ft.run()
    assert ft.model.pool is None and any(p.requires_grad for p in ft.model.trunk.parameters())
    lora = runner(shards, "lora", calls)
    lora.run()
    assert lora.model.pool.size == 1 and {n for n, p in lora.model.named_parameters() if p.requires_grad} == \
        {f"pool.{n}" for n in ("keys", "q_a", "q_b", "v_a", "v_b", "ff_a", "ff_b")}
    assert calls[-1][1] == {t: 0 for t in TASKS}
    calls.clear()
    oracle = runner(shards, "l2m_oracle", calls)
    oracle.run()
    assert calls[-1][1] == {"hammer": 0, "push-wall": 1, "faucet-close": 2, "reach": 3}   # reach: an untrained one
    assert oracle.model.pool.q_b[3].abs().sum() == 0 and oracle.model.pool.q_b[1].abs().sum() > 0
    with pytest.raises(ValueError, match="no modulator left for the evaluated tasks outside the sequence"):
        runner(shards, "l2m_oracle", pool={"size": 3, "rank": 2})


def test_l2p_trains_only_its_prompts_and_keys_over_a_frozen_model(shards):
    seen = {}

    def snapshot(record, r):
        if record.stage == PRETRAIN:
            seen["pretrained"] = {k: v.clone() for k, v in r.model.state_dict().items()}
        elif "keys" not in seen:
            seen["keys"] = r.model.pool.keys.detach().clone()

    r = runner(shards, "l2p", prompt_pool={"size": 6, "length": 2, "top_k": 2})
    r.run(snapshot)
    assert {n for n, p in r.model.named_parameters() if p.requires_grad} == {"pool.keys", "pool.prompts"}
    state = r.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in seen["pretrained"].items())   # the MDDT itself never moved
    assert r.model.pool.counts.sum() == 3 * 6 * 8 * 2                              # top-2 of every stage sample
    assert not torch.equal(r.model.pool.keys.detach(), seen["keys"])                # the key pull term trains keys
    assert r.model.pool.penalize                                                    # count penalty from stage 1


@pytest.mark.parametrize("stop_after, resumes_at", [(2, (0, 3, 7)), (3, (1, 0, 10))])   # mid-stage, stage end
def test_a_run_resumed_after_an_evaluation_continues_where_it_stopped(shards, stop_after, resumes_at):
    class Stop(Exception):
        pass

    saved = {}

    def stop_after_third(record, r):
        saved["state"] = {k: (v.copy() if isinstance(v, dict) else v) for k, v in r.state_dict().items()}
        saved["state"]["model"] = {k: t.clone() for k, t in r.state_dict()["model"].items()}
        if len(r.history) == stop_after:
            raise Stop

    first = runner(shards, "l2m")
    with pytest.raises(Stop):
        first.run(stop_after_third)
    resumed = runner(shards, "l2m")
    resumed.load_state_dict(saved["state"])
    assert (resumed.stage, resumed.stage_step, resumed.step) == resumes_at
    history = resumed.run()
    assert [(e.stage, e.step) for e in resumed.history] == [(PRETRAIN, 4), (0, 7), (0, 10), (1, 13), (1, 16), (2, 19),
                                                             (2, 22)]
    assert len(history) == 6 and resumed.model.pool.counts.sum() == 3 * 6 * 8   # no stage step repeated or lost


def test_ewc_fisher_is_the_mean_squared_gradient_of_the_finished_stage_and_weights_the_penalty(shards):
    r = runner(shards, "ewc", fisher_batches=3, penalty=7.0)
    consolidated = []
    ewc = r.method
    original = ewc.consolidate

    def spy(runner_, sampler):
        before = {n: p.detach().clone() for n, p in r.model.named_parameters()}
        previous = (ewc.anchor, ewc.importance)
        original(runner_, sampler)
        consolidated.append((r.stage, before, previous))

    ewc.consolidate = spy
    r.run()
    assert [stage for stage, _, _ in consolidated] == [0, 1, 2]       # at each stage's end, not after pre-training
    _, before, (anchor, importance) = consolidated[-1]
    assert set(ewc.anchor) == {n for n, p in r.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(ewc.anchor[n], before[n]) for n in ewc.anchor)   # theta* = the weights at the stage's end
    # F by hand: the mean over 3 batches of the squared gradients, with the same batches (the stage's sampler,
    # seeded [seed, stage + 1, 0], after its 6 training batches), of L2M's loss: every action dim (padded
    # ones too) plus the previous stage's penalty (ml-jku/L2M src/algos/decision_transformer_with_ewc_sb3.py:
    # 89-101, 147-187; universal_decision_transformer_sb3.py:410-414). Before: real dims only, no penalty.
    model = r.model
    sampler = ShardedSampler([shards / "faucet-close"], 3, 20.0, 50, 204, 6, seed=[0, 3, 0])
    for _ in range(6):
        sampler.sample(8)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    for _ in range(3):
        b = {k: torch.as_tensor(v) for k, v in sampler.sample(8).items()}
        model.zero_grad()
        params = dict(model.named_parameters())
        penalty = 7.0 * sum((importance[n] * (params[n] - w).pow(2)).sum() for n, w in anchor.items())
        (model.loss(model(b["states"], b["actions"], b["returns_to_go"], b["rewards"], b["timesteps"],
                          b["attention_mask"]), b["actions"], b["attention_mask"], torch.ones(8, 6, dtype=torch.bool))
         + penalty).backward()
        for n in fisher:
            if dict(model.named_parameters())[n].grad is not None:
                fisher[n] += dict(model.named_parameters())[n].grad.pow(2)
    assert all(torch.allclose(ewc.importance[n], fisher[n] / 3, rtol=1e-4, atol=1e-10) for n in fisher)
    # the penalty: lambda x sum F (theta - theta*)^2; zero at the anchor
    assert ewc.penalty(model).item() == pytest.approx(0.0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    expected = 7.0 * sum((fisher[n] / 3 * 0.01 ** 2).sum() for n in fisher)
    assert ewc.penalty(model).item() == pytest.approx(expected.item(), rel=1e-3)


def test_l2_pulls_the_weights_towards_the_previous_stage_and_resumes_with_its_anchor(shards):
    free, held = runner(shards, "ft"), runner(shards, "l2", penalty=1e4)
    anchors = []
    held.run(lambda record, r: anchors.append((record.stage, r.state_dict())) if record.step == 16 else None)
    free.run()
    (stage, state), = anchors
    assert stage == 1 and state["anchor"] is not None and all(torch.all(v == 1) for v in state["importance"].values())
    # with a strong pull, stage 2 moves the weights far less from the end of stage 1 than plain FT does
    moved = lambda r, anchor: sum((p - anchor[n]).abs().sum().item() for n, p in r.model.named_parameters()  # noqa: E731
                                  if n in anchor)
    stage1_end = state["anchor"]
    assert moved(held, stage1_end) < 0.2 * moved(free, stage1_end)
    resumed = runner(shards, "l2", penalty=1e4)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.method.anchor[n], state["anchor"][n]) for n in state["anchor"])


def test_joint_trains_every_stage_on_all_the_sequence_tasks_and_ft_on_its_own(shards):
    seen = {}
    for method in ("joint", "ft"):
        r = runner(shards, method)
        make = r.sampler_for
        seen[method] = []
        r.sampler_for = lambda tasks, seed, make=make, log=seen[method]: (log.append(list(tasks)), make(tasks, seed))[1]
        history = r.run()
        assert r.model.pool is None and len(history) == 6
    sequence = ["hammer", "push-wall", "faucet-close"]
    assert seen["joint"] == [["reach", "hammer"]] + [sequence] * 3
    assert seen["ft"] == [["reach", "hammer"]] + [[t] for t in sequence]


def test_single_starts_every_stage_from_the_pretrained_weights_also_after_a_resume(shards):
    starts = []
    r = runner(shards, "single")
    original = r._begin_phase

    def spy():
        original()
        starts.append((r.stage, {k: v.clone() for k, v in r.model.state_dict().items()}))

    r._begin_phase = spy
    saved = {}
    r.run(lambda record, rr: saved.setdefault("boundary", rr.state_dict()) if record.step == 16 else None)
    pretrained = starts[1][1]     # stage 0 starts from the pre-trained model
    assert [s for s, _ in starts] == [PRETRAIN, 0, 1, 2]
    for _, weights in starts[2:]:
        assert all(torch.equal(weights[k], pretrained[k]) for k in pretrained)
    resumed = runner(shards, "single")   # resumed at the end of stage 1: stage 2 still starts from them
    resumed.load_state_dict(saved["boundary"])
    resumed._begin_phase()
    assert all(torch.equal(resumed.model.state_dict()[k], pretrained[k]) for k in pretrained)


@pytest.mark.parametrize("method", ["ewc", "single", "l2m", "l2p"])
def test_the_state_loads_with_weights_only(shards, tmp_path, method):
    """Checkpoints are read with torch.load(weights_only=True) (no pickled code): every method's state
    (anchor and Fisher, pre-trained copy, pool, optimiser, history) must be plain tensors and containers."""
    r = runner(shards, method)
    saved = {}
    r.run(lambda record, rr: saved.setdefault("state", {**rr.state_dict(), "model": {
        k: v.clone() for k, v in rr.state_dict()["model"].items()}}) if record.step == 13 else None)
    torch.save(saved["state"], tmp_path / "continual.pt")
    state = torch.load(tmp_path / "continual.pt", map_location="cpu", weights_only=True)
    resumed = runner(shards, method)
    resumed.load_state_dict(state)
    assert (resumed.stage, resumed.stage_step) == (1, 3)
    # a mid-stage resume keeps the stage's count penalty as it was (load_state_dict began the phase)
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in state["model"].items())   # pool included
    if method in ("l2m", "l2p"):
        assert resumed.model.pool.penalize


@pytest.mark.parametrize("method, extra", [("ft", False), ("l2p", True), ("l2", True)])
def test_the_action_loss_is_logged_apart_from_what_the_method_adds(shards, method, extra):
    """``train/action_loss`` is the action tokens' cross-entropy; ``train/loss`` what was minimised:
    the same for ft, plus the key pull term for l2p, plus the penalty for l2 once anchored."""
    logs = []
    r = runner(shards, method)
    r.run(on_log=lambda step, values: logs.append((step, values)), log_every=2)
    continual = [v for step, v in logs if step > TRAIN.steps + 6]     # from the second stage on (l2 is anchored)
    assert continual and all(0.0 < v["train/action_loss"] < 10.0 for v in continual)
    gaps = [v["train/loss"] - v["train/action_loss"] for v in continual]
    if not extra:
        assert gaps == pytest.approx([0.0] * len(gaps))
    elif method == "l2p":
        assert all(abs(g) > 1e-4 for g in gaps)     # -0.5 x the sum of the 5 chosen keys' cosines with the query
    else:
        assert all(g > 0.0 for g in gaps)


def _group_names(r):
    names = {id(p): n for n, p in r.model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"], g["lr"]) for g in r.learner.optimizer.param_groups]


def test_weight_decay_falls_only_on_linear_and_conv_weights_in_every_phase(shards):
    """L2M's optimiser groups (ml-jku/L2M ``src/algos/models/online_decision_transformer_model.py:96-148``
    ``get_optim_groups``, used at pre-training and every task switch: ``decision_transformer_sb3.py:277``,
    ``:1140``): weight decay on Linear / Conv1D weights only; biases, LayerNorms, embeddings and the
    pool's free parameters (keys, LoRA A / B; L2P's prompts) undecayed. Before: one AdamW group over
    everything with train.weight_decay."""
    train = TRAIN.model_copy(update={"weight_decay": 0.1})
    r = runner(shards, "l2m", train=train, lr=5e-4)
    r._begin_phase()                                      # pre-training: the whole MDDT
    (decay, wd, _), (rest, zero, _) = _group_names(r)
    trainable = {n for n, p in r.model.named_parameters() if p.requires_grad}
    linear = {"embed_state.weight", "embed_return.weight", "embed_reward.weight", "action_head.weight"}
    conv = {f"backbone.transformer.h.{i}.{m}.weight" for i in range(2)
            for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert (wd, zero) == (0.1, 0.0) and decay == linear | conv and rest == trainable - decay
    assert {"embed_timestep.weight", "embed_action.weight", "embed_ln.weight", "embed_state.bias",
            "backbone.transformer.h.0.ln_1.weight", "backbone.transformer.ln_f.bias"} <= rest
    r.stage, r.stage_step = 0, 0
    r._begin_phase()                                      # a continual stage: only the pool trains, undecayed
    (decay, _, _), (rest, zero, lr) = _group_names(r)
    assert decay == set() and zero == 0.0 and lr == 5e-4
    assert rest == {f"pool.{n}" for n in ("keys", "q_a", "q_b", "v_a", "v_b", "ff_a", "ff_b")}
    p = runner(shards, "l2p", train=train, prompt_pool={"size": 6, "length": 2, "top_k": 2})
    p.stage = 0
    p._begin_phase()
    assert [(names, wd) for names, wd, _ in _group_names(p)] == [(set(), 0.1), ({"pool.keys", "pool.prompts"}, 0.0)]
    f = runner(shards, "ewc", train=train)
    f.stage = 0
    f._begin_phase()                                      # full fine-tuning: the pre-training's groups
    assert _group_names(f)[0][0] == linear | conv and _group_names(f)[0][1] == 0.1


def test_a_modulator_no_sample_selects_keeps_its_weights_bit_for_bit(shards):
    """With L2M's groups (ml-jku/L2M ``online_decision_transformer_model.py:106-129``: free
    ``nn.Parameter``s such as ``prompt/l2m.py:109-110``'s ``lora_a`` / ``lora_b`` are not decayed) a
    modulator no sample selects gets a zero gradient and no decay, so AdamW leaves it exactly as it
    was: the oracle's modulator 0 through stages 1 and 2, and modulators 3 and 4 (never selected)
    through every stage. Before: train.weight_decay shrank every modulator at every step."""
    train = TRAIN.model_copy(update={"weight_decay": 0.1})
    snapshots = {}

    def snapshot(record, r):
        if r.model.pool is not None and record.step in (10, 22):   # the ends of stages 0 and 2
            snapshots[record.step] = {k: v.detach().clone() for k, v in r.model.pool.named_parameters()}

    r = runner(shards, "l2m_oracle", train=train, pool={"size": 5, "rank": 2, "alpha": 4})
    original = r._attach

    def attach():
        original()
        snapshots.setdefault(0, {k: v.detach().clone() for k, v in r.model.pool.named_parameters()})

    r._attach = attach
    r.run(snapshot)
    start, stage0, end = snapshots[0], snapshots[10], snapshots[22]
    for name in ("q_a", "q_b", "v_a", "v_b", "ff_a", "ff_b"):
        assert torch.equal(end[name][0], stage0[name][0]), name          # trained in stage 0, untouched since
        assert torch.equal(end[name][3:], start[name][3:]), name         # never selected
    assert not torch.equal(stage0["q_a"][0], start["q_a"][0])            # modulator 0 did train in stage 0



@pytest.mark.parametrize("method, single", [("l2m", False), ("l2m_oracle", False), ("lora", True)])
def test_the_modulators_start_from_l2ms_init_of_its_pool_or_its_single_lora(shards, method, single):
    """L2M's pool (ml-jku/L2M ``src/algos/prompt/l2m.py:109-111``) and its single LoRA
    (``src/algos/prompt/lora.py:47-55``) draw A from different kaiming bounds (`l2m_init_bound`): the
    runner gives ``lora`` the single LoRA's. Before: per-matrix bounds, 1 / sqrt(n_in)."""
    from lamo_ray.continual.pool import l2m_init_bound

    r = runner(shards, method, pool={"size": 4, "rank": 2, "alpha": 4})
    r.stage = 0
    r._begin_phase()
    bound = l2m_init_bound(32, 128, 2, None if single else 2)
    a = torch.cat([r.model.pool.q_a.flatten(), r.model.pool.v_a.flatten(), r.model.pool.ff_a.flatten()])
    assert bound * 0.9 < a.abs().max() <= bound


def test_pretraining_accumulates_micro_batches_into_one_step_and_counts_the_schedule_in_micro_batches(shards):
    """ml-jku/L2M ``src/algos/decision_transformer_sb3.py:835-862``: each micro-batch's loss divided by
    ``accumulation_steps`` and backpropagated, the optimiser stepping once per ``accumulation_steps``
    updates, the lr schedulers stepping at every update (warm-up and cosine in micro-batches). Here with
    train.grad_accumulation 2: 4 optimiser steps of 2 micro-batches, the gradient of each step the mean
    of its two micro-batches' gradients, and the lr of step j the schedule's value at micro-batch 2j.
    Before: no such key, one batch per step."""
    import copy

    from lamo_ray.optim import cosine_lambda

    train = TRAIN.model_copy(update={"grad_accumulation": 2, "grad_clip": 1e9, "lr_schedule": "cosine",
                                     "warmup_steps": 3, "lr_min": 1e-5})
    r = runner(shards, "ft", train=train)
    batches, steps = [], []
    make = r.sampler_for

    class Recorded:
        def __init__(self, sampler):
            self.sampler = sampler

        def sample(self, batch_size):
            batches.append(self.sampler.sample(batch_size))
            return batches[-1]

    r.sampler_for = lambda tasks, seed: Recorded(make(tasks, seed))
    start = copy.deepcopy(r.model)
    r._begin_phase()
    r.learner.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: steps.append(
        ({n: p.grad.clone() for n, p in r.model.named_parameters() if p.grad is not None},
         optimizer.param_groups[0]["lr"])))
    with pytest.raises(_Stop):                            # stop at the pre-training's evaluation
        r.run(lambda record, rr: _stop())
    assert len(batches) == 2 * TRAIN.steps and len(steps) == TRAIN.steps
    assert r.learner is None and r.step == TRAIN.steps          # pre-training over: the micro-batches counted
    factor = cosine_lambda(3, TRAIN.steps * 2, TRAIN.lr, 1e-5)
    assert [lr for _, lr in steps] == pytest.approx([TRAIN.lr * factor(2 * j) for j in range(TRAIN.steps)])
    # the first step's gradient: the mean of its two micro-batches' gradients on the starting weights
    start.train()
    expected = {}
    for b in batches[:2]:
        b = {k: torch.as_tensor(v) for k, v in b.items()}
        start.zero_grad()
        start.loss(start(b["states"], b["actions"], b["returns_to_go"], b["rewards"], b["timesteps"],
                         b["attention_mask"]), b["actions"], b["attention_mask"], b["action_mask"]).backward()
        for n, p in start.named_parameters():
            if p.grad is not None:
                expected[n] = expected.get(n, 0) + p.grad / 2
    got = steps[0][0]
    assert set(got) == set(expected)
    assert all(torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-7) for n in got)


class _Stop(Exception):
    pass


def _stop():
    raise _Stop


def test_grad_accumulation_is_for_pretraining_only_and_at_least_one():
    """``train.grad_accumulation`` below 1 is refused naming the key; above 1 outside a continual
    trial too (the offline and online loops take one batch per step)."""
    from lamo_ray.config import validate_trial

    with pytest.raises(ValueError, match="grad_accumulation"):
        TrainConfig(grad_accumulation=0)
    with pytest.raises(ValueError, match="train.grad_accumulation 2: only a continual trial"):
        validate_trial({"data": {"source": "x/y-v0"}, "train": {"grad_accumulation": 2}})


def test_the_oracles_keys_train_and_are_penalised_as_l2ms(shards):
    """ml-jku/L2M: the oracle is l2m's pool with ``num_tasks`` set, so its forward returns ``reduce_sim`` and
    the loss adds the pull term (``src/algos/decision_transformer_sb3.py:910-911``), and the count penalty
    enters the similarity before the mask (``prompt/l2p.py:223-229``, ``:125-126``). Before: the oracle's keys
    never trained, so its (random) keys chose within each group."""
    keys = {}

    def snapshot(record, r):
        if r.model.pool is not None:
            keys[record.step] = (r.model.pool.keys.detach().clone(), r.model.pool.penalize)

    r = runner(shards, "l2m_oracle", pool={"size": 7, "rank": 2, "alpha": 4})   # 3 tasks: groups of 2 + {6}
    original = r._attach

    def attach():
        original()
        keys.setdefault(0, (r.model.pool.keys.detach().clone(), False))

    r._attach = attach
    r.run(snapshot)
    start, (stage0, penalized0), (end, penalized2) = keys[0][0], keys[10], keys[22]
    assert not torch.equal(stage0, start) and not torch.equal(end, stage0)        # the pull term trains the keys
    assert not penalized0 and penalized2                                           # the penalty from stage 2 on
    assert set(r.model.pool.counts.nonzero().flatten().tolist()) <= {0, 1, 2, 3, 4, 5}   # each task in its group
