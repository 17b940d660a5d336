"""Online trials through the trial entry point (`lamo_ray.train.train_loop_per_worker`, issue 29): every
stage of an ODT or a TD3+ODT trial takes the device from the session, as offline and continual trials
do. The rollout actors are stood in for (`FakeCollector`: synthetic episodes); the rest is the real loop.

- A session whose device is ``cpu:0`` (a device object the loop can only have from the session; a stage
  that chose its own, e.g. ``"cpu"``, would differ from it) runs the offline steps and the online
  iterations to the end, and the learner (TD3's critic) and the online phase (replay batches, the
  target-smoothing noise's generator) were built on that device.
- A session whose device is CUDA: on this CPU-only torch an error naming CUDA before anything is
  reported, never a silent CPU run."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from test_train import assert_asks_for_cuda, fakes, session_on  # noqa: F401 - fakes: a fixture

from lamo_ray import train
from lamo_ray.config import validate_trial
from lamo_ray.data.trajectories import Trajectory
from lamo_ray.online import learner as learner_module
from lamo_ray.online import loop
from lamo_ray.online.loop import Collected

KINDS = ("odt", "td3_odt")
ITERATIONS = 2


def online_trial(method: str):
    return validate_trial({
        "seed": 1,
        "data": {"source": "in-memory", "context_length": 4, "max_ep_len": 32, "rtg_scale": 10.0},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1, "dropout": 0.0,
                  "finetune": "full", "embedding": "linear",
                  "action_head": "tanh_gaussian" if method == "odt" else "deterministic"},
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "eval_every": 4, "log_every": 2},
        "eval": {"env_id": "Reacher-v5", "episodes": 2, "target_returns": [0.0]},
        "online": {"method": method, "iterations": ITERATIONS, "updates_per_iteration": 3, "eval_every": 1,
                   "target_return": 0.0, "transitions_per_iteration": 20, "num_actors": 1, "envs_per_actor": 1,
                   **({} if method == "odt" else {"critic_hidden": 16})},
    })


class FakeCollector:
    """`lamo_ray.online.loop.Collector` without Ray: each iteration two synthetic 10-step episodes in the
    dataset's shapes, actions in [-1, 1]; remembers the device of the weights it was given."""

    pushed_devices: list[set[str]] = []

    def __init__(self, spec, env_id, online, seed, stochastic, env_kwargs=None, max_episode_steps=None,
                 actor_cpus=0.0, gpus_per_actor=0.0):
        self.spec, self.rng = spec, np.random.default_rng(seed)

    def submit(self, state_dict, iteration):
        FakeCollector.pushed_devices.append({v.device.type for v in state_dict.values()})
        return iteration

    def gather(self, pending) -> Collected:
        trajectories = [Trajectory(self.rng.normal(size=(10, *self.spec.state_shape)).astype(np.float32),
                                   self.rng.uniform(-1, 1, (10, self.spec.act_dim)).astype(np.float32),
                                   -np.ones(10, np.float32), False) for _ in range(2)]
        return Collected(trajectories=trajectories, returns=[-10.0, -10.0], lengths=[10, 10], successes=[],
                         dropped=0, env_steps=20, seconds=0.01)

    def shutdown(self) -> None:
        pass


@pytest.fixture
def stand_ins(fakes, monkeypatch):
    """The loop's data source and evaluator stood in for (test_train's ``fakes``), and its collector;
    spies on the devices the online phase and the TD3 learner are built with."""
    devices: dict[str, list] = {"phase": [], "learner": []}
    monkeypatch.setattr(loop, "Collector", FakeCollector)
    monkeypatch.setattr(FakeCollector, "pushed_devices", [])
    for name, cls in (("phase", loop.OnlinePhase), ("learner", learner_module.TD3Learner)):
        real = cls.__init__

        def spy(self, *args, _real=real, _name=name, **kwargs):
            devices[_name].append(inspect.signature(_real).bind(self, *args, **kwargs).arguments.get("device"))
            _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    return devices


@pytest.mark.parametrize("method", KINDS)
def test_every_stage_of_an_online_trial_takes_the_sessions_device(tmp_path, stand_ins, method):
    session = session_on(torch.device("cpu", 0), tmp_path / "run")
    train.train_loop_per_worker({"trial": online_trial(method)}, session)
    # the offline evaluation, then one per online iteration (online.eval_every 1)
    assert [m.get("online/iteration") for m, _ in session.reports] == [None, 1.0, 2.0]
    assert stand_ins["phase"] == [session.device]
    assert stand_ins["learner"] == ([] if method == "odt" else [session.device])
    assert FakeCollector.pushed_devices == [{"cpu"}] * ITERATIONS   # the actors get CPU copies of the weights


@pytest.mark.parametrize("method", KINDS)
def test_an_online_trial_on_a_cuda_session_asks_for_cuda(tmp_path, stand_ins, method):
    assert_asks_for_cuda(online_trial(method), tmp_path)
