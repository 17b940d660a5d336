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


# --------------------------------------------------------------------------- import-time notices

NOTICE = "reward functions"  # gymnasium_robotics 1.4.2's import-time notice about AdroitHand*Dense-v1

# A fresh interpreter (the package prints its notice on its first import only): stderr gets WARNINGs,
# stdout every log line of lamo_ray.domains.base (DEBUG included), to see the notice is kept, not lost.
_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
logging.getLogger().handlers[0].setLevel(logging.WARNING)
debug = logging.StreamHandler(sys.stdout)
debug.addFilter(logging.Filter("lamo_ray.domains.base"))
logging.getLogger().addHandler(debug)
from lamo_ray import domains
{body}
"""


def _run(body: str):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(body=body)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("body", [
    "domains.get('kitchen').register_envs(); domains.get('kitchen').make_env('FrankaKitchen-v1').close()",
    # PointMaze and AntMaze read gymnasium_robotics' maze maps before any env is made
    "from lamo_ray.domains.pointmaze import maze; maze('umaze'); domains.get('pointmaze').register_envs()",
    "from lamo_ray.domains.antmaze import evaluation_map; evaluation_map('umaze'); domains.get('antmaze').register_envs()",
], ids=["kitchen", "pointmaze", "antmaze"])
def test_a_notice_about_other_envs_is_not_shown(body):
    """gymnasium_robotics prints, at import, that the AdroitHand*Dense-v1 rewards changed: a run on
    Kitchen or a maze must not show it (it is logged at DEBUG only)."""
    proc = _run(body)
    assert NOTICE not in proc.stderr, proc.stderr
    assert proc.stdout.count(NOTICE) == 1 and "gymnasium_robotics printed at import" in proc.stdout, proc.stdout


def test_the_adroit_notice_is_shown_once():
    """The notice concerns Adroit's envs: shown once per process, named by its package, however often
    (and after whichever other domain) the envs are registered."""
    proc = _run("domains.get('kitchen').register_envs(); domains.get('adroit').register_envs(); "
                "domains.get('adroit').make_env('AdroitHandPen-v1').close(); domains.get('adroit').register_envs()")
    assert proc.stderr.count(NOTICE) == 1, proc.stderr
    assert "WARNING:lamo_ray.domains.base:gymnasium_robotics: AdroitHandRelocateDense-v1" in proc.stderr, proc.stderr


def test_import_env_package_keeps_a_failed_import_loud(monkeypatch):
    """A package that cannot be imported still raises ImportError (register_envs then names it)."""
    monkeypatch.setattr(base, "_PACKAGE_NOTICES", {})
    with pytest.raises(ImportError):
        base.import_env_package("lamo_ray_no_such_env_package")

    class Missing(domains.Domain):
        name = "missing"
        env_package = "lamo_ray_no_such_env_package"

    assert Missing().register_envs() == "lamo_ray_no_such_env_package"
