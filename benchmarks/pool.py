"""B13 and B14, L2M's pool and decoding at the local shape (issue 19 "Performance"): an MDDT of 3 GPT-2
blocks x 128 wide x 4 heads, K 5 steps of Meta-World (state 39 -> 204, 4 of 6 action dims), one
torch thread.

B13 training step (forward, loss with the key term, backward, AdamW step) of the pool (30 modulators,
the batch spread over ``--groups`` of them: what grouped application costs) vs the same model with one
modulator (every sample uses it: one LoRA). Target: at most 1.5x.
B14 inference per env step for ``--envs`` envs: the action decoded dimension by dimension with the
trunk's key/value cache (one context pass, then one token per further dimension) vs one full forward
per dimension.

    python benchmarks/pool.py [--rounds 5] [--steps 20] [--batch 128] [--groups 10] [--json out.json]

Medians over rounds; modes alternate within each round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

K, STATE, ACT = 5, 39, 4


def model(pool_size: int):
    from lamo_ray.config import ModelConfig
    from lamo_ray.continual.pool import ModulationPool
    from lamo_ray.mddt import MultiDomainDecisionTransformer

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="gpt2", pretrained=False, n_layer=3, n_embd=128, n_head=4, finetune="full")
    m = MultiDomainDecisionTransformer(cfg, max_ep_len=200)
    if pool_size:
        m.attach_pool(ModulationPool(128, 512, 3, size=pool_size, rank=8, alpha=16))
        with torch.no_grad():   # trained modulators (B != 0), as after the first task
            for p in (m.pool.q_b, m.pool.v_b, m.pool.ff_b):
                p.normal_(0, 0.02)
    return m


def batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(states=torch.randn(b, K, STATE, generator=g), actions=torch.rand(b, K, ACT, generator=g) * 2 - 1,
                returns_to_go=torch.randn(b, K, 1, generator=g), rewards=torch.randn(b, K, 1, generator=g),
                timesteps=torch.arange(K).repeat(b, 1), attention_mask=torch.ones(b, K))


def train_steps(m, x, task, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    m.train()
    began = time.perf_counter()
    for _ in range(steps):
        logits = m(**x, task=task)
        loss = m.loss(logits, x["actions"], x["attention_mask"]) + 0.5 * m.pool.key_loss(m.pool_query, m.pool.selected)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - began) / steps


def decode(m, x, cache: bool, steps: int) -> float:
    m.eval()
    began = time.perf_counter()
    for _ in range(steps):
        m.predict_action(**x, cache=cache)
    return (time.perf_counter() - began) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--groups", type=int, default=10, help="modulators the batch is spread over (B13)")
    parser.add_argument("--envs", type=int, default=10, help="envs decoded together (B14)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    one, pool = model(1), model(30)
    x = batch(args.batch)
    spread = torch.arange(args.batch) % args.groups
    same = torch.zeros(args.batch, dtype=torch.long)
    ev = batch(args.envs, seed=1)
    times = {"one_lora": [], "pool": [], "cached": [], "uncached": []}
    for _ in range(args.rounds):
        times["one_lora"].append(train_steps(one, x, same, args.steps))
        times["pool"].append(train_steps(pool, x, spread, args.steps))
        times["cached"].append(decode(pool, ev, True, args.steps))
        times["uncached"].append(decode(pool, ev, False, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"median_s": med, "b13_pool_over_one": med["pool"] / med["one_lora"],
              "b14_cached_over_uncached": med["cached"] / med["uncached"], "args": vars(args)}
    print(f"B13 training step, batch {args.batch} x K {K}: one modulator {1e3 * med['one_lora']:.1f} ms, pool of 30 "
          f"spread over {args.groups} {1e3 * med['pool']:.1f} ms -> {result['b13_pool_over_one']:.2f}x (target <= 1.5x)")
    print(f"B14 action per env step, {args.envs} envs, {ACT} dims: cached {1e3 * med['cached']:.1f} ms, one forward "
          f"per dim {1e3 * med['uncached']:.1f} ms -> {result['b14_cached_over_uncached']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
