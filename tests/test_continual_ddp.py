"""Data-parallel continual trials (issue 29): `lamo_ray.continual.runner.ContinualRunner` with two ranks
joined by torch.distributed (gloo, CPU; Ray Train's process group in a sweep), against one worker given
the two ranks' batches concatenated, through pre-training (2 micro-batches a step) and two stages:

- ``l2m``: the pool attached after pre-training, modulators that no sample of a step selected (no
  gradient on either rank), the selection counts that decide the second stage's penalty, the key pull term;
- ``ewc``: the Fisher information at a stage's end, from the whole batch's gradients.

Checked: the ranks draw different samples, half the batch each; every step equals one worker's on the
concatenated batch (weights, counts, logged losses); the two ranks end with the same weights and the
same evaluations (rank 0's rollouts, shared)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from processes import free_port, gloo_group

from lamo_ray.config import ContinualConfig, ModelConfig, TrainConfig

TASKS = ["hammer", "push-wall"]
METHODS = ("l2m", "ewc")
MODEL = ModelConfig(backbone="gpt2", pretrained=False, n_layer=2, n_embd=32, n_head=2, finetune="full", dropout=0.0)
TRAIN = TrainConfig(steps=2, batch_size=8, lr=1e-2, warmup_steps=1, grad_accumulation=2)


def write_shards(root: Path) -> None:
    """Trajectories of different lengths: segments near a start are left-padded, so the ranks' batches
    hold different numbers of real action tokens (the loss weighting under test)."""
    from lamo_ray.data.shards import write_task
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset

    for i, task in enumerate(TASKS):
        rng = np.random.default_rng(i)
        trajs = [Trajectory(rng.normal(size=(n, 39)).astype(np.float32), rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                            rng.uniform(0, 1, n).astype(np.float32), False) for n in (2, 7, 3, 12, 5)]
        write_task(TrajectoryDataset(trajs, (39,), 4, False, 0.0, 20.0, None, f"synthetic/{task}-v0"), root / task, task)


def run(method: str, root: Path, rank: int, world: int, replay: list | None = None):
    """One runner of ``method``; returns (drawn batches, logged values, final state, history)."""
    from lamo_ray.continual.runner import ContinualRunner
    from lamo_ray.data.shards import ShardedSampler
    from lamo_ray.mddt import MultiDomainDecisionTransformer

    cfg = ContinualConfig(pretrain_tasks=TASKS, tasks=TASKS, steps_per_task=2, eval_every=2, method=method,
                          pool={"size": 6, "rank": 2, "alpha": 4}, fisher_batches=2, penalty=10.0)
    torch.manual_seed(0)
    model = MultiDomainDecisionTransformer(MODEL, max_ep_len=50)
    drawn, logged = [], []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def sample(self, batch_size):
            batch = replay.pop(0) if replay is not None else self.inner.sample(batch_size)
            assert len(batch["states"]) == batch_size
            drawn.append({k: v.copy() for k, v in batch.items()})
            return batch

    def sampler_for(tasks, seed):
        return Recording(ShardedSampler([root / t for t in tasks], 3, 20.0, 50, 204, 6, seed=seed))

    def evaluate(m, tasks, task_index):   # a function of the weights, so every rank must agree on them
        total = float(sum(p.detach().double().abs().sum() for p in m.parameters()))
        return {t: (total * (i + 1)) % 1 for i, t in enumerate(tasks)}

    runner = ContinualRunner(model, cfg, TRAIN, sampler_for, evaluate if rank == 0 else None, seed=3,
                             rank=rank, world_size=world)
    runner.run(on_log=lambda step, values: logged.append((step, values["train/loss"], values["train/action_loss"])),
               log_every=1)
    state = {k: v.clone() for k, v in runner.model.state_dict().items()}
    return drawn, logged, state, [(e.stage, e.step, e.success) for e in runner.history]


def _worker(rank: int, world: int, port: int, out: str, replays=None):
    torch.set_num_threads(1)
    with gloo_group(rank, world, port):
        results = {m: run(m, Path(out) / "shards", rank, world, None if replays is None else replays[m])
                   for m in METHODS}
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cl_ddp")
    write_shards(root / "shards")
    mp.spawn(_worker, args=(2, free_port(), str(root)), nprocs=2, join=True)
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    replays = {m: [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(ranks[0][m][0], ranks[1][m][0])]
               for m in METHODS}
    one = tmp_path_factory.mktemp("cl_one")
    (one / "shards").symlink_to(root / "shards")
    mp.spawn(_worker, args=(1, 0, str(one), replays), nprocs=1, join=True)
    return ranks, torch.load(one / "rank0.pt", weights_only=False)


@pytest.mark.parametrize("method", METHODS)
def test_the_ranks_draw_different_halves_of_every_batch(runs, method):
    (r0, r1), _ = runs
    a, b = r0[method][0], r1[method][0]
    # 2 pre-training steps x 2 micro-batches, 2 stages x 2 steps (+ 2 Fisher batches per ewc stage)
    assert len(a) == len(b) == 4 + 4 + (4 if method == "ewc" else 0)
    assert all(len(x["states"]) == len(y["states"]) == TRAIN.batch_size // 2 for x, y in zip(a, b))
    assert all(not np.array_equal(x["states"], y["states"]) for x, y in zip(a, b))
    assert any(x["attention_mask"].sum() != y["attention_mask"].sum() for x, y in zip(a, b))   # uneven shares


@pytest.mark.parametrize("method", METHODS)
def test_a_data_parallel_run_equals_one_worker_on_the_concatenated_batches(runs, method):
    (r0, r1), one = runs
    ddp, single = r0[method][2], one[method][2]
    assert ddp.keys() == single.keys()
    worst = max((ddp[k].double() - single[k].double()).abs().max().item() for k in ddp)
    assert worst < 1e-5, worst
    if method == "l2m":   # the counts behind the second stage's penalty: every sample of both ranks, once
        assert torch.equal(ddp["pool.counts"], single["pool.counts"])
        assert ddp["pool.counts"].sum() == 2 * 2 * TRAIN.batch_size   # 2 stages x 2 steps, one selection a sample
    for (step, loss, action), (step1, loss1, action1) in zip(r0[method][1], one[method][1], strict=True):
        assert step == step1 and loss == pytest.approx(loss1, rel=1e-4) and action == pytest.approx(action1, rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_both_ranks_end_with_the_same_weights_and_evaluations(runs, method):
    (r0, r1), _ = runs
    assert all(torch.equal(r0[method][2][k], r1[method][2][k]) for k in r0[method][2])
    assert r0[method][3] == r1[method][3] and len(r0[method][3]) == 1 + 2   # pre-training + one per stage
    assert r0[method][1] == r1[method][1]                                   # the whole batch's losses, on each
