"""Benchmarks (not tests): throughput ratios measured side by side in one run.

    python benchmarks/run.py [--only B1 B2 ...] [--rounds 3] [--quick] [--json OUT] [--skip-gpt2]
    python benchmarks/run.py --all --write docs/performance.md     # every benchmark, one dated table

Ids as in the performance issue (docs/performance.md has the latest table):
  B1  training samples/s of our DT (full fine-tune, linear embeddings) vs
      `transformers.DecisionTransformerModel` at the same shapes (batch 64, K=20, Kitchen dims state 60 /
      act 9, AdamW, clip 0.25): tiny (128 hidden, 3 layers, 1 head) and GPT-2-small (768, 12, 12).
  B2  LoRA (rank 16, alpha 32, dropout 0.1, separate Q/K/V adapters as LaMo's D4RL code) vs full
      fine-tuning samples/s of our model; and the same LoRA vs one adapter on the fused c_attn.
  B3  training FLOP/s achieved / fp32 matmul FLOP/s of the same threads (a 2048^3 matmul into a preallocated
      output, alternated with the training step round by round). A step's FLOPs are
      counted by `torch.utils.flop_counter.FlopCounterMode` over one forward+backward (matmuls,
      batched matmuls and attention; elementwise ops and the optimiser are not counted).
  B4  evaluation env-steps/s on FrankaKitchen-v1: our `Evaluator` (Ray rollout actors x vectorised envs,
      one batched forward per lock-step) vs a LaMo-style loop (one env, one full-context batch-1
      forward per step, as LaMo's ``evaluate_episode_rtg``), same model; and ours / the machine's
      ceiling: min(env-only steps/s x cores, batched-forward env-steps/s of the model on all cores).
  B5  ASHA vs FIFO trial-steps and wall time (benchmarks/asha.py, runs sweeps: minutes).
  B6  DDP 2 workers x 1 thread vs 1 worker x 1 thread (benchmarks/ddp.py, through Ray Train).
  B7  per-trial overhead of a sweep (benchmarks/overhead.py, runs a sweep).
  B8  segment-sampler samples/s vs the training step's samples/s (same batch, K).
  B9  ``train.precision`` bf16 (autocast) vs fp32 training samples/s, and ``model.attention`` SDPA vs
      eager, on this CPU (GPUs are where bf16 and SDPA pay; this row says what they cost here).

A and B alternate round by round; the table shows medians. Absolute numbers on a shared machine are
noise: compare ratios. torch uses ``--threads`` (default 2) in this process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ modules (asha, ddp, overhead)

TINY = {"hidden": 128, "layers": 3, "heads": 1}
GPT2_SMALL = {"hidden": 768, "layers": 12, "heads": 12}
KITCHEN_DIMS = {"B": 64, "K": 20, "S": 60, "A": 9}


def _batch(B, K, S, A):
    g = torch.Generator().manual_seed(0)
    return {"states": torch.randn(B, K, S, generator=g), "actions": torch.rand(B, K, A, generator=g) * 2 - 1,
            "returns_to_go": torch.randn(B, K, 1, generator=g), "timesteps": torch.randint(0, 1000, (B, K), generator=g),
            "attention_mask": torch.ones(B, K)}


def our_model(finetune: str, hidden: int, layers: int, heads: int, S: int, A: int, max_ep_len: int = 1000,
              fused_qkv: bool = False, attention: str = "auto"):
    """Our `DecisionTransformer` (random-init GPT-2 architecture, linear embeddings) at a shape; LoRA
    with separate Q/K/V adapters (LaMo D4RL) unless ``fused_qkv`` (one on c_attn: LaMo Atari)."""
    from lamo_ray.config import ModelConfig
    from lamo_ray.model import DecisionTransformer

    cfg = ModelConfig(backbone="gpt2", pretrained=False, n_layer=layers, n_embd=hidden, n_head=heads,
                      embedding="linear", finetune=finetune, lora={"fused_qkv": fused_qkv}, attention=attention)
    return DecisionTransformer(cfg, (S,), A, max_ep_len)


def ours_step_fn(finetune: str, hidden: int, layers: int, heads: int, B: int, K: int, S: int, A: int,
                 fused_qkv: bool = False, precision: str = "fp32", attention: str = "auto"):
    """A closure running one training step as `lamo_ray.train` does (its optimiser, loss, clip and
    ``train.precision``); returns the samples per call. ``.fwd_bwd`` is attached for FLOP counting and
    ``.losses`` records each step's loss. The model starts from seed 0 whatever the options."""
    from lamo_ray.config import TrainConfig
    from lamo_ray.model import action_loss
    from lamo_ray.learner import Learner
    from lamo_ray.train import MixedPrecision

    torch.manual_seed(0)
    model = our_model(finetune, hidden, layers, heads, S, A, fused_qkv=fused_qkv, attention=attention).train()
    params = [p for p in model.parameters() if p.requires_grad]
    learner = Learner.build(params, TrainConfig(),   # its clip: train.grad_clip's default, 0.25
                            MixedPrecision.for_device(precision, torch.device("cpu")), scheduled=False)
    b = _batch(B, K, S, A)
    losses: list[float] = []

    def step():
        with learner.autocast():
            preds = model(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["attention_mask"])
            loss = action_loss(preds.float(), b["actions"], b["attention_mask"], discrete=False)
        learner.update(loss)
        losses.append(loss.item())
        return B

    def fwd_bwd():
        preds = model(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["attention_mask"])
        action_loss(preds, b["actions"], b["attention_mask"], discrete=False).backward()

    step.fwd_bwd = fwd_bwd
    step.losses = losses
    return step


