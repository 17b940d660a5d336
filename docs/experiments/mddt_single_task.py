"""Exploratory check behind sweeps/l2m_local.yaml's context length (docs/results.md, "Continual
fine-tuning"): train the local MDDT (sweeps/l2m_local.yaml's model: 3 GPT-2 blocks x 64, 2 heads, the
action-dimension embedding on, dropout 0.1) with full fine-tuning on ONE Meta-World task's data
from random init, and evaluate it closed-loop every --eval-every steps with lamo_ray's rollout
(5 episodes, reset seeds 10000-10004, target = the data's expert return). One seed: an exploration,
not a result.

    python docs/experiments/mddt_single_task.py faucet-close --context 1 --steps 2000 --eval-every 1000

Uses the task's data in the Minari store (lamo/metaworld/<task>-v0; made by
`python -m lamo_ray.collect metaworld --tasks <task>` if missing). AdamW lr 1e-3, weight decay 0.01,
constant lr, clip 0.25, batch 32, one torch thread.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    from lamo_ray.checkpoint import PolicySpec
    from lamo_ray.config import validate_trial
    from lamo_ray.data.loading import load_dataset
    from lamo_ray.data.shards import ShardedSampler, write_task
    from lamo_ray.evaluate import Rollout
    from lamo_ray.mddt import MultiDomainDecisionTransformer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("--context", type=int, default=1, help="context length K (timesteps)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    base = yaml.safe_load((REPO / "sweeps" / "l2m_local.yaml").read_text())["base"]
    base["data"]["context_length"] = args.context
    base["continual"]["method"] = "ft"
    cfg = validate_trial(base)
    m = cfg.continual.mddt
    model = MultiDomainDecisionTransformer(cfg.model, cfg.data.max_ep_len, state_dim=m.state_dim,
                                           act_dim=m.action_dim, bins=m.action_bins,
                                           action_dim_embedding=m.action_dim_embedding)
    ds = load_dataset(f"lamo/metaworld/{args.task}-v0")
    shard = write_task(ds, Path(tempfile.mkdtemp()) / args.task, args.task)
    sampler = ShardedSampler([shard], args.context, cfg.data.rtg_scale, cfg.data.max_ep_len, m.state_dim,
                             m.action_dim, seed=args.seed)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3, weight_decay=0.01)
    spec = PolicySpec(trial=cfg, state_shape=(ds.obs_shape[0],), act_dim=ds.act_dim, discrete_actions=False,
                      state_mean=None, state_std=None, backbone_config=model.backbone_base_config)
    rollout = Rollout(spec, ds.env_id, 5, threads=1, model=copy.deepcopy(model).eval())
    t0 = time.time()
    for step in range(1, args.steps + 1):
        model.train()
        b = {k: torch.as_tensor(v) for k, v in sampler.sample(32).items()}
        logits = model(b["states"], b["actions"], b["returns_to_go"], b["rewards"], b["timesteps"], b["attention_mask"])
        loss = model.loss(logits, b["actions"], b["attention_mask"], b["action_mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        if step % args.eval_every == 0:
            rollout.set_weights(model.state_dict())
            records = rollout.run([(ds.ref_max_score, 10_000 + e) for e in range(5)])
            print(f"step {step}: loss {loss.item():.3f}, success {sum(r['success'] for r in records)}/5, mean return "
                  f"{sum(r['return'] for r in records) / 5:.0f} (random {ds.ref_min_score:.0f}, expert "
                  f"{ds.ref_max_score:.0f}), {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
