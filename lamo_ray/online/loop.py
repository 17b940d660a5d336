"""The online phase of a trial (docs/references/odt_td3.md "Online loop"): after the offline steps, each
iteration collects whole episodes with rollout actors and the current weights, adds them to the
trajectory replay (`lamo_ray.online.replay`), then runs the learner's updates on segments of the
replay (hindsight return-to-go: computed from the rewards collected).

- `Collector`: online collection's use of the trial's rollout pool (`lamo_ray.rollout_pool.RolloutPool`: a
  dead actor is replaced and its episodes re-run with the same seeds and noise streams):
  ``online.num_actors`` Ray rollout actors (`lamo_ray.evaluate.RolloutActor`) with
  ``online.envs_per_actor`` envs each. An iteration runs waves of one episode per env slot and keeps,
  in episode order, the shortest prefix of episodes reaching ``online.transitions_per_iteration``
  transitions: the episodes the paper's single-env loop (one episode after another until the
  budget is reached) would have kept; the rest of the last wave is dropped (counted in
  ``online/collect/episodes_dropped``). Episode ``j`` of iteration ``i`` uses an env seed and a noise
  stream that depend only on (trial seed, i, j), so the data do not depend on how many actors ran.
- `OnlinePhase`: the learner side: ODT (supervised NLL - T x entropy on replay batches), or TD3+ODT /
  TD3 (`lamo_ray.online.learner.TD3Learner`: critic every batch, delayed actor with the RL term).
  With ``online.overlap`` the actors collect iteration i+1 with the weights of iteration i while the
  learner updates (ours); by default they collect, then the learner updates (the paper's schedule). A
  checkpoint waits for that collection and saves it, so a resumed overlapped run repeats the
  uninterrupted one.

Steps: the offline phase reports steps 1..``train.steps``; online iteration ``i`` (0-based) ends at
step ``train.steps + (i + 1) x updates_per_iteration`` (one step per actor update), where the metrics
are logged, with ``online/transitions`` (collected so far) as the x axis of the online curves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import OnlineConfig, TrialConfig
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset
from lamo_ray.online.replay import TrajectoryReplay

log = logging.getLogger(__name__)

ONLINE_FILE = "online.pt"


def episode_seed(seed: int, iteration: int, episode: int) -> int:
    """Env seed of collection episode ``episode`` of online iteration ``iteration`` (disjoint in practice
    from the evaluation seeds ``seed + eval.seed_offset + e``: drawn from a 31-bit hash)."""
    return int(np.random.SeedSequence([seed, iteration, episode, 0x0D7]).generate_state(1)[0] % (2**31 - 1))


@dataclass
class Collected:
    """One iteration's collection: the kept trajectories and what it cost.

    Attributes:
        trajectories: kept episodes, in episode order.
        returns, lengths: of the kept episodes.
        successes: ``info["success"]`` at any step, per kept episode (envs that report it), else empty.
        dropped: episodes collected but not kept (beyond the budget, last wave).
        env_steps: env steps taken, dropped episodes included.
        seconds: wall time from submission to the last wave's results.
    """

    trajectories: list[Trajectory]
    returns: list[float]
    lengths: list[int]
    successes: list[bool]
    dropped: int
    env_steps: int
    seconds: float

    def metrics(self) -> dict[str, float]:
        out = {"online/collect/return_mean": float(np.mean(self.returns)),
               "online/collect/length_mean": float(np.mean(self.lengths)),
               "online/collect/episodes": float(len(self.trajectories)),
               "online/collect/episodes_dropped": float(self.dropped),
               "online/collect/env_steps_per_s": self.env_steps / max(self.seconds, 1e-9)}
        if self.successes:
            out["online/collect/success_rate"] = float(np.mean(self.successes))
        return out


@dataclass
class _Pending:
    iteration: int
    weights: Any
    refs: Any  # the wave in flight: a `lamo_ray.rollout_pool.Submitted`
    started: float
    episode: int = 0  # first episode index of the submitted wave
    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    env_steps: int = 0


class Collector:
    """Rollout actors collecting whole episodes for the online phase (module docstring).

    Args:
        spec: the policy (architecture, normalisation); weights come with each `submit`.
        env_id, env_kwargs, max_episode_steps: the env to collect in (as evaluation's).
        online: the trial's ``online`` section (actors, envs per actor, budget, target return, noise).
        seed: the trial seed.
        stochastic: the policy has ODT's tanh-Gaussian head: sample actions instead of adding noise.
        actor_cpus: Ray CPUs reserved per actor (0: they borrow the trial's, as evaluation's); the actor's
            torch threads follow them (`lamo_ray.rollout_pool.actor_threads_and_device`), as evaluation's.
        gpus_per_actor: GPU share per actor (``eval.gpus_per_actor``): > 0 runs the policy's forward on CUDA,
            as evaluation's actors; the envs step on the CPU either way.
    """

    def __init__(self, spec: PolicySpec, env_id: str, online: OnlineConfig, seed: int, stochastic: bool,
                 env_kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None,
                 actor_cpus: float = 0.0, gpus_per_actor: float = 0.0):
        from lamo_ray.evaluate import RolloutActor
        from lamo_ray.rollout_pool import RolloutPool, actor_threads_and_device

        self.online, self.seed, self.stochastic = online, seed, stochastic
        threads, device = actor_threads_and_device(actor_cpus, gpus_per_actor)
        args = (spec, env_id, online.envs_per_actor, threads, max_episode_steps, None, env_kwargs, device)
        self.pool = RolloutPool(RolloutActor, [(args, {})] * online.num_actors, actor_cpus, gpus_per_actor)

    @property
    def actors(self) -> list[Any]:
        return self.pool.actors

    @property
    def slots(self) -> int:
        """Episodes per wave: actors x envs per actor."""
        return len(self.pool) * self.online.envs_per_actor

    def _wave(self, weights: Any, iteration: int, first: int, load: bool):
        episodes = [(self.online.target_return, episode_seed(self.seed, iteration, first + j))
                    for j in range(self.slots)]
        noise = 0.0 if self.stochastic else self.online.exploration_noise
        n = len(self.pool)
        jobs = {a: ((episodes[a::n],), {"record": True, "action_noise": noise,
                                        "noise_seed": self.seed * 1_000_003 + iteration, "sample": self.stochastic})
                for a in range(n)}
        # load: an actor runs its calls in order, so run() sees these weights; a replaced actor loads them anyway
        return self.pool.submit(jobs, weights, load=load)

    def submit(self, state_dict: dict[str, torch.Tensor], iteration: int) -> _Pending:
        """Push ``state_dict`` (`DecisionTransformer.rollout_state_dict`) to every actor and start the
        first wave of ``iteration``; returns at once (`gather` waits)."""
        weights = self.pool.push(state_dict)
        return _Pending(iteration, weights, self._wave(weights, iteration, 0, load=True), time.perf_counter())

    def gather(self, pending: _Pending) -> Collected:
        """Wait for ``pending``'s waves (running more until the budget is reached) and keep the
        episodes the sequential loop would have kept."""
        budget = self.online.transitions_per_iteration
        while True:
            parts = self.pool.gather(pending.refs)   # a dead actor's episodes re-run with the same seeds
            wave: list[dict[str, Any] | None] = [None] * self.slots
            for a, part in parts.items():  # actor a ran episodes a, a + A, a + 2A, ... of the wave
                for m, record in enumerate(part):
                    wave[a + m * len(self.pool)] = record
            collected = sum(r["length"] for r in pending.kept)
            for record in wave:
                pending.env_steps += record["length"]
                if collected >= budget:
                    pending.dropped += 1
                    continue
                pending.kept.append(record)
                collected += record["length"]
            if collected >= budget:
                break
            pending.episode += self.slots
            pending.refs = self._wave(pending.weights, pending.iteration, pending.episode, load=False)
        kept = pending.kept
        return Collected(trajectories=[r["trajectory"] for r in kept], returns=[r["return"] for r in kept],
                         lengths=[r["length"] for r in kept],
                         successes=[bool(r["success"]) for r in kept if "success" in r],
                         dropped=pending.dropped, env_steps=pending.env_steps,
                         seconds=time.perf_counter() - pending.started)

    def shutdown(self) -> None:
        self.pool.shutdown()


def temperature_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """ODT's learned log-temperature (`lamo_ray.online.stochastic.TanhGaussianHead`), if the model has one:
    it gets its own optimiser group (Online DT: Adam, lr 1e-4, no warm-up, no clipping)."""
    return [p for n, p in model.named_parameters() if n.endswith("log_temperature") and p.requires_grad]


def stochastic_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     dict[str, float]]:
    """Online DT's loss for the tanh-Gaussian head on a batch of segments: ``(policy loss, temperature
    loss, {"nll", "entropy", "temperature"})`` (`TanhGaussianHead.losses`). ``model`` may be DDP-wrapped."""
    module = model.module if hasattr(model, "module") else model
    dist = model(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"],
                 batch["attention_mask"], distribution=True)
    return module.action_head.losses(dist, batch["actions"], batch["attention_mask"])


def make_learner(cfg: TrialConfig, model: torch.nn.Module, actor, state_dim: int, act_dim: int,
                 device: str | torch.device = "cpu"):
    """The TD3 learner of a 'td3_odt' / 'td3' trial (None for 'odt': no critic), built before the
    offline steps so that its critic trains alongside them, as the authors' pretraining does. ``actor``:
    the trial's `lamo_ray.learner.Learner` of the DT (its optimiser, schedule, clip and precision)."""
    online = cfg.online
    if online is None or online.method == "odt":
        return None
    from lamo_ray.online.learner import TD3Learner

    return TD3Learner(model, actor, state_dim, act_dim, online, device=device)