def run_b9(shape_name: str, shape: dict, dims: dict, rounds: int, seconds: float, loss_steps: int) -> list[dict]:
    """B9: bf16 autocast vs fp32 training samples/s on this CPU, and PyTorch's fused SDPA attention
    vs transformers' eager attention (both fp32), same model, batch and init. The bf16 row's note gives
    the loss after ``loss_steps`` steps on one fixed batch from the same init, bf16 vs fp32."""
    B, K, S, A = dims["B"], dims["K"], dims["S"], dims["A"]
    h, L, H = shape["hidden"], shape["layers"], shape["heads"]
    warm = 2 if shape is not GPT2_SMALL else 1
    rows = [compare(f"B9-{shape_name} bf16/fp32 samples/s", ours_step_fn("full", h, L, H, B, K, S, A, precision="bf16"),
                    ours_step_fn("full", h, L, H, B, K, S, A), rounds, seconds, warm),
            compare(f"B9-{shape_name} SDPA/eager attention samples/s",
                    ours_step_fn("full", h, L, H, B, K, S, A, attention="sdpa"),
                    ours_step_fn("full", h, L, H, B, K, S, A, attention="eager"), rounds, seconds, warm)]
    if loss_steps:
        final = {}
        for precision in ("bf16", "fp32"):
            step = ours_step_fn("full", h, L, H, B, K, S, A, precision=precision)
            for _ in range(loss_steps):
                step()
            final[precision] = (step.losses[0], step.losses[-1])
        rows[0]["note"] = (f"loss on one batch, step 1 -> {loss_steps}: bf16 {final['bf16'][0]:.6f} -> "
                           f"{final['bf16'][1]:.6f}, fp32 {final['fp32'][0]:.6f} -> {final['fp32'][1]:.6f}")
    return rows


def hf_step_fn(hidden: int, layers: int, heads: int, B: int, K: int, S: int, A: int):
    """One training step of `transformers.DecisionTransformerModel` at the same shapes (its defaults:
    ReLU MLP, dropout 0.1), with torch's default AdamW as in HF's and LaMo's examples."""
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
    """Segment sampling from a synthetic 200k-transition dataset (200 trajectories of 1000 steps)."""
    from lamo_ray.data.sampling import SegmentSampler
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset, state_stats

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
    """Units/s of ``fn`` (it returns the units it did) over at least ``seconds`` of wall time, and at
    least one call, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        if time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0)


def compare(name: str, a, b, rounds: int, seconds: float, warmup: int = 2, **extra) -> dict:
    """Alternate A and B for ``rounds`` rounds; median rates and the ratio of medians."""
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(rate(a, seconds, warmup))
        rb.append(rate(b, seconds, warmup))
        warmup = 0  # warm in the first round only
    ma, mb = statistics.median(ra), statistics.median(rb)
    return {"id": name, "a_per_s": ma, "b_per_s": mb, "ratio": ma / mb, **extra}


# --------------------------------------------------------------------------- B3: FLOP/s


def step_flops(step) -> int:
    """FLOPs of one forward+backward of the step's model (`FlopCounterMode`: matmul-class ops only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step.fwd_bwd()
    return int(counter.get_total_flops())


