"""Benchmarks (not tests): throughput ratios measured side by side in one run.

    python benchmarks/run.py [--rounds 5] [--quick] [--json OUT]

Measured now (ids as in the performance issue):
  B1-tiny  training samples/s of our DT (full fine-tune, linear embeddings) vs
           `transformers.DecisionTransformerModel` at the same shapes (tiny: 128 hidden, 3 layers,
           1 head; batch 64, K=20, Kitchen dims state 60 / act 9, AdamW, clip 0.25).
  B2-tiny  LoRA vs full fine-tuning samples/s of our model at the tiny shape.
  B8       segment-sampler samples/s vs the training step's samples/s (same batch, K).

A and B alternate round by round; the table shows medians. Absolute numbers on a shared machine
are noise: compare ratios. Threads: torch uses ``--threads`` (default 2) for every candidate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def _batch(B, K, S, A):
    g = torch.Generator().manual_seed(0)
    return {"states": torch.randn(B, K, S, generator=g), "actions": torch.rand(B, K, A, generator=g) * 2 - 1,
            "returns_to_go": torch.randn(B, K, 1, generator=g), "timesteps": torch.randint(0, 1000, (B, K), generator=g),
            "attention_mask": torch.ones(B, K)}


def ours_step_fn(finetune: str, hidden: int, layers: int, heads: int, B: int, K: int, S: int, A: int):
    """A closure running one training step of our DecisionTransformer; returns samples per call."""
    from lamo_ray.config import ModelConfig
    from lamo_ray.model import DecisionTransformer, action_loss

    cfg = ModelConfig(backbone="gpt2", pretrained=False, n_layer=layers, n_embd=hidden, n_head=heads,
                      embedding="linear", finetune=finetune)
    model = DecisionTransformer(cfg, (S,), A, 1000).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-5, eps=1e-6)
    b = _batch(B, K, S, A)

    def step():
        preds = model(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["attention_mask"])
        loss = action_loss(preds, b["actions"], b["attention_mask"], discrete=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
        return B

    return step


def hf_step_fn(hidden: int, layers: int, heads: int, B: int, K: int, S: int, A: int):
    """One training step of `transformers.DecisionTransformerModel` at the same shapes."""
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    cfg = DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=hidden, n_layer=layers, n_head=heads,
                                    max_ep_len=1000, n_positions=3 * K)
    model = DecisionTransformerModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5, eps=1e-6)
    b = _batch(B, K, S, A)
    rewards = torch.zeros(B, K, 1)

    def step():
        _, action_preds, _ = model(states=b["states"], actions=b["actions"], rewards=rewards,
                                   returns_to_go=b["returns_to_go"], timesteps=b["timesteps"],
                                   attention_mask=b["attention_mask"], return_dict=False)
        loss = ((action_preds - b["actions"]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        return B

    return step


def sampler_fn(B: int, K: int, S: int, A: int):
    """Segment sampling from a synthetic 1M-transition dataset (1000 trajectories of 1000 steps)."""
    from lamo_ray.data import SegmentSampler, Trajectory, TrajectoryDataset, state_stats

    rng = np.random.default_rng(0)
    trajs = [Trajectory(rng.standard_normal((1000, S)).astype(np.float32),
                        rng.uniform(-1, 1, (1000, A)).astype(np.float32),
                        rng.standard_normal(1000).astype(np.float32), False) for _ in range(200)]
    ds = TrajectoryDataset(trajs, (S,), A, False, None, None, None, "synthetic")
    mean, std = state_stats(ds)
    sampler = SegmentSampler(ds, K, 1000.0, 1000, mean, std, seed=0)

    def step():
        sampler.sample(B)
        return B

    return step


def rate(fn, seconds: float, warmup: int = 2) -> float:
    """Samples/s of ``fn`` over at least ``seconds`` of wall time (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


def compare(name: str, a, b, rounds: int, seconds: float) -> dict:
    """Alternate A and B for ``rounds`` rounds; median rates and the ratio of medians."""
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(rate(a, seconds))
        rb.append(rate(b, seconds))
    ma, mb = statistics.median(ra), statistics.median(rb)
    return {"id": name, "a_per_s": ma, "b_per_s": mb, "ratio": ma / mb}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="wall time per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny shapes and 1 round (smoke test)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    B, K, S, A = (8, 4, 60, 9) if args.quick else (64, 20, 60, 9)
    hidden, layers, heads = (32, 1, 1) if args.quick else (128, 3, 1)
    rounds, seconds = (1, 0.2) if args.quick else (args.rounds, args.seconds)
    ours_full = ours_step_fn("full", hidden, layers, heads, B, K, S, A)
    rows = [
        compare("B1-tiny ours/HF DT samples/s", ours_full, hf_step_fn(hidden, layers, heads, B, K, S, A), rounds, seconds),
        compare("B2-tiny LoRA/full samples/s", ours_step_fn("lora", hidden, layers, heads, B, K, S, A), ours_full,
                rounds, seconds),
        compare("B8 sampler/train-step samples/s", sampler_fn(B, K, S, A), ours_full, rounds, seconds),
    ]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {B}, K={K}, state {S}, act {A}, "
          f"{rounds} rounds x {seconds:g} s, medians")
    print(f"{'benchmark':36s} {'A /s':>12s} {'B /s':>12s} {'A/B':>7s}")
    for r in rows:
        print(f"{r['id']:36s} {r['a_per_s']:12.1f} {r['b_per_s']:12.1f} {r['ratio']:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
