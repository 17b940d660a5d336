"""Meta-World (issue 19): Continual World's evaluation settings on metaworld v3, task names with
did-you-mean, the scripted-expert collector's data, reference scores and measured success, and
success in rollout records."""

import numpy as np
import pytest
import torch

from lamo_ray import domains
from lamo_ray.checkpoint import PolicySpec
from lamo_ray.config import validate_trial
from lamo_ray.domains.metaworld import CW10, METAWORLD, check_tasks, env_id, task_list, task_of
from lamo_ray.domains.metaworld.collect import collect_metaworld, expert_policy
from lamo_ray.envs import make_env
from lamo_ray.evaluate import Rollout, summarize


def test_task_lists_and_names():
    assert len(task_list("mt50")) == 50 and set(CW10) <= set(task_list("mt50"))
    assert len(task_list("mt40")) == 40 and not set(CW10) & set(task_list("mt40"))
    assert check_tasks(["hammer", "push-wall-v3", "cw10"])[:3] == ("hammer", "push-wall", "hammer")
    assert len(check_tasks(["cw10"])) == 10
    with pytest.raises(ValueError, match=r"tasks: unknown Meta-World task 'push-wal'; did you mean 'push-wall'\?"):
        check_tasks(["hammer", "push-wal"])
    assert task_of(env_id("stick-pull")) == "stick-pull"
    with pytest.raises(ValueError, match="not a Meta-World env id"):
        task_of("Hopper-v5")
    assert domains.for_env(env_id("hammer")) is METAWORLD
    assert domains.for_dataset("lamo/metaworld/hammer-v0") is METAWORLD


def test_continual_world_settings_random_positions_seeded_by_reset():
    env = make_env(env_id("push-wall"))
    assert env.spec.max_episode_steps == 200
    first, _ = env.reset(seed=1)
    again, _ = env.reset(seed=1)
    other, _ = env.reset(seed=2)
    assert first.shape == (39,)
    assert np.array_equal(first, again)                        # the reset seed fixes the positions
    assert not np.allclose(first[36:39], other[36:39])          # a new goal position for another seed
    assert not np.allclose(first[4:7], other[4:7])              # and a new object position
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        steps, done = steps + 1, terminated or truncated
        assert "success" in info
    assert steps == 200 and truncated and not terminated
    with pytest.raises(ValueError, match="at most 500 steps"):
        make_env(env_id("hammer"), max_episode_steps=600)
    with pytest.raises(ValueError, match="did you mean 'hammer'"):
        make_env("MetaWorld/hamer-v3")


def test_collector_spreads_returns_from_random_to_expert_and_records_success(tmp_path, monkeypatch):
    from lamo_ray.data.loading import load_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    report = collect_metaworld("window-close", "test/metaworld/window-close-v0", episodes=10, ref_episodes=4, seed=5)
    again = collect_metaworld("window-close", "test/metaworld/again-v0", episodes=10, ref_episodes=4, seed=5)
    assert (report.mean_return, report.ref_min_score, report.ref_max_score, report.expert_success) == \
        (again.mean_return, again.ref_min_score, again.ref_max_score, again.expert_success)  # all from the seed
    assert report.transitions == 10 * 200
    # window-close's expert: 1.0 (docs/references/environment.md "Meta-World and DMControl")
    assert report.expert_success == 1.0 and report.random_success == 0.0
    assert report.ref_min_score < report.mean_return < report.ref_max_score
    ds = load_dataset("test/metaworld/window-close-v0")
    assert ds.obs_shape == (39,) and ds.act_dim == 4 and ds.env_id == env_id("window-close")
    assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)
    returns = ds.returns
    # episode i uses level i mod 5: the noise-free expert (0, 5) beats uniform random actions (4, 9)
    assert min(returns[0], returns[5]) > max(returns[4], returns[9])
    assert all(np.all(np.abs(t.actions) <= 1.0) for t in ds.trajectories)
    import minari

    meta = minari.load_dataset("test/metaworld/window-close-v0").storage.metadata
    assert meta["expert_success"] == 1.0 and meta["levels"] == ["0.0", "0.3", "0.6", "1.0", "random"]
    with pytest.raises(FileExistsError, match="--force"):
        collect_metaworld("window-close", "test/metaworld/window-close-v0", episodes=1, ref_episodes=1)
    with pytest.raises(ValueError, match="did you mean 'window-close'"):
        collect_metaworld("window-clos", "test/metaworld/x-v0", episodes=1, ref_episodes=1)


def test_collect_cli_checks_every_task_before_collecting(tmp_path, monkeypatch, capsys):
    from lamo_ray.collect import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert main(["metaworld", "--tasks", "hammer", "faucet-clos", "--episodes", "1"]) == 2
    assert "did you mean 'faucet-close'" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.hdf5"))                   # the valid first task was not collected either


class Expert(torch.nn.Module):
    """metaworld's scripted policy of one task, on the (un-normalised) last state."""

    def __init__(self, task):
        super().__init__()
        self.policy = expert_policy(task)

    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        return torch.from_numpy(np.stack([self.policy(s[-1].numpy().astype(np.float64)) for s in states]))


class Still(torch.nn.Module):
    def predict_action(self, states, actions, returns_to_go, timesteps, attention_mask):
        return torch.zeros(states.shape[0], 4)


def test_rollout_records_success_at_any_step():
    cfg = validate_trial({"data": {"source": "unused", "context_length": 2, "rtg_scale": 200, "max_ep_len": 200},
                          "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1}})
    spec = PolicySpec(trial=cfg, state_shape=(39,), act_dim=4, discrete_actions=False,
                      state_mean=np.zeros(39, np.float32), state_std=np.ones(39, np.float32))
    done = Rollout(spec, env_id("window-close"), num_envs=2, model=Expert("window-close")).run([(1500.0, 0), (1500.0, 1)])
    idle = Rollout(spec, env_id("window-close"), num_envs=1, model=Still()).run([(500.0, 0)])
    assert [r["success"] for r in done] == [True, True] and idle[0]["success"] is False
    assert all(r["length"] == 200 for r in done + idle)
    assert summarize(done + idle, (0.0, 1500.0))["eval/target_1500/success_rate"] == 1.0