def matmul_fn(n: int = 2048):
    """A closure doing one fp32 ``n x n @ n x n`` into a preallocated output; returns its FLOPs (the
    matmul peak of this process's torch threads: no allocation in the loop, so a strict peak)."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)

    def mm():
        torch.mm(a, b, out=out)
        return 2 * n ** 3

    return mm


def b3_row(shape_name: str, step, flops: int, label: str, note: str, rounds: int, seconds: float,
           peak_n: int) -> dict:
    """Training FLOP/s (the step's counted FLOPs x steps/s) vs the matmul peak, alternated round by round."""

    def step_flops_fn():
        step()
        return flops

    return compare(f"B3-{shape_name} {label} FLOP/s / matmul peak", step_flops_fn, matmul_fn(peak_n), rounds,
                   seconds, warmup=1, note=note)


# --------------------------------------------------------------------------- B4: evaluation


def _kitchen_spec(model, K: int):
    from lamo_ray.config import TrialConfig
    from lamo_ray.domains.kitchen import ENV_ID as KITCHEN_ENV_ID
    from lamo_ray.checkpoint import PolicySpec

    m = model.backbone.config
    trial = TrialConfig.model_validate({
        "data": {"source": "lamo/kitchen/complete-v0", "context_length": K, "rtg_scale": 1, "max_ep_len": 1000},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": m.num_hidden_layers, "n_embd": m.hidden_size,
                  "n_head": m.num_attention_heads, "embedding": "linear", "finetune": "full"},
    })
    spec = PolicySpec(trial=trial, state_shape=(60,), act_dim=9, discrete_actions=False,
                      state_mean=np.zeros(60, np.float32), state_std=np.ones(60, np.float32))
    return spec, KITCHEN_ENV_ID


def lamo_loop_env_steps(model, K: int, episode_steps: int, episodes: int, seed: int = 0) -> float:
    """Env-steps/s of LaMo's sequential evaluation: one env; every step one batch-1 forward over the
    full (left-padded) K-step context (LaMo ``evaluate_episodes.evaluate_episode_rtg`` /
    ``DecisionTransformer.get_action``)."""
    from lamo_ray.domains.kitchen import ENV_ID as KITCHEN_ENV_ID
    from lamo_ray.envs import flatten_observation, make_env

    env = make_env(KITCHEN_ENV_ID, max_episode_steps=episode_steps)
    model.eval()
    steps, t0 = 0, time.perf_counter()
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        states = [flatten_observation(KITCHEN_ENV_ID, obs)]
        actions, rtg = [], [4.0]
        done = False
        while not done:
            T = len(states)
            L = min(T, K)
            s = torch.zeros(1, K, 60)
            s[0, K - L:] = torch.as_tensor(np.stack(states[-L:]))
            a = torch.zeros(1, K, 9)
            if L > 1:
                a[0, K - L:K - 1] = torch.as_tensor(np.stack(actions[-(L - 1):]))
            r = torch.zeros(1, K, 1)
            r[0, K - L:, 0] = torch.as_tensor(rtg[-L:])
            ts = torch.zeros(1, K, dtype=torch.long)
            ts[0, K - L:] = torch.arange(T - L, T)
            mask = torch.zeros(1, K)
            mask[0, K - L:] = 1
            with torch.no_grad():
                act = model.predict_action(s, a, r, ts, mask)[0].numpy()
            obs, reward, term, trunc, _ = env.step(np.clip(act, -1, 1))
            steps += 1
            done = term or trunc
            states.append(flatten_observation(KITCHEN_ENV_ID, obs))
            actions.append(act)
            rtg.append(rtg[-1] - float(reward))
    return steps / (time.perf_counter() - t0)


def env_only_steps(seconds: float) -> float:
    """FrankaKitchen-v1 env-steps/s of one process with zero actions (as `lamo_ray.envs.make_env` builds it)."""
    from lamo_ray.domains.kitchen import ENV_ID as KITCHEN_ENV_ID
    from lamo_ray.envs import make_env

    env = make_env(KITCHEN_ENV_ID)
    env.reset(seed=0)
    zero = np.zeros(9, np.float32)

    def fn():
        for _ in range(50):
            _, _, term, trunc, _ = env.step(zero)
            if term or trunc:
                env.reset()
        return 50

    return rate(fn, seconds, warmup=1)


