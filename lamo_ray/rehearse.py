"""Rehearse a sweep before paying for it (issue 32): ``python -m lamo_ray.sweep SWEEP.yaml --rehearse``.

Every distinct trial *shape* of the sweep runs through the real trial entry point (`lamo_ray.tune_runtime.run_trial`,
in Tune trial processes on the hardware the sweep asks for) for a few steps of every stage it has, and
the measured step times project what the whole sweep costs.

- **Shapes** (`trial_shapes`): the sweep's trials grouped by variant and by every swept grid value except
  ``data.sample_ratio`` (it changes how much data, not the model, the data's shapes or the stages);
  seeds and random search points collapse onto the shape's first trial.
- **What a shape runs** (`rehearsal_config`: the shape's own config with fewer steps, nothing else
  changed): ``3 x (WARMUP_STEPS + TIMED_STEPS)`` offline steps, logged every step, evaluated (at the
  first target return only, with the real episodes, actors and envs) and checkpointed every
  ``WARMUP_STEPS + TIMED_STEPS``; the trial is stopped once after its first
  checkpoint and restarted by Tune (or Ray Train) from it (`lamo_ray.sessions.InterruptAfterFirstCheckpoint`),
  the resume path of a real run, so the restarted process evaluates twice (the second with its rollout
  actors already up, as most evaluations of a real trial). An online phase:
  one iteration of ``min(updates_per_iteration, WARMUP_STEPS + TIMED_STEPS)`` updates (the critic's
  with them) on one wave of collected episodes. A continual sequence: every stage's start (pool attach,
  penalty anchor) and ``WARMUP_STEPS + TIMED_STEPS`` of its steps, one evaluation per stage (the real one).
- **Measured** (`measure`, from the shape's MLflow run): the median wall time of a training step after
  the first `WARMUP_STEPS` of each process and not right after an evaluation (whose time the step's
  logged window holds), per kind (offline, pre-training, continual stage); of an online update and of a
  collected transition; of an evaluation that is not its process's first (the first starts the rollout
  actors; all of them when none is warm); the process's setup; peak host RSS of the trial process (its
  rollout actors are other processes) and, on a GPU, the peak CUDA memory torch allocated.
- **Projected** (`project`): each real trial's seconds = planned steps x step time + evaluations x
  evaluation time + setup (`trial_seconds`; an evaluation of T target returns counts T of the measured
  one-target evaluation scaled to episodes as long as their cap (the rehearsal's barely trained policy
  may fall early, a trained one need not), plus once the rollout actors' start); step times are measured with one trial
  at a time, so trials that share a machine's cores (CPU trials) run slower than projected. The sweep's
  wall time runs the trials in table order, each on the first of the slots to come free (`pack`), as
  many slots as trials the cluster runs at once (`lamo_ray.preflight.concurrent_trials`, what
  ``--dry-run``'s resource plan says); CPU- and GPU-hours are each trial's seconds x the CPUs / GPUs it
  holds. A confirmation stage adds ``top_k x confirm.seeds`` trials per variant at its longest shape's
  time. ASHA stops some trials early: the projection counts every trial to its end, an upper bound for
  an ASHA search.
- **Inputs**: the real datasets and backbones (fetched or generated as a run would). With
  ``--rehearse-standin``, a missing one is replaced, loudly and for the rehearsal only: a dataset by
  random trajectories with the evaluation env's observation and action shapes and dtypes and
  ``data.max_ep_len`` steps (`lamo_ray.rehearsal_run.standin_dataset`, held in Ray's object store, never
  written where a run would read it); a pre-trained backbone by the same architecture randomly
  initialised; WikiText by a text file of random words beside the rehearsal's results (the backbone's
  tokenizer is still needed).
- **Output**: per shape pass / fail (with the stage it failed in, `lamo_ray.tracking.PHASE_TAG`, and the
  error), the step times and peak memory, then the projection; a ``rehearsal`` run in the sweep's MLflow
  experiment holds them (``rehearsal.json``), with one child run per shape. Exit 0 only if every shape
  passed.
"""