def trajectories_state(trajectories: list[Trajectory]) -> list[dict[str, torch.Tensor]]:
    """Trajectories as tensors (checkpoints load with ``torch.load(weights_only=True)``)."""
    return [{"observations": torch.tensor(t.observations), "actions": torch.tensor(t.actions),
             "rewards": torch.tensor(t.rewards),
             "terminated": torch.tensor(bool(t.terminated))} for t in trajectories]


def replay_state(replay: TrajectoryReplay) -> dict[str, Any]:
    """`TrajectoryReplay.state_dict` with tensors instead of arrays."""
    state = replay.state_dict()
    state["trajectories"] = trajectories_state(replay.trajectories)
    return state


def load_replay_state(replay: TrajectoryReplay, state: dict[str, Any]) -> None:
    state = dict(state)
    state["trajectories"] = [{k: (v.numpy() if k != "terminated" else bool(v)) for k, v in t.items()}
                             for t in state["trajectories"]]
    replay.load_state_dict(state)


class OnlinePhase:
    """The online iterations of one trial (module docstring), in the trial's training process.

    Args:
        cfg: the trial (``cfg.online`` set).
        model: the policy (trains in place); learner: `make_learner`'s (None for 'odt').
        dataset: the offline training data (seeds the replay; its metadata describes the replay).
        state_mean, state_std: the offline data's normalisation (kept fixed, as Online DT).
        collector: the rollout actors.
        supervised_step: ``(batch of tensors) -> {name: value}``: one supervised optimiser step of
            the trial (ODT's online update).
        device: where the model is (batches are moved there).

    Attributes:
        iteration: online iterations completed.
        replay: the trajectory replay buffer.
    """

    def __init__(self, cfg: TrialConfig, model: torch.nn.Module, learner, dataset: TrajectoryDataset,
                 state_mean: np.ndarray, state_std: np.ndarray, collector: Collector | None, supervised_step,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.cfg, self.online = cfg, cfg.online
        self.model, self.learner, self.dataset = model, learner, dataset
        self.mean, self.std = state_mean, state_std
        self.collector, self.supervised_step = collector, supervised_step
        self.replay = TrajectoryReplay(self.online.replay_size, dataset.trajectories)
        self.iteration = 0
        self._pending = None
        self._ahead: tuple[int, Collected] | None = None   # an overlapped collection drained by a checkpoint

    def step_after(self, iteration: int) -> int:
        """The trial step at which online iteration ``iteration`` (0-based) ends."""
        return self.cfg.train.steps + (iteration + 1) * self.online.updates_per_iteration

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        """Replay, learner (critic, targets, optimisers), the iteration count, and with ``online.overlap`` the
        collection of the next iteration (made with the previous weights while the learner updated): it is
        waited for and saved, so a resumed run adds the same episodes as the uninterrupted one."""
        if self._pending is not None:   # drain the overlapped collection into the checkpoint
            self._ahead = (self._pending.iteration, self.collector.gather(self._pending))
            self._pending = None
        ahead = None
        if self._ahead is not None:
            i, c = self._ahead
            ahead = {"iteration": i, "trajectories": trajectories_state(c.trajectories), "returns": list(c.returns),
                     "lengths": list(c.lengths), "successes": list(c.successes), "dropped": c.dropped,
                     "env_steps": c.env_steps, "seconds": c.seconds}
        return {"iteration": self.iteration, "replay": replay_state(self.replay),
                "learner": None if self.learner is None else self.learner.state_dict(), "collected_ahead": ahead}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        load_replay_state(self.replay, state["replay"])
        if self.learner is not None and state.get("learner") is not None:
            self.learner.load_state_dict(state["learner"])
        ahead = state.get("collected_ahead")
        self._ahead = None
        if ahead is not None:
            trajectories = [Trajectory(t["observations"].numpy(), t["actions"].numpy(), t["rewards"].numpy(),
                                       bool(t["terminated"])) for t in ahead["trajectories"]]
            self._ahead = (int(ahead["iteration"]), Collected(
                trajectories, [float(x) for x in ahead["returns"]], [int(x) for x in ahead["lengths"]],
                [bool(x) for x in ahead["successes"]], int(ahead["dropped"]), int(ahead["env_steps"]),
                float(ahead["seconds"])))

    # ------------------------------------------------------------------ the loop

    def _weights(self) -> dict[str, torch.Tensor]:
        module = self.model.module if hasattr(self.model, "module") else self.model
        return module.rollout_state_dict()

    def run_iteration(self) -> dict[str, float]:
        """Collect (or take the overlapped collection), add to the replay, update; returns the
        iteration's metrics (``online/...``), with ``online/transitions`` collected so far."""
        i = self.iteration
        if i == 0 and self.learner is not None:  # the online phase starts from hard copies (the authors')
            self.learner.hard_update_targets()
        t0 = time.perf_counter()
        if self._ahead is not None and self._ahead[0] == i:   # drained by the last checkpoint
            collected, self._ahead = self._ahead[1], None
        else:
            pending = self._pending if self._pending is not None and self._pending.iteration == i else \
                self.collector.submit(self._weights(), i)
            collected = self.collector.gather(pending)
        self._pending = None
        waited = time.perf_counter() - t0
        self.replay.add(collected.trajectories)
        if self.online.overlap and i + 1 < self.online.iterations:  # collect i+1 with these weights
            self._pending = self.collector.submit(self._weights(), i + 1)
        t1 = time.perf_counter()
        logs = self._updates(i)
        metrics = {"online/iteration": float(i + 1), "online/transitions": float(self.replay.added_transitions),
                   "online/replay_trajectories": float(len(self.replay)),
                   "online/collect_wait_s": waited, "online/update_s": time.perf_counter() - t1,
                   **collected.metrics(), **logs}
        self.iteration = i + 1
        return metrics

    def _updates(self, i: int) -> dict[str, float]:
        """``updates_per_iteration`` actor updates on the replay, seeded by (trial seed, iteration)."""
        cfg, online = self.cfg, self.online
        torch.manual_seed(cfg.seed * 1_000_003 + 7919 * (i + 1))  # dropout: a resumed iteration repeats exactly
        sampler = SegmentSampler(self.replay.dataset(self.dataset), cfg.data.context_length, cfg.data.rtg_scale,
                                 cfg.data.max_ep_len, self.mean, self.std, seed=[cfg.seed, i, 1],
                                 segments=cfg.data.segments,
                                 rtg_includes_current_reward=cfg.data.rtg_includes_current_reward)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        if self.learner is None:  # ODT: supervised (NLL - T x entropy) on the replay
            for _ in range(online.updates_per_iteration):
                batch = {k: torch.as_tensor(v, device=self.device)
                         for k, v in sampler.sample(cfg.train.batch_size).items()}
                _accumulate(sums, counts, self.supervised_step(batch))
        else:
            # on the device the learner draws its target-smoothing noise on (a CPU generator fails on CUDA)
            generator = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + i)
            for _ in range(online.updates_per_iteration * online.policy_delay):
                _accumulate(sums, counts, self.learner.update(sampler.sample(cfg.train.batch_size, transitions=True),
                                                              generator))
        return {k: sums[k] / counts[k] for k in sums}

    def shutdown(self) -> None:
        if self.collector is not None:
            self.collector.shutdown()


def _accumulate(sums: dict[str, float], counts: dict[str, int], values: dict[str, float]) -> None:
    for k, v in values.items():
        sums[k] = sums.get(k, 0.0) + float(v)
        counts[k] = counts.get(k, 0) + 1