def batched_forward_env_steps(model, K: int, batch: int, seconds: float) -> float:
    """Env-steps/s the model alone sustains at full context: batch / (one batched forward's time)."""
    b = _batch(batch, K, 60, 9)
    model.eval()

    def fn():
        with torch.no_grad():
            model.predict_action(**b)
        return batch

    return rate(fn, seconds, warmup=2)


#: B4 at the tiny shape: the issue's "20 episodes x targets" (LaMo evaluates each target return on
#: its own episodes), 2 targets
B4_EPISODES_PER_TARGET = 20


def run_b4(shape_name: str, shape: dict, quick: bool, threads: int, rounds: int) -> list[dict]:
    """B4 at one model shape: ours (Ray actors) vs the LaMo loop, and ours vs the machine's ceiling."""
    import ray

    from lamo_ray.config import EvalConfig
    from lamo_ray.evaluate import Evaluator

    K = 20
    cores = int(ray.available_resources().get("CPU", os.cpu_count() or 1))
    tiny = shape is TINY
    episode_steps = (20 if quick else 280) if tiny else 40
    per_target = (2 if quick else B4_EPISODES_PER_TARGET) if tiny else 4
    envs_per_actor = per_target * 2 // cores if tiny else per_target  # tiny: every episode at once
    model = our_model("full", shape["hidden"], shape["layers"], shape["heads"], 60, 9).eval()
    spec, env_id = _kitchen_spec(model, K)
    eval_cfg = EvalConfig(target_returns=[4, 3], episodes=per_target, num_actors=cores, envs_per_actor=envs_per_actor,
                          actor_cpus=1, max_episode_steps=episode_steps)
    evaluator = Evaluator(spec, eval_cfg, env_id, (0.0, 4.0), seed=0)
    weights = model.state_dict()
    evaluator(weights)  # actors are built once per trial and kept: warm them
    total_steps = 2 * per_target * episode_steps
    lamo_episodes = 1 if not tiny else (1 if quick else 4)
    ours, lamo = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        _, records = evaluator(weights)
        ours.append(sum(r["length"] for r in records) / (time.perf_counter() - t0))
        assert sum(r["length"] for r in records) == total_steps
        lamo.append(lamo_loop_env_steps(model, K, episode_steps, lamo_episodes))
    evaluator.shutdown()
    seconds = 0.5 if quick else 3.0
    env_ceiling = env_only_steps(seconds) * cores
    torch.set_num_threads(threads)
    model_ceiling = batched_forward_env_steps(model, K, 2 * per_target, seconds)
    ceiling = min(env_ceiling, model_ceiling)
    bound = "env" if env_ceiling <= model_ceiling else "model"
    mo, ml = statistics.median(ours), statistics.median(lamo)
    note = (f"{2 * per_target} episodes x {episode_steps} steps, {cores} actors x {envs_per_actor} envs; ceiling "
            f"{bound}-bound (env {env_ceiling:.0f}, model {model_ceiling:.0f} env-steps/s)")
    return [{"id": f"B4-{shape_name} ours/LaMo-loop env-steps/s", "a_per_s": mo, "b_per_s": ml, "ratio": mo / ml,
             "note": note},
            {"id": f"B4-{shape_name} ours/ceiling env-steps/s", "a_per_s": mo, "b_per_s": ceiling,
             "ratio": mo / ceiling, "note": note}]


# --------------------------------------------------------------------------- main