from __future__ import annotations

import heapq
import json
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lamo_ray.config import SweepConfig, TrialConfig, find_domains, validate_trial
from lamo_ray.preflight import trial_cpus, trial_gpus

log = logging.getLogger(__name__)

WARMUP_STEPS = 2      # steps of each process not timed (first batches, lazy inits, allocator warm-up)
TIMED_STEPS = 5       # timed steps of each process (so 2 x 5 per offline phase: before and after the resume)
STAGE = "rehearsal"   # the Tune ``stage`` of a rehearsal trial (its MLflow run name ends with it)


# --------------------------------------------------------------------------- shapes


@dataclass
class Shape:
    """One distinct trial shape: ``name`` (variant and the swept values that make it), the Tune point
    that runs it (``variant``, ``params``), the sweep ``rows`` it stands for (every seed, sample ratio
    and search point) and the ``config`` of its first row (the real one; `rehearsal_config` shrinks it)."""

    name: str
    variant: str
    params: dict[str, Any]
    rows: list[dict[str, Any]]
    config: TrialConfig


def _concrete(row: dict[str, Any]) -> dict[str, Any]:
    """A row's swept values with each random search domain at the value its config was validated with."""
    dumped = row["config"].model_dump()
    out = {}
    for path, value in row["params"].items():
        if isinstance(value, dict):   # a random domain: the config holds one of its bounds
            node: Any = dumped
            for part in path.split("."):
                node = node[part]
            value = node
        out[path] = value
    return out


def _without_ratio(path: str, value: Any) -> Any:
    """A swept value as far as the trial's shape goes: a whole ``data`` section swept (kitchen.yaml's
    source-and-ratio pairs) without its ``sample_ratio``."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not (k == "sample_ratio" and path == "data")}
    return value


def _shown(path: str, value: Any) -> str:
    """A shape's swept value in its name: a task by name, a swept data section by its source."""
    if path == "task":
        return str(value)
    if isinstance(value, dict) and "source" in value:
        return str(value["source"])
    return f"{path.rsplit('.', 1)[-1]}={value}"


def trial_shapes(sweep: SweepConfig, rows: list[dict[str, Any]]) -> list[Shape]:
    """The sweep's distinct trial shapes, in trial-table order (module docstring)."""
    grid = [p for p, d in find_domains(sweep.base).items() if next(iter(d)) == "grid" and p != "data.sample_ratio"]
    shapes: dict[tuple, Shape] = {}
    for row in rows:
        key = (row["variant"], *((p, repr(_without_ratio(p, row["params"].get(p)))) for p in grid))
        if key not in shapes:
            name = " · ".join([row["variant"], *(_shown(p, row["params"][p]) for p in grid if p in row["params"])])
            shapes[key] = Shape(name, row["variant"], _concrete(row), [], row["config"])
        shapes[key].rows.append(row)
    return list(shapes.values())


def rehearsal_config(cfg: TrialConfig, standin_backbones: Sequence[str] = (),
                     standin_corpora: Mapping[str, str] | None = None) -> TrialConfig:
    """``cfg`` with the rehearsal's step counts (module docstring) and nothing else changed, but for the
    stand-ins (``--rehearse-standin``): a backbone in ``standin_backbones`` randomly initialised
    (``model.pretrained`` false: the same architecture), a corpus in ``standin_corpora`` ({name: text
    file}) replaced by that file.

    Raises:
        lamo_ray.config.ConfigError: the shrunk config does not validate (names the key).
    """
    raw = cfg.model_dump(exclude_unset=True)   # what the sweep set: defaults derived from it stay derived
    n = WARMUP_STEPS + TIMED_STEPS
    train, ev = raw.setdefault("train", {}), raw.setdefault("eval", {})
    train.update(steps=3 * n, eval_every=n, log_every=1, max_failures=max(1, cfg.train.max_failures),
                 warmup_steps=min(cfg.train.warmup_steps, n))
    if cfg.eval.target_returns:   # one target's evaluation as the real one: its episodes over its actors and envs
        ev["target_returns"] = list(cfg.eval.target_returns[:1])
    if cfg.online is not None:
        raw.setdefault("online", {}).update(iterations=1, transitions_per_iteration=1, eval_every=1,
                                            updates_per_iteration=min(cfg.online.updates_per_iteration, n))
    if cfg.continual is not None:
        train["steps"] = n   # pre-training; the interrupt comes after its evaluation, the stages run resumed
        raw.setdefault("continual", {}).update(steps_per_task=n, eval_every=n)
    if cfg.model.backbone in standin_backbones:
        raw.setdefault("model", {})["pretrained"] = False
    if cfg.language.corpus in (standin_corpora or {}):
        raw.setdefault("language", {})["corpus"] = standin_corpora[cfg.language.corpus]
    return validate_trial(raw, origin="rehearsal")


