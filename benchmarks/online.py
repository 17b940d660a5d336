"""Online fine-tuning benchmarks (issue 18 "Performance"), at the local sweep's size
(`sweeps/online_local.yaml`: PointMaze UMaze, a 2-layer 64-wide GPT-2, K 1, batch 64, 300 updates and
>= 1000 transitions per iteration).

B10 collection throughput: env steps/s of `lamo_ray.online.loop.Collector` (N Ray rollout actors x E
    envs, one batched forward per lock-step) vs the paper's loop (one env, one forward per step, in
    the learner's process: `lamo_ray.evaluate.Rollout` with one env), same policy and episodes,
    alternated round by round in one run. Target: >= 2x here.
B11 wall time per online iteration, synchronous (collect, then update: the paper's schedule) vs
    ``online.overlap`` (actors collect iteration i+1 while the learner updates i), TD3+ODT, the
    learner on 1 thread as in a sweep trial; also the learner's wait for data per iteration. Target:
    overlapped cuts wall time per iteration by >= 30%.

    python benchmarks/online.py [--rounds 3] [--iterations 4] [--json out.json]

Prints one row per measurement and the ratios; medians over rounds / iterations (the first online
iteration, which waits for the actors to start, is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def local_config(overrides: dict | None = None):
    """The trial config of `sweeps/online_local.yaml`'s td3_odt variant (seed 0), with ``overrides``."""
    from lamo_ray.config import deep_merge, load_sweep, resolve_trial

    sweep = load_sweep(REPO / "sweeps" / "online_local.yaml")
    cfg = resolve_trial(sweep, "td3_odt", 0, {})
    if overrides:
        cfg = type(cfg).model_validate(deep_merge(cfg.model_dump(), overrides))
    return cfg


def build(cfg):
    """(model, dataset, mean, std, spec, env_id, env_kwargs) for ``cfg`` (data generated if missing)."""
    from lamo_ray.checkpoint import PolicySpec
    from lamo_ray.data.loading import load_dataset
    from lamo_ray.data.trajectories import state_stats
    from lamo_ray.domains import for_dataset
    from lamo_ray.envs import evaluation_env_kwargs
    from lamo_ray.model import DecisionTransformer

    domain = for_dataset(cfg.data.source)
    domain.ensure_dataset(cfg.data.source)
    dataset = load_dataset(cfg.data.source)
    mean, std = state_stats(dataset)
    model = DecisionTransformer(cfg.model, tuple(dataset.obs_shape), dataset.act_dim, cfg.data.max_ep_len)
    spec = PolicySpec(trial=cfg, state_shape=tuple(dataset.obs_shape), act_dim=dataset.act_dim,
                      discrete_actions=False, state_mean=mean, state_std=std,
                      backbone_config=model.backbone_base_config)
    env_id = dataset.env_id
    return model, dataset, mean, std, spec, env_id, evaluation_env_kwargs(env_id, dataset.env_kwargs)


def bench_collection(cfg, rounds: int, actors: int, envs: int) -> list[dict]:
    """B10: env steps/s, Collector (actors x envs) vs one env in this process, alternated."""
    import ray

    from lamo_ray.evaluate import Rollout
    from lamo_ray.online.loop import Collector, episode_seed

    cfg = cfg.model_copy(update={"online": cfg.online.model_copy(update={"num_actors": actors,
                                                                          "envs_per_actor": envs})})
    model, dataset, mean, std, spec, env_id, env_kwargs = build(cfg)
    weights = model.rollout_state_dict()
    collector = Collector(spec, env_id, cfg.online, cfg.seed, stochastic=False, env_kwargs=env_kwargs)
    ray.get([a.__ray_ready__.remote() for a in collector.actors])
    single = Rollout(spec, env_id, 1, threads=1, env_kwargs=env_kwargs)
    single.set_weights(weights)
    rows: dict[str, list[float]] = {"actors": [], "single": []}
    for r in range(rounds):
        collected = collector.gather(collector.submit(weights, r))
        rows["actors"].append(collected.env_steps / collected.seconds)
        # the paper's loop: episodes one after another on one env until the same budget
        t0, steps, e = time.perf_counter(), 0, 0
        while steps < cfg.online.transitions_per_iteration:
            rec = single.run([(cfg.online.target_return, episode_seed(cfg.seed, r, e))], record=True,
                             action_noise=cfg.online.exploration_noise, noise_seed=cfg.seed)[0]
            steps, e = steps + rec["length"], e + 1
        rows.setdefault("single", []).append(steps / (time.perf_counter() - t0))
    collector.shutdown()
    a, s = statistics.median(rows["actors"]), statistics.median(rows["single"])
    return [{"id": f"B10 collection env-steps/s, {actors} actors x {envs} envs / one env in-process",
             "a": a, "b": s, "ratio": a / s,
             "note": f"median of {rounds} alternated rounds of >= {cfg.online.transitions_per_iteration} transitions; "
                     f"per round actors {[round(x) for x in rows['actors']]}, single {[round(x) for x in rows['single']]}"}]