def run_model_benchmarks(shape_name: str, shape: dict, dims: dict, rounds: int, seconds: float,
                         peak_n: int, with_b8: bool) -> list[dict]:
    """B1, B2, B3 (and B8) at one shape."""
    B, K, S, A = dims["B"], dims["K"], dims["S"], dims["A"]
    h, L, H = shape["hidden"], shape["layers"], shape["heads"]
    warm = 2 if shape is not GPT2_SMALL else 1
    ours_full = ours_step_fn("full", h, L, H, B, K, S, A)
    ours_lora = ours_step_fn("lora", h, L, H, B, K, S, A)
    rows = [compare(f"B1-{shape_name} ours/HF DT samples/s", ours_full, hf_step_fn(h, L, H, B, K, S, A), rounds,
                    seconds, warm),
            compare(f"B2-{shape_name} LoRA/full samples/s", ours_lora, ours_full, rounds, seconds, warm),
            compare(f"B2-{shape_name} LoRA separate Q/K/V / fused c_attn samples/s", ours_lora,
                    ours_step_fn("lora", h, L, H, B, K, S, A, fused_qkv=True), rounds, seconds, warm)]
    flops, lora_flops = step_flops(ours_full), step_flops(ours_lora)
    # A step at GPT-2-small shape takes ~10 s, so the peak is timed over at least 2 s per round too.
    b3_seconds = max(seconds, 0.5 if shape is not GPT2_SMALL else 2.0)
    rows.append(b3_row(shape_name, ours_full, flops, "train", f"{flops / 1e9:.2f} GFLOP per fwd+bwd "
                       "(FlopCounterMode), full fine-tune", rounds, b3_seconds, peak_n))
    rows.append(b3_row(shape_name, ours_lora, lora_flops, "LoRA", f"{lora_flops / 1e9:.2f} GFLOP per fwd+bwd",
                       rounds, b3_seconds, peak_n))
    if with_b8:
        rows.append(compare("B8 sampler/train-step samples/s", sampler_fn(B, K, S, A), ours_full, rounds, seconds))
    return rows


#: the benchmarks in scripts of their own (B10-B15): (ids, script, full-size args, --quick args, rows from its JSON)
SCRIPTS = [
    ("B10 B11", "online.py", ["--rounds", "3"], ["--quick", "--rounds", "1"], lambda out: out),
    ("B12", "shards.py", [], ["--tasks", "2", "--transitions", "20000", "--seconds", "1"],
     lambda out: [{"id": "B12 sharded/in-memory samples/s", "a": out["rows"][0]["samples_per_s"],
                   "b": out["rows"][1]["samples_per_s"], "ratio": out["rows"][0]["samples_per_s"] / out["rows"][1]["samples_per_s"],
                   "note": f"{out['tasks']} tasks, {out['transitions']:,} transitions; anonymous RSS growth "
                           + " vs ".join(f"{r['after_sampling_mb']['RssAnon'] - r['before_mb']['RssAnon']:.0f} MB"
                                         for r in out["rows"])}]),
    ("B13 B14", "pool.py", ["--rounds", "5"], ["--rounds", "1", "--steps", "2", "--batch", "16"],
     lambda out: [{"id": "B13 pool of 30 / one modulator, training step ms", "a": 1e3 * out["median_s"]["pool"],
                   "b": 1e3 * out["median_s"]["one_lora"], "ratio": out["b13_pool_over_one"], "note": "target <= 1.5"},
                  {"id": "B14 cached / one forward per dim, ms per env step", "a": 1e3 * out["median_s"]["cached"],
                   "b": 1e3 * out["median_s"]["uncached"], "ratio": out["b14_cached_over_uncached"], "note": ""}]),
    ("B15", "preflight_memory.py", [], ["--tasks", "2", "--transitions", "20000"],
     lambda out: [{"id": "B15 preflight / all loaded, driver peak growth MB", "a": out["preflight"]["peak_growth_mb"],
                   "b": out["all_loaded"]["peak_growth_mb"], "ratio": out["ratio"],
                   "note": f"{out['tasks']} task files, {out['files_mb']:.0f} MB"}]),
]