# --------------------------------------------------------------------------- measurements


@dataclass
class Measured:
    """What one shape's rehearsal measured (seconds, MiB); None where the shape has no such stage or the
    trial failed before it."""

    step_s: float | None = None              # an offline step (or a pre-training step of a continual trial)
    stage_step_s: float | None = None        # a continual stage's step
    eval_s: float | None = None              # one evaluation as rehearsed (its first target; a continual one whole)
    first_eval_s: float | None = None        # a process's first evaluation (it starts the rollout actors)
    eval_length: float | None = None         # mean episode length of those evaluations (offline / online)
    episode_limit: int | None = None         # the evaluation's episode cap (eval.max_episode_steps or the env's)
    update_s: float | None = None            # one online actor update (its critic updates with it)
    transition_s: float | None = None        # one collected online transition (wall, all collecting actors)
    setup_s: float | None = None             # the trial process's setup before its first step
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    timed_steps: int = 0                     # steps the medians are over
    resumed_from_step: int | None = None     # where the restarted offline trial resumed (its checkpoint's step)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def timed_steps(step_s: dict[int, float], restarts: list[int], evaluated: list[int] = (),
                warmup: int = WARMUP_STEPS) -> list[float]:
    """The per-step seconds of ``step_s`` ({step: seconds}) without the first ``warmup`` steps of each
    process (the trial's first process starts at step 0, each restart at a step of ``restarts``) and
    without the step after each step of ``evaluated`` (its window holds the evaluation)."""
    starts = sorted({0, *restarts})
    after_eval = {s + 1 for s in evaluated}
    out = []
    for step, seconds in sorted(step_s.items()):
        start = max(s for s in starts if s < step)
        if step - start > warmup and step not in after_eval:
            out.append(seconds)
    return out


def first_evaluations(eval_s: dict[int, float], restarts: list[int]) -> list[float]:
    """The evaluation times of ``eval_s`` ({step: seconds}) that are the first of their process."""
    starts = sorted({0, *restarts})
    firsts = {min((s for s in eval_s if s > start), default=None) for start in starts}
    return [v for s, v in eval_s.items() if s in firsts]


def warm_evaluations(eval_s: dict[int, float], restarts: list[int]) -> list[float]:
    """The evaluation times of ``eval_s`` ({step: seconds}) that are not the first of their process (the
    first starts the rollout actors); all of them when every one is a first."""
    starts = sorted({0, *restarts})
    firsts = {min((s for s in eval_s if s > start), default=None) for start in starts}
    warm = [v for s, v in eval_s.items() if s not in firsts]
    return warm or list(eval_s.values())


