"""Rollout evaluation with Ray actors: each actor steps several environments in lock-step and
runs one batched model forward per step.

Follows the LaMo/DT evaluation protocol (docs/references/lamo.md "Evaluation"): the policy is conditioned on
a target return; after each step ``rtg -= reward / rtg_scale``; 20 episodes per target; normalized
score ``100 * (return - ref_min) / (ref_max - ref_min)``. Ours: episodes run in parallel over
actors and vectorised environments instead of one env sequentially; environments are seeded
(``seed + seed_offset + episode index``), so an evaluation is reproducible.

CLI: ``python -m lamo_ray.evaluate --checkpoint PATH_OR_MLFLOW_URI [--episodes N] [--targets ...]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import Any

import numpy as np
import ray
import torch
from pydantic import ValidationError

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.data.rewards import RewardTransform
from lamo_ray.data.trajectories import Trajectory
from lamo_ray.config import SCORE_METRIC, EvalConfig
from lamo_ray.envs import flatten_observation, make_env, reference_scores_for
from lamo_ray.rollout_pool import RolloutPool, actor_threads_and_device, actors_for

log = logging.getLogger(__name__)


def normalized_score(ret: float | np.ndarray, ref_min: float | None, ref_max: float | None):
    """``100 * (return - ref_min) / (ref_max - ref_min)`` (D4RL convention); NaN when refs unknown."""
    if ref_min is None or ref_max is None or ref_max == ref_min:
        return np.full_like(np.asarray(ret, dtype=float), np.nan) if np.ndim(ret) else float("nan")
    return 100.0 * (np.asarray(ret, dtype=float) - ref_min) / (ref_max - ref_min)


def reference_scores(eval_cfg: EvalConfig, env_id: str, dataset_refs: tuple[float | None, float | None]):
    """Reference (min, max) returns: config override, else the dataset's metadata, else what the env's
    domain knows (`lamo_ray.envs.reference_scores_for`: D4RL's, or Atari's random / human)."""
    if eval_cfg.ref_min_score is not None and eval_cfg.ref_max_score is not None:
        return eval_cfg.ref_min_score, eval_cfg.ref_max_score
    if dataset_refs[0] is not None and dataset_refs[1] is not None:
        return dataset_refs
    return reference_scores_for(env_id) or (None, None)


def build_policy(spec: PolicySpec, load_weights: bool, rollout: bool = False) -> torch.nn.Module:
    """The trial's `DecisionTransformer` (weights loaded only when ``load_weights``). With ``rollout``
    the architecture that `DecisionTransformer.rollout_state_dict` fits (LoRA merged: no peft)."""
    from lamo_ray.model import DecisionTransformer, rollout_model_config

    cfg = spec.trial
    model_cfg = rollout_model_config(cfg.model) if rollout else cfg.model
    return DecisionTransformer(model_cfg, spec.state_shape, spec.act_dim, cfg.data.max_ep_len,
                               discrete_actions=spec.discrete_actions,
                               language_loss=cfg.language.co_lambda > 0, load_weights=load_weights,
                               backbone_config=None if load_weights else spec.backbone_config)


class Rollout:
    """Runs episodes on ``num_envs`` environments in lock-step with one batched forward per step.
    `RolloutActor` is this class as a Ray actor.

    Args:
        spec: the policy to rebuild (architecture only; weights arrive through `set_weights`).
        env_id: gymnasium id; observations flattened by `lamo_ray.envs.flatten_observation`.
        num_envs: environments stepped together.
        threads: torch intra-op threads (match the CPUs this actor may use).
        max_episode_steps: episode cap (default: the env's own time limit).
        model: use this module instead of building one from ``spec`` (tests).
        env_kwargs: passed to `lamo_ray.envs.make_env` (e.g. kitchen's task list, from the data).
        device: where the policy's forward runs: 'cpu', or 'cuda' for an actor given a (share of a)
            GPU (``eval.gpus_per_actor``); the envs step on the CPU either way.
    """

    def __init__(self, spec: PolicySpec, env_id: str, num_envs: int, threads: int = 1,
                 max_episode_steps: int | None = None, model: torch.nn.Module | None = None,
                 env_kwargs: dict[str, Any] | None = None, device: str = "cpu"):
        torch.set_num_threads(threads)
        self.spec = spec
        self.cfg = spec.trial
        self.device = torch.device(device)
        self.model = (model if model is not None else build_policy(spec, load_weights=False, rollout=True))
        self.model = self.model.to(self.device).eval()
        self.env_id = env_id
        self.envs = [make_env(env_id, max_episode_steps=max_episode_steps, **(env_kwargs or {}))
                     for _ in range(num_envs)]

    def set_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load `DecisionTransformer.rollout_state_dict` weights (LoRA merged)."""
        self.model.load_state_dict(state_dict)

    def run(self, episodes: list[tuple[float, int]], record: bool = False, action_noise: float = 0.0,
            noise_seed: int | None = None, sample: bool = False, task_index: int | None = None) -> list[dict[str, Any]]:
        """Run ``episodes`` = [(target_return, env_seed), ...]; returns one record per episode:
        ``{"target_return", "seed", "return", "length"}`` in the order given, plus
        ``"tasks_completed": {subtask: bool}`` for multi-task envs that report subtasks
        (FrankaKitchen's ``info["tasks_to_complete"]`` at reset / ``info["episode_task_completions"]``),
        and ``"success": bool`` for envs that report ``info["success"]`` (true at any step: PointMaze).

        Online collection (ODT-TD3's exploration, docs/references/odt_td3.md "Online loop"): ``action_noise``
        adds N(0, action_noise^2) per dimension to the deterministic action, then clamps it to the
        action space; ``sample`` (a policy with ODT's tanh-Gaussian head) draws the action from the
        policy instead of taking its mean. The draws of each episode come from its own generator,
        seeded by ``(noise_seed, env seed)``, so an episode does not depend on which actor or env slot
        ran it. The executed action is what the env gets and what the context holds. ``record`` adds
        ``"trajectory"``: a
        `lamo_ray.data.trajectories.Trajectory` of the flattened (un-normalised) states, executed
        actions and rewards, ``terminated`` as the env said.

        Each env slot keeps its last K steps in rolling arrays (left-padded, as the training
        segments; the current step's action entry zero, as DT), so a lock-step builds the model's
        batch with one indexing per input instead of per-env Python work.

        A model with ``uses_rewards`` (L2M's multi-domain DT, `lamo_ray.mddt`) also gets the rewards
        of the window (``rewards`` (B, K, 1), each step's learned reward / rtg_scale, the current
        step's 0), and ``task_index`` is passed to it as ``task`` (a pool's task-id oracle)."""
        K = self.cfg.data.context_length
        scale = self.cfg.data.rtg_scale
        max_t = self.cfg.data.max_ep_len
        spec = self.spec
        image = len(spec.state_shape) > 1
        mean = None if spec.state_mean is None else np.asarray(spec.state_mean, dtype=np.float32)
        std = None if spec.state_std is None else np.asarray(spec.state_std, dtype=np.float32)
        n = len(self.envs)
        if action_noise < 0 or (action_noise > 0 and spec.discrete_actions):
            raise ValueError(f"action_noise must be >= 0 and only for continuous actions, got {action_noise}")
        if sample and not getattr(self.model, "stochastic", False):
            raise ValueError("sample=True needs a policy with a stochastic head (model.action_head: tanh_gaussian)")
        noise_base = 0 if noise_seed is None else int(noise_seed)
        transform = RewardTransform.of(self.cfg.data)
        ctx = self.cfg.eval.context_length or K  # ODT's eval_context_length: older positions are padding
        uses_rewards = getattr(self.model, "uses_rewards", False)
        if task_index is not None and not uses_rewards:
            raise ValueError("task_index is for a multi-domain DT with a task-id oracle (lamo_ray.mddt)")
        # rolling windows, one row per env slot: position K-1 is the current step
        states = np.zeros((n, K) + tuple(spec.state_shape), dtype=np.uint8 if image else np.float32)
        actions = np.zeros((n, K) if spec.discrete_actions else (n, K, spec.act_dim),
                           dtype=np.int64 if spec.discrete_actions else np.float32)
        rtg = np.zeros((n, K, 1), dtype=np.float32)
        rewards = np.zeros((n, K, 1), dtype=np.float32)   # only read by models with uses_rewards
        timesteps = np.zeros((n, K), dtype=np.int64)
        mask = np.zeros((n, K), dtype=np.float32)
        pending = list(enumerate(episodes))
        results: list[dict[str, Any] | None] = [None] * len(episodes)
        slots: list[dict[str, Any] | None] = [None] * n  # per-slot episode bookkeeping; None when idle

        def state_row(obs) -> np.ndarray:
            s = self._state(obs)
            return s if mean is None else (s - mean) / std

        def start(slot: int) -> None:
            if not pending:
                slots[slot] = None
                return
            idx, (target, seed) = pending.pop(0)
            obs, info = self.envs[slot].reset(seed=int(seed))
            slots[slot] = {"idx": idx, "target": target, "seed": seed, "ret": 0.0, "t": 0,
                           "rng": np.random.default_rng([noise_base, int(seed)]),
                           "reward": transform.stream(),
                           "tasks": info.get("tasks_to_complete"), "success": None,
                           "states": [self._state(obs)] if record else None, "actions": [], "rewards": []}
            for buf in (states, actions, rtg, rewards, timesteps, mask):
                buf[slot] = 0
            states[slot, K - 1] = state_row(obs)
            rtg[slot, K - 1, 0] = target / scale
            mask[slot, K - 1] = 1.0

        for s in range(n):
            start(s)
        while any(slot is not None for slot in slots):
            active = np.array([i for i, slot in enumerate(slots) if slot is not None])
            batch = {k: v[active] for k, v in (("states", states), ("actions", actions), ("returns_to_go", rtg),
                                               ("timesteps", timesteps), ("attention_mask", mask))}
            if uses_rewards:
                batch["rewards"] = rewards[active]
            if ctx < K:  # copies (fancy indexing): the rolling windows keep all K steps
                for v in batch.values():
                    v[:, :K - ctx] = 0
            inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
            if task_index is not None:
                inputs["task"] = torch.full((len(active),), int(task_index), dtype=torch.long, device=self.device)
            with torch.no_grad():
                if sample:  # tanh(loc + std * eps), eps from each episode's generator
                    loc, scale_ = (x.cpu().numpy() for x in self.model.predict_gaussian(**inputs))
                    eps = np.stack([slots[i]["rng"].standard_normal(spec.act_dim) for i in active])
                    pred = torch.from_numpy(np.tanh(loc + scale_ * eps).astype(np.float32))
                else:
                    pred = self.model.predict_action(**inputs).cpu()  # (B, A)
            chosen = pred.argmax(-1).numpy() if spec.discrete_actions else pred.numpy().astype(np.float32)
            going = []
            for row, i in enumerate(active):
                slot = slots[i]
                env = self.envs[i]
                action = chosen[row]
                if action_noise > 0:
                    action = np.clip(action + action_noise * slot["rng"].standard_normal(action.shape),
                                     env.action_space.low, env.action_space.high).astype(np.float32)
                    chosen[row] = action  # the context holds the executed action
                if self.cfg.eval.clip_actions and not spec.discrete_actions:
                    action = np.clip(action, env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, info = env.step(action)
                learned = slot["reward"].step(float(reward), terminated or truncated)  # what RTG and replay see
                if record:
                    slot["actions"].append(np.asarray(action))
                    slot["rewards"].append(learned)
                slot["ret"] += float(reward)  # the score: the env's own reward
                slot["t"] += 1
                if "success" in info:
                    slot["success"] = bool(slot["success"]) or bool(info["success"])
                if terminated or truncated:
                    results[slot["idx"]] = {"target_return": slot["target"], "seed": slot["seed"],
                                            "return": slot["ret"], "length": slot["t"]}
                    if slot["success"] is not None:
                        results[slot["idx"]]["success"] = slot["success"]
                    if record:
                        results[slot["idx"]]["trajectory"] = Trajectory(
                            np.asarray(slot["states"]), np.asarray(slot["actions"]),
                            np.asarray(slot["rewards"], dtype=np.float32), bool(terminated))
                    if slot["tasks"] is not None and "episode_task_completions" in info:
                        done_tasks = set(info["episode_task_completions"])
                        results[slot["idx"]]["tasks_completed"] = {t: t in done_tasks for t in sorted(slot["tasks"])}
                    start(i)
                    continue
                actions[i, K - 1] = chosen[row]  # the model's (unclipped) action in the history, as LaMo
                if record:
                    slot["states"].append(self._state(obs))
                rewards[i, K - 1, 0] = learned / scale   # this step's reward, before the window slides
                going.append((i, state_row(obs), rtg[i, K - 1, 0] - learned / scale, slot["t"]))
            if going:
                rows = np.array([g[0] for g in going])
                for buf in (states, actions, rtg, rewards, timesteps, mask):  # drop the oldest step, open step K-1
                    buf[rows, :-1] = buf[rows, 1:]
                actions[rows, K - 1] = 0
                rewards[rows, K - 1] = 0
                mask[rows, K - 1] = 1.0
                for i, s, r, t in going:
                    states[i, K - 1] = s
                    rtg[i, K - 1, 0] = r
                    timesteps[i, K - 1] = min(t, max_t - 1)
        return results  # type: ignore[return-value]

    def _state(self, obs) -> np.ndarray:
        return flatten_observation(self.env_id, obs)


RolloutActor = ray.remote(Rollout)


class Evaluator:
    """Evaluation's use of a `lamo_ray.rollout_pool.RolloutPool` of `RolloutActor`s kept for a trial's
    lifetime; each call evaluates new weights (a dead actor is replaced and its episodes re-run with the
    same seeds).

    Args:
        spec: policy architecture and normalisation.
        eval_cfg: targets, episodes, actor count, envs per actor.
        env_id: resolved environment id.
        refs: (ref_min_score, ref_max_score) for the normalized score (None if unknown).
        seed: the trial seed; env seeds are ``seed + eval_cfg.seed_offset + episode``.
        env_kwargs: env construction kwargs (`lamo_ray.envs.evaluation_env_kwargs` of the data).
    """

    def __init__(self, spec: PolicySpec, eval_cfg: EvalConfig, env_id: str,
                 refs: tuple[float | None, float | None], seed: int, env_kwargs: dict[str, Any] | None = None):
        self.cfg = eval_cfg
        self.refs = refs
        self.seed = seed
        total = len(eval_cfg.target_returns) * eval_cfg.episodes
        num_actors = actors_for(eval_cfg.num_actors, math.ceil(total / eval_cfg.envs_per_actor))
        threads, device = actor_threads_and_device(eval_cfg.actor_cpus, eval_cfg.gpus_per_actor)
        args = (spec, env_id, eval_cfg.envs_per_actor, threads, eval_cfg.max_episode_steps, None, env_kwargs, device)
        self.pool = RolloutPool(RolloutActor, [(args, {})] * num_actors, eval_cfg.actor_cpus, eval_cfg.gpus_per_actor)

    @property
    def actors(self) -> list[Any]:
        return self.pool.actors

    @property
    def actor_restarts(self) -> int:
        """Actors replaced after dying (`lamo_ray.rollout_pool.RolloutPool`)."""
        return self.pool.restarts

    def episodes(self) -> list[tuple[float, int]]:
        """[(target_return, env_seed)] for every requested episode (same seeds for every target)."""
        base = self.seed + self.cfg.seed_offset
        return [(float(t), base + e) for t in self.cfg.target_returns for e in range(self.cfg.episodes)]

    def __call__(self, policy: torch.nn.Module | dict[str, torch.Tensor]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Evaluate a policy: a `DecisionTransformer` (its `rollout_state_dict` is sent: LoRA merged), or
        such a state dict already made; returns (summary metrics, per-episode records: `Rollout.run`'s
        plus ``normalized_score``).

        The first call also returns ``eval/actor_startup_s``: seconds it waited for the actors to
        come up (created at construction, so this overlaps the training before it).

        Summary keys: as `summarize` (per target: return, normalized score with its 95% CI over
        episodes, length; ``normalized_score`` and its CI of the best target, as LaMo reports).

        Raises:
            RuntimeError: an evaluation returned fewer episodes than requested.
        """
        startup = self.pool.ready()   # the first call waits for the actors (imports, env construction)
        state = policy.rollout_state_dict() if isinstance(policy, torch.nn.Module) else policy
        weights = self.pool.push(state)
        episodes = self.episodes()
        chunks = [episodes[i::len(self.pool)] for i in range(len(self.pool))]
        parts = self.pool.run({i: ((chunk,), {}) for i, chunk in enumerate(chunks) if chunk}, weights)
        records: list[dict[str, Any]] = [r for i in sorted(parts) for r in parts[i]]
        if len(records) != len(episodes) or any(r is None for r in records):
            raise RuntimeError(f"evaluation returned {len(records)} of {len(episodes)} episodes")
        for r in records:
            r[SCORE_METRIC] = float(normalized_score(r["return"], *self.refs))
        summary = summarize(records, self.refs)
        if startup is not None:
            summary["eval/actor_startup_s"] = startup
        return summary, records

    def shutdown(self) -> None:
        self.pool.shutdown()


def summarize(records: list[dict[str, Any]], refs: tuple[float | None, float | None]) -> dict[str, float]:
    """Per-target mean/std return, normalized score with its 95% CI over episodes, and length; the
    best target's score (see Evaluator).

    Keys per target ``T``: ``eval/target_T/return_mean``, ``.../return_std``, ``.../normalized_score``,
    ``.../normalized_score_ci_low`` / ``_ci_high`` (Student-t interval of the mean over the target's
    episodes, `lamo_ray.intervals.mean_ci`; NaN with one episode or unknown references),
    ``.../length_mean``, ``.../episodes``; and ``normalized_score``, ``normalized_score_ci_low`` /
    ``_ci_high`` and ``return_mean`` of the best target (highest mean return: LaMo reports the best
    target). Records with ``tasks_completed`` (kitchen) add ``eval/target_T/success/<subtask>`` (spaces
    as underscores, e.g. ``success/light_switch``): the share of that target's episodes completing it.
    Records with ``success`` (PointMaze) add ``eval/target_T/success_rate``, and ``success_rate`` for
    the best target.
    """
    from lamo_ray.intervals import mean_ci

    out: dict[str, float] = {}
    best_return, best_key = -math.inf, ""
    for target in sorted({r["target_return"] for r in records}):
        rets = np.array([r["return"] for r in records if r["target_return"] == target])
        lens = np.array([r["length"] for r in records if r["target_return"] == target])
        scores = np.asarray(normalized_score(rets, *refs), dtype=float)
        known = not np.isnan(scores).all()
        score, ci = mean_ci(scores) if known else (float("nan"), None)
        key = f"eval/target_{target:g}"
        out[f"{key}/return_mean"] = float(rets.mean())
        out[f"{key}/return_std"] = float(rets.std())
        out[f"{key}/{SCORE_METRIC}"] = score
        out[f"{key}/{SCORE_METRIC}_ci_low"] = ci[0] if ci else float("nan")
        out[f"{key}/{SCORE_METRIC}_ci_high"] = ci[1] if ci else float("nan")
        out[f"{key}/length_mean"] = float(lens.mean())
        out[f"{key}/episodes"] = float(len(rets))
        done = [r["tasks_completed"] for r in records if r["target_return"] == target and "tasks_completed" in r]
        for task in sorted({t for d in done for t in d}):
            out[f"{key}/success/{task.replace(' ', '_')}"] = float(np.mean([bool(d.get(task, False)) for d in done]))
        success = [r["success"] for r in records if r["target_return"] == target and "success" in r]
        if success:
            out[f"{key}/success_rate"] = float(np.mean(success))
        if float(rets.mean()) > best_return:
            best_return, best_key = float(rets.mean()), key
    out["return_mean"] = best_return
    for suffix in (SCORE_METRIC, f"{SCORE_METRIC}_ci_low", f"{SCORE_METRIC}_ci_high"):
        out[suffix] = out[f"{best_key}/{suffix}"]
    if f"{best_key}/success_rate" in out:
        out["success_rate"] = out[f"{best_key}/success_rate"]
    return out


def check_policy_env(spec: PolicySpec, env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
    """The env can be made and its flattened observation / action sizes are the policy's (before any actor).

    Raises:
        ValueError: the env cannot be made or its sizes differ; the message names env and sizes.
    """
    try:
        env = make_env(env_id, **(env_kwargs or {}))
        obs, _ = env.reset(seed=0)
        obs_shape = tuple(flatten_observation(env_id, obs).shape)
        act = env.action_space
        act_dim = int(act.n) if hasattr(act, "n") else int(np.prod(act.shape))
        env.close()
    except Exception as err:  # noqa: BLE001 - unknown id, missing package, bad kwargs
        raise ValueError(f"env_id {env_id!r} cannot be made: {err}") from None
    if obs_shape != tuple(spec.state_shape) or act_dim != spec.act_dim:
        raise ValueError(f"env_id {env_id!r} has observation {obs_shape} / action {act_dim} but the policy was "
                         f"trained on {tuple(spec.state_shape)} / {spec.act_dim}")


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lamo_ray.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory, or runs:/<run_id>/checkpoint")
    p.add_argument("--episodes", type=int, help="episodes per target (default: the trial's eval.episodes)")
    p.add_argument("--targets", type=float, nargs="+", help="target returns (default: the trial's)")
    p.add_argument("--num-actors", type=int)
    p.add_argument("--envs-per-actor", type=int)
    p.add_argument("--seed", type=int, help="env seed base (default: the trial's seed)")
    p.add_argument("--out", help="write per-episode results here (.parquet or .csv)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from lamo_ray.checkpoint import CheckpointError, load_checkpoint, load_weights_into, resolve_checkpoint

    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = resolve_checkpoint(args.checkpoint)
        ckpt = load_checkpoint(path)
        model = build_policy(ckpt.spec, load_weights=False)
        load_weights_into(model, path)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = ckpt.config
    flags = {"episodes": "--episodes", "target_returns": "--targets", "num_actors": "--num-actors",
             "envs_per_actor": "--envs-per-actor"}
    updates: dict[str, Any] = {key: getattr(args, "targets" if key == "target_returns" else key)
                               for key in flags}
    updates = {k: v for k, v in updates.items() if v is not None}
    try:
        eval_cfg = EvalConfig.model_validate({**cfg.eval.model_dump(), **updates})
    except ValidationError as err:
        e = err.errors()[0]
        key = str(e["loc"][0]) if e["loc"] else ""
        print(f"error: {flags.get(key, key)}: {e['msg']} (got {e.get('input')!r})", file=sys.stderr)
        return 2
    try:
        check_policy_env(ckpt.spec, ckpt.env_id, ckpt.env_kwargs)
    except ValueError as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return 2
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    evaluator = Evaluator(ckpt.spec, eval_cfg, ckpt.env_id, ckpt.refs,
                          cfg.seed if args.seed is None else args.seed, env_kwargs=ckpt.env_kwargs)
    summary, records = evaluator(model)
    evaluator.shutdown()
    if args.out:
        import pandas as pd

        df = pd.DataFrame(records)
        df.to_parquet(args.out) if args.out.endswith(".parquet") else df.to_csv(args.out, index=False)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