def run_scripts(quick: bool, workdir: Path) -> list[dict]:
    """B10-B15, each script in its own process (as a user runs it), its JSON turned into table rows.

    Raises:
        RuntimeError: a script that failed (its exit code and the end of its stderr)."""
    import subprocess

    rows = []
    workdir.mkdir(parents=True, exist_ok=True)
    for ids, script, full, small, to_rows in SCRIPTS:
        out = workdir / f"{script}.json"
        cmd = [sys.executable, str(Path(__file__).with_name(script)), *(small if quick else full), "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{ids} ({script}) failed with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
        rows += to_rows(json.loads(out.read_text()))
    return rows


def dated_section(rows: list[dict], command: str, machine: str) -> str:
    """A docs/performance.md section: today's date, the command, the commit, the machine, one row per
    benchmark (A, B, A/B and the note), all from this one run."""
    import datetime
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                           text=True).stdout.strip()
    lines = [f"## {datetime.date.today().isoformat()}: every benchmark, one run (commit {commit or 'unknown'}"
             f"{', with uncommitted changes' if dirty else ''})", "",
             f"```bash\n{command}\n```", "", machine, "",
             "| id | A | B | A/B | note |", "|---|---|---|---|---|"]
    for r in rows:
        a, b = r.get("a_per_s", r.get("a")), r.get("b_per_s", r.get("b"))
        note = str(r.get("note", "")).replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['id']} | {a:.4g} | {b:.4g} | {r['ratio']:.2f} | {note} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` first after the file's title and opening paragraphs (before its first ``## ``)."""
    text = path.read_text() if path.exists() else "# Performance measurements\n"
    at = text.find("\n## ")
    text = text + "\n" + section if at < 0 else text[:at + 1] + section + "\n" + text[at + 1:]
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", default=["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"],
                   help="benchmark ids to run (B1-B3 always run together)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement (tiny shapes)")
    p.add_argument("--gpt2-rounds", type=int, default=5,
                   help="rounds at GPT-2-small shape (one ~10 s step per round and side)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-gpt2", action="store_true", help="skip the GPT-2-small shape (~10 s a training step here)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, 1 round, short sweeps (smoke test)")
    p.add_argument("--workdir", default=None, help="where B5-B7 put their sweeps (default: a temp dir)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--all", action="store_true",
                   help="every benchmark, B1-B15: this script's, then B10-B15's scripts, each in its own process")
    p.add_argument("--write", type=Path, default=None,
                   help="put the table, dated, with the command and commit, into this markdown file "
                        "(e.g. docs/performance.md), first after its opening paragraphs")
    args = p.parse_args(argv)
    if args.all:
        args.only = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"]
    only = {x.upper() for x in args.only}
    torch.set_num_threads(args.threads)
    quick = args.quick
    dims = {"B": 8, "K": 4, "S": 60, "A": 9} if quick else KITCHEN_DIMS
    tiny = {"hidden": 32, "layers": 1, "heads": 1} if quick else TINY
    rounds, seconds = (1, 0.2) if quick else (args.rounds, args.seconds)
    rows: list[dict] = []
    if only & {"B1", "B2", "B3", "B8"}:
        peak_n = 256 if quick else 2048
        rows += run_model_benchmarks("tiny", tiny, dims, rounds, seconds, peak_n, with_b8="B8" in only)
        if not (quick or args.skip_gpt2):
            rows += run_model_benchmarks("gpt2", GPT2_SMALL, dims, max(rounds, args.gpt2_rounds), 0.0, peak_n,
                                         with_b8=False)
    if "B9" in only:
        rows += run_b9("tiny", tiny, dims, rounds, seconds, loss_steps=20 if quick else 30)
        if not (quick or args.skip_gpt2):
            rows += run_b9("gpt2", GPT2_SMALL, dims, max(rounds, args.gpt2_rounds), 0.0, loss_steps=0)
    if "B4" in only:
        import ray

        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
        try:
            rows += run_b4("tiny", tiny, quick, args.threads, rounds)
            if not (quick or args.skip_gpt2):
                rows += run_b4("gpt2", GPT2_SMALL, quick, args.threads, max(1, rounds - 1))
        finally:
            ray.shutdown()
    import tempfile

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lamo-bench-"))
    for bid, module, fn in (("B5", "asha", "run_b5"), ("B6", "ddp", "run_b6"), ("B7", "overhead", "run_b7")):
        if bid in only and Path(__file__).with_name(f"{module}.py").exists():
            mod = importlib.import_module(module)
            rows += getattr(mod, fn)(quick=quick, workdir=workdir / bid)
    if args.all:
        rows += run_scripts(quick, workdir)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{args.threads} threads; batch {dims['B']}, K={dims['K']}, state {dims['S']}, act {dims['A']}; "
               f"{rounds} rounds, medians")
    print(machine)
    print(f"{'benchmark':44s} {'A':>12s} {'B':>12s} {'A/B':>7s}  note")
    for r in rows:
        print(f"{r['id']:44s} {r.get('a_per_s', r.get('a', float('nan'))):12.4g} "
              f"{r.get('b_per_s', r.get('b', float('nan'))):12.4g} {r['ratio']:7.2f}  {r.get('note', '')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.write is not None:
        command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(args.write, dated_section(rows, command, machine))
        print(f"table written into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