def measure(client, run_id: str, cfg: TrialConfig) -> Measured:
    """The rehearsal's measurements from the shape's MLflow run (``cfg``: its rehearsal config)."""
    from lamo_ray.report.load import metric_by_step
    from lamo_ray.tracking import PEAK_GPU_METRIC, PEAK_RSS_METRIC

    def history(key: str) -> dict[int, float]:
        return metric_by_step(client, run_id, key)

    m = Measured()
    steps = history("train/step_s")
    restarts = [int(s) for s in history("train/restored_from_step").values()]
    m.resumed_from_step = restarts[-1] if restarts else None
    eval_s = history("eval/time_s")
    if cfg.continual is not None:
        first_stage = cfg.train.steps
        restarts = restarts or [first_stage]   # a continual trial resumes at its first stage after the interrupt
        pre = {s: v for s, v in steps.items() if s <= first_stage}
        stage = {s: v for s, v in steps.items() if s > first_stage}
        m.step_s = _median(timed_steps(pre, []))
        stage_starts = [first_stage + i * cfg.continual.steps_per_task for i in range(len(cfg.continual.tasks))]
        timed = timed_steps(stage, stage_starts, list(eval_s))
        m.stage_step_s, m.timed_steps = _median(timed), len(timed)
    else:
        offline = {s: v for s, v in steps.items() if s <= cfg.train.steps}
        timed = timed_steps(offline, restarts, list(eval_s))
        m.step_s, m.timed_steps = _median(timed), len(timed)
    m.eval_s = _median(warm_evaluations(eval_s, restarts))
    m.first_eval_s = _median(first_evaluations(eval_s, restarts))
    if cfg.continual is None and cfg.eval.target_returns:
        lengths = history(f"eval/target_{cfg.eval.target_returns[0]:g}/length_mean")
        m.eval_length = _median(warm_evaluations(lengths, restarts)) if lengths else None
    if cfg.online is not None:
        updates = history("online/update_s")
        collected = history("online/collect_wait_s")
        transitions = history("online/transitions")
        m.update_s = _median([v / cfg.online.updates_per_iteration for v in updates.values()])
        m.transition_s = _median([collected[s] / transitions[s] for s in collected if transitions.get(s)])
    metrics = client.get_run(run_id).data.metrics
    # the trial's own start (its MLflow run, config) and its training process's (data, model, actors' specs);
    # not the process start itself, which a sweep pays once per reused trial actor
    setup = [v for k, v in metrics.items() if k.startswith("time/setup/") or k == "time/trial_driver_setup_s"]
    m.setup_s = sum(setup) if setup else None
    m.peak_rss_mb, m.peak_gpu_mb = metrics.get(PEAK_RSS_METRIC), metrics.get(PEAK_GPU_METRIC)
    return m


# --------------------------------------------------------------------------- projection


def evaluations(steps: int, every: int) -> int:
    """Evaluations of a phase of ``steps`` evaluated every ``every`` steps and at its end (`lamo_ray.train`)."""
    return steps // every + (1 if steps % every else 0)


def trial_seconds(cfg: TrialConfig, m: Measured) -> dict[str, float]:
    """A real trial's projected seconds per stage from its shape's measurements (module docstring).

    Raises:
        ValueError: a stage the trial has was not measured (its rehearsal failed before it).
    """
    def need(value: float | None, what: str) -> float:
        if value is None:
            raise ValueError(f"no measured {what}")
        return value

    out = {"setup": m.setup_s or 0.0}
    if cfg.continual is not None:
        c = cfg.continual
        out["pre-training steps"] = cfg.train.steps * need(m.step_s, "pre-training step")
        out["continual stage steps"] = len(c.tasks) * c.steps_per_task * need(m.stage_step_s, "continual stage step")
        n_evals = 1 + len(c.tasks) * evaluations(c.steps_per_task, c.eval_every)
        out["evaluations"] = _evaluations_s(n_evals, m, 1)
        return out
    out["offline steps"] = cfg.train.steps * need(m.step_s, "offline step")
    n_evals = evaluations(cfg.train.steps, cfg.train.eval_every)
    if cfg.online is not None:
        o = cfg.online
        out["online updates"] = o.iterations * o.updates_per_iteration * need(m.update_s, "online update")
        out["online collection"] = o.iterations * o.transitions_per_iteration * need(m.transition_s,
                                                                                      "collected transition")
        n_evals += evaluations(o.iterations, o.eval_every)
    # episodes as long as the cap: the rehearsal's barely trained policy may fall early (Hopper, Walker2d), a
    # trained one runs to the cap, so its measured evaluation is scaled up to full-length episodes
    full = (m.episode_limit / m.eval_length) if m.episode_limit and m.eval_length else 1.0
    out["evaluations"] = _evaluations_s(n_evals, m, max(len(cfg.eval.target_returns), 1) * max(full, 1.0))
    return out


