"""lamo_ray/domains: the registry finds each domain by env id, dataset id or name, and a new domain
needs nothing but its module."""

import gymnasium as gym
import numpy as np
import pytest

from lamo_ray import domains
from lamo_ray.domains import base
from lamo_ray.envs import flatten_observation, make_env, reference_scores_for


@pytest.mark.parametrize("env_id, name", [
    ("FrankaKitchen-v1", "kitchen"), ("ALE/Breakout-v5", "atari"), ("QbertNoFrameskip-v4", "atari"),
    ("Hopper-v5", "mujoco"), ("HalfCheetah-v5", "mujoco"), ("Reacher-v5", "reacher"), ("CartPole-v1", ""),
    ("DMControl/hopper-stand-v0", "dmcontrol"), ("MetaWorld/hammer-v3", "metaworld"),
])
def test_envs_find_their_domain(env_id, name):
    assert domains.for_env(env_id).name == name


@pytest.mark.parametrize("source, name", [
    ("D4RL/kitchen/partial-v2", "kitchen"), ("lamo/kitchen/complete-v0", "kitchen"),
    ("mujoco/hopper/medium-v0", "mujoco"), ("~/.d4rl/datasets/walker2d-medium-v2.hdf5", "mujoco"),
    ("lamo/mujoco/hopper/medium-v0", "mujoco"), ("d4rl-atari/breakout-medium-v0", "atari"),
    ("lamo/atari/pong-v0", "atari"), ("lamo/reacher/mixed-v0", "reacher"), ("someone/else-v0", None),
    ("lamo/dmcontrol/walker-run-v0", "dmcontrol"), ("~/data/dm_control/walker_run.npz", "dmcontrol"),
    ("~/data/meta-world/2M/hammer-v2.npz", "metaworld"),
])
def test_datasets_find_their_domain(source, name):
    domain = domains.for_dataset(source)
    assert (domain.name if domain else None) == name


def test_local_ids_are_the_ones_a_domain_generates():
    assert domains.get("kitchen").generates("lamo/kitchen/partial-v0")
    assert not domains.get("kitchen").generates("D4RL/kitchen/partial-v2")
    assert [d.name for d in domains.registered()] == ["reacher", "kitchen", "mujoco", "atari", "pointmaze", "antmaze",
                                                        "adroit", "metaworld", "dmcontrol"]
    with pytest.raises(KeyError, match="known: reacher, kitchen, mujoco, atari, pointmaze, antmaze, adroit, metaworld, "
                                       "dmcontrol"):
        domains.get("dm_control")
    with pytest.raises(ValueError, match="already registered"):
        domains.register(domains.get("reacher"))


def test_evaluation_defaults_are_lamos():
    """docs/references/lamo.md "Evaluation", "Data": targets and RTG scales as LaMo ran them."""
    assert domains.get("mujoco").evaluation.target_returns["Hopper-v5"] == (3600, 2600, 2200, 1800)
    assert domains.get("mujoco").evaluation.rtg_scale == 1000
    assert domains.get("kitchen").evaluation.target_returns["FrankaKitchen-v1"] == (5, 4, 3, 2, 1)
    assert domains.get("kitchen").evaluation.rtg_scale == 1
    assert domains.get("atari").evaluation.target_returns["ALE/Breakout-v5"] == (90, 120)


def test_a_new_domain_is_one_registered_object(monkeypatch):
    """What a new domain needs: a Domain subclass, registered; envs, flattening and refs then use it."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    class Pendulum(domains.Domain):
        name = "pendulum"
        env_ids = ("Pendulum-v1",)
        ref_scores_by_name = {"pendulum": (-1500.0, -150.0)}

        def make_env(self, env_id, max_episode_steps=None, **kwargs):
            return super().make_env(env_id, max_episode_steps=max_episode_steps or 17, **kwargs)

        def flatten_dict_observation(self, obs, batch_dims=0):
            return np.asarray(obs["x"], dtype=np.float32) * 2

    domains.register(Pendulum())
    assert domains.for_env("Pendulum-v1").name == "pendulum"
    env = make_env("Pendulum-v1")
    assert isinstance(env.unwrapped, gym.Env) and env.spec.max_episode_steps == 17
    assert reference_scores_for("Pendulum-v1") == (-1500.0, -150.0)
    assert flatten_observation("Pendulum-v1", {"x": [1.0, 2.0]}).tolist() == [2.0, 4.0]