def bench_overlap(cfg, iterations: int, repeats: int = 2) -> list[dict]:
    """B11: seconds per online iteration (TD3+ODT), synchronous vs overlapped, learner on 1 thread;
    the two modes alternated, each run ``repeats`` times."""
    import ray
    import torch

    from lamo_ray.online.loop import Collector, OnlinePhase, make_learner
    from lamo_ray.learner import Learner
    from lamo_ray.optim import MixedPrecision

    torch.set_num_threads(1)
    out, waits = {}, {}
    for overlap in (False, True) * repeats:  # alternated
        c = cfg.model_copy(update={"online": cfg.online.model_copy(update={"overlap": overlap,
                                                                            "iterations": iterations})})
        model, dataset, mean, std, spec, env_id, env_kwargs = build(c)
        params = [p for p in model.parameters() if p.requires_grad]
        actor = Learner.build(params, c.train, MixedPrecision.for_device("fp32", torch.device("cpu")))
        learner = make_learner(c, model, actor, int(np.prod(dataset.obs_shape)), dataset.act_dim)
        collector = Collector(spec, env_id, c.online, c.seed, stochastic=False, env_kwargs=env_kwargs)
        ray.get([a.__ray_ready__.remote() for a in collector.actors])
        phase = OnlinePhase(c, model, learner, dataset, mean, std, collector, supervised_step=None)
        walls, waited = [], []
        for i in range(iterations):
            t0 = time.perf_counter()
            m = phase.run_iteration()
            if i > 0:
                walls.append(time.perf_counter() - t0)
                waited.append(m["online/collect_wait_s"])
        phase.shutdown()
        out.setdefault(overlap, []).extend(walls)
        waits.setdefault(overlap, []).extend(waited)
    sync, over = statistics.median(out[False]), statistics.median(out[True])
    return [{"id": "B11 seconds per online iteration, overlapped / synchronous (TD3+ODT, learner 1 thread)",
             "a": over, "b": sync, "ratio": over / sync,
             "note": f"median over {len(out[True])} iterations each; learner's wait for data per iteration: "
                     f"overlapped {statistics.median(waits[True]):.2f} s, synchronous {statistics.median(waits[False]):.2f} s"}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=4, help="online iterations per B11 run (first not counted)")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--envs", type=int, default=2)
    p.add_argument("--only", nargs="+", default=["B10", "B11"])
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run, not a measurement)")
    args = p.parse_args(argv)
    import ray

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    overrides = None
    if args.quick:
        overrides = {"online": {"transitions_per_iteration": 300, "updates_per_iteration": 5},
                     "train": {"batch_size": 8}}
    cfg = local_config(overrides)
    rows = []
    if "B10" in args.only:
        rows += bench_collection(cfg, args.rounds, args.actors, args.envs)
    if "B11" in args.only:
        rows += bench_overlap(cfg, args.iterations, repeats=1 if args.quick else 2)
    ray.shutdown()
    for r in rows:
        print(f"{r['id']}: {r['a']:.2f} vs {r['b']:.2f} -> ratio {r['ratio']:.2f}  ({r['note']})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