def _evaluations_s(n: int, m: Measured, scale: float) -> float:
    """``n`` evaluations of a trial, each ``scale`` times the rehearsed warm one, plus once the rollout actors'
    start (the first evaluation's extra time over a warm one)."""
    if m.eval_s is None:
        raise ValueError("no measured evaluation")
    startup = max((m.first_eval_s if m.first_eval_s is not None else m.eval_s) - m.eval_s, 0.0)
    return n * m.eval_s * scale + startup if n else 0.0


@dataclass
class Projection:
    """The sweep's projected cost: ``wall_s`` (the trials in table order on ``concurrency`` slots, `pack`),
    ``cpu_hours``, ``gpu_hours``, ``trials`` counted and ``per_shape`` {shape name: seconds of one trial}."""

    wall_s: float
    cpu_hours: float
    gpu_hours: float
    trials: int
    concurrency: int
    per_shape: dict[str, float] = field(default_factory=dict)


def pack(durations: list[float], slots: int) -> float:
    """The makespan of ``durations`` run ``slots`` at a time in the given order, each on the first slot
    to come free (Tune's queue of trials, in the trial table's order)."""
    loads = [0.0] * max(slots, 1)
    for d in durations:
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


def project(sweep: SweepConfig, shapes: list[Shape], measured: dict[str, Measured], concurrency: int) -> Projection:
    """The sweep's projected cost from each shape's measurements (module docstring).

    Raises:
        ValueError: a shape without the measurements its trials need (its rehearsal failed).
    """
    durations, cpu_s, gpu_s, per_shape = [], 0.0, 0.0, {}
    for shape in shapes:
        m = measured[shape.name]
        for row in shape.rows:
            seconds = sum(trial_seconds(row["config"], m).values())
            per_shape.setdefault(shape.name, seconds)
            copies = sweep.num_samples
            durations += [seconds] * copies
            cpu_s += copies * seconds * trial_cpus(sweep, row["config"])
            gpu_s += copies * seconds * trial_gpus(row["config"])
    if sweep.confirm:   # the confirmation: top_k configurations per variant, each at its variant's longest trial
        for variant in sweep.variants:
            longest = max(((per_shape[s.name], s) for s in shapes if s.variant == variant), key=lambda x: x[0])
            n = sweep.confirm.top_k * len(sweep.confirm.seeds)
            durations += [longest[0]] * n
            cpu_s += n * longest[0] * trial_cpus(sweep, longest[1].config)
            gpu_s += n * longest[0] * trial_gpus(longest[1].config)
    return Projection(pack(durations, concurrency), cpu_s / 3600, gpu_s / 3600, len(durations), concurrency,
                      per_shape)


def format_duration(seconds: float) -> str:
    """``3 d 4.2 h``, ``5.1 h``, ``12 min``, ``40 s``."""
    if seconds >= 86400:
        return f"{int(seconds // 86400)} d {seconds % 86400 / 3600:.1f} h"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def as_json(shapes: list[Shape], results: dict[str, dict[str, Any]], projection: Projection | None) -> str:
    """The rehearsal as ``rehearsal.json``: per shape its outcome and measurements, and the projection."""
    def plain(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "measured": asdict(r["measured"]) if r.get("measured") is not None else None}

    return json.dumps({"shapes": {s.name: plain(results.get(s.name, {})) for s in shapes},
                       "projection": None if projection is None else asdict(projection)}, indent=1, default=str)


__all__ = ["Measured", "Projection", "Shape", "STAGE", "TIMED_STEPS", "WARMUP_STEPS", "as_json",
           "evaluations", "format_duration", "measure", "pack", "project",
           "first_evaluations", "rehearsal_config", "timed_steps", "trial_seconds", "trial_shapes", "warm_evaluations"]
