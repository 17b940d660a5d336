"""Atari: DT preprocessing, RAM-scripted behaviour policies, the collector, compact uint8 frames
through the sampler, LaMo's Atari model variant, and the DQN-replay (d4rl-atari layout) loader."""

from __future__ import annotations

import gzip
import re
import tracemalloc

import h5py
import numpy as np
import pytest
import torch

from lamo_ray import collect
from lamo_ray.config import ModelConfig
from lamo_ray.data.frames import compact_stacks, frames_from_stacks, stacked_view
from lamo_ray.data.loading import load_dataset
from lamo_ray.data.sampling import SegmentSampler
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError, state_stats
from lamo_ray.domains.atari import ATARI, GAMES, make_atari_env
from lamo_ray.domains.atari import collect as atari_collect
from lamo_ray.domains.atari.collect import collect_atari
from lamo_ray.domains.atari.policies import BreakoutPaddle, EpsilonMix, PongPaddle, StickyRandomMoves, run_ram_episode
from lamo_ray.envs import flatten_observation, make_env, reference_scores_for
from lamo_ray.model import ImageEncoder, DecisionTransformer, action_loss

FRAME = 84 * 84


@pytest.fixture(autouse=True)
def one_torch_thread():
    """2-thread torch collapses when another process holds a core (docs/references/environment.md "Threads");
    these tests use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


@pytest.fixture(scope="module")
def tiny_breakout(tmp_path_factory):
    """3 short Breakout episodes (scripted, half random, random) in a module-wide Minari store."""
    store = tmp_path_factory.mktemp("atari_store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        report = collect_atari("Breakout", "test/atari/breakout-v0", episodes=3, seed=0, epsilons=(0.0, 0.5, 1.0),
                               max_episode_steps=120, progress=False)
        ds = load_dataset("test/atari/breakout-v0")
    return report, ds


# --------------------------------------------------------------------------- environment


def test_make_env_gives_dt_preprocessing():
    env = make_env("ALE/Breakout-v5", max_episode_steps=7)
    obs, info = env.reset(seed=3)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.shape == (4, 84, 84) and env.action_space.n == 4
    # evaluation: the first frame repeated (LaMo's d4rl-atari FrameStack); collection: zeros (DQN-replay layout)
    assert obs[3].any() and all((obs[i] == obs[3]).all() for i in range(3))
    zero_padded, _ = make_env("ALE/Breakout-v5", frame_stack_padding="zero").reset(seed=3)
    assert (zero_padded[:3] == 0).all()
    np.testing.assert_array_equal(zero_padded[3], obs[3])
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0  # no sticky actions
    frames = info["episode_frame_number"]
    obs2, *_ = env.step(1)
    assert env.unwrapped.ale.getEpisodeFrameNumber() - frames == 4          # frame skip 4
    np.testing.assert_array_equal(obs2[:3], obs[1:])                        # stack shifts by one frame
    steps, truncated = 1, False
    while not truncated:
        *_, terminated, truncated, _ = env.step(0)
        steps += 1
    assert steps == 7 and not terminated                   # the limit counts agent steps
    assert flatten_observation("ALE/Breakout-v5", obs) is obs or flatten_observation("ALE/Breakout-v5", obs).dtype == np.uint8
    env.close()


def test_noop_starts_vary_with_the_seed_and_noframeskip_ids_work():
    env = make_env("ALE/Breakout-v5")
    starts = {env.reset(seed=s)[1]["episode_frame_number"] for s in range(8)}
    assert len(starts) > 2                                  # up to 30 random no-ops (x 4 frames)
    assert max(starts) <= 30 * 4
    pong = make_env("PongNoFrameskip-v4")
    assert pong.reset(seed=0)[0].shape == (4, 84, 84) and pong.action_space.n == 6
    with pytest.raises(ValueError, match="frameskip must be 1"):
        make_atari_env("ALE/Breakout-v5", frameskip=4)


def test_atari_reference_scores_are_references_human_scores():
    assert reference_scores_for("ALE/Breakout-v5") == (1.7, 31.8)
    assert reference_scores_for("QbertNoFrameskip-v4") == (163.9, 13455.0)
    assert reference_scores_for("lamo/atari/pong-v0") == (-20.7, 9.3)


# --------------------------------------------------------------------------- behaviour policies


def test_breakout_paddle_beats_random_play():
    env = make_env("ALE/Breakout-v5", max_episode_steps=500)
    rng = np.random.default_rng(0)
    seeds = (11, 12)
    scripted = [run_ram_episode(env, BreakoutPaddle(), s)["rewards"].sum() for s in seeds]
    random = [run_ram_episode(env, EpsilonMix(BreakoutPaddle(), 1.0, 4, rng), s)["rewards"].sum() for s in seeds]
    # measured: scripted 23 and 17 points in 500 steps, random about 1-2 per game
    assert np.mean(scripted) >= np.mean(random) + 10
    assert min(scripted) > max(random)


def test_pong_paddle_and_qbert_policies_act_in_range():
    ram = np.zeros(128, dtype=np.uint8)
    assert PongPaddle()(ram) == 0                           # no ball in play
    ram[51], ram[54] = 100, 160                             # ball below the paddle -> down (LEFT = 3)
    assert PongPaddle()(ram) == 3
    ram[54] = 40
    assert PongPaddle()(ram) == 2
    qbert = StickyRandomMoves(np.random.default_rng(0))
    actions = [qbert(ram) for _ in range(200)]
    assert set(actions) == {2, 3, 4, 5}
    runs = np.diff(np.flatnonzero(np.diff(actions)))
    # each draw is held 1-4 steps (mean 2.5; repeats of the same move join up): runs are much longer
    # than the 4/3 of a fresh uniform move every step
    assert np.mean(runs) > 2.5


# --------------------------------------------------------------------------- collector


def test_collector_writes_loadable_uint8_dataset(tiny_breakout):
    report, ds = tiny_breakout
    assert report.episodes == 3 and report.transitions == ds.num_transitions
    assert ds.obs_shape == (4, 84, 84) and ds.act_dim == 4 and ds.discrete_actions
    assert ds.env_id == "ALE/Breakout-v5" and (ds.ref_min_score, ds.ref_max_score) == GAMES["breakout"].refs
    assert all(t.observations.dtype == np.uint8 and t.actions.dtype == np.int64 for t in ds.trajectories)
    assert all(t.length <= 120 for t in ds.trajectories)
    # the scripted episode (epsilon 0) scores, the random one does not score more
    assert report.epsilon_returns[0.0] > report.epsilon_returns[1.0]
    # frames are gzip-compressed in Minari's HDF5 file, and Minari itself reads them back losslessly
    with h5py.File(report.path / "data" / "main_data.hdf5") as f:
        assert f["episode_0/observations"].compression == "gzip"
        stored = f["episode_0/observations"][()]
    np.testing.assert_array_equal(stored[:-1], ds.trajectories[0].observations)
    assert report.stored_bytes < report.raw_bytes / 10      # measured ~50x smaller
    # in memory each frame is held once: a step advances one frame in a shared buffer
    obs = ds.trajectories[0].observations
    assert obs.strides[0] == FRAME and not obs.flags.writeable
    env = make_env(ds.env_id, **ds.env_kwargs)
    assert env.reset(seed=0)[0].shape == ds.obs_shape


def test_collector_cli_refuses_to_overwrite_and_collects_pong(capsys):
    args = ["atari", "--game", "Pong", "--dataset-id", "test/atari/pong-v0", "--episodes", "1",
            "--max-episode-steps", "40", "--epsilons", "0.1"]
    assert collect.main(args) == 0
    assert "epsilon 0.1: mean return" in capsys.readouterr().out
    ds = load_dataset("test/atari/pong-v0")
    assert ds.act_dim == 6 and ds.num_transitions == 40 and ds.env_id == "ALE/Pong-v5"
    assert collect.main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert collect.main(["atari", "--game", "Pong", "--dataset-id", "test/atari/pong-v0", "--episodes", "1",
                         "--max-episode-steps", "40", "--epsilons", "1.5", "--force"]) == 2
    with pytest.raises(SystemExit):
        collect.main(["atari", "--game", "Tetris"])


def test_ensure_generates_once_and_rejects_other_games(monkeypatch):
    calls = []
    real = atari_collect.collect_atari
    monkeypatch.setattr(atari_collect, "collect_atari", lambda name, dataset_id, seed=0: calls.append(name) or real(
        name, dataset_id, episodes=1, seed=seed, max_episode_steps=20, progress=False))
    ATARI.ensure_dataset("test/atari/breakout-v0")
    ATARI.ensure_dataset("test/atari/breakout-v0")
    assert calls == ["Breakout"]
    with pytest.raises(ValueError, match=re.escape("not one of the atari domain's dataset ids; use "
                                                   "lamo/atari/<breakout|pong|qbert>-vN")):
        ATARI.ensure_dataset("test/atari/tetris-v0")


# --------------------------------------------------------------------------- frames and sampler


def test_frames_round_trip_and_non_overlapping_stacks_stay():
    frames = np.random.default_rng(0).integers(0, 255, (10, 3, 3), dtype=np.uint8)
    stacks = np.stack([frames[t:t + 4] for t in range(7)])
    np.testing.assert_array_equal(frames_from_stacks(stacks), frames)
    np.testing.assert_array_equal(stacked_view(frames, 4), stacks)
    broken = stacks.copy()
    broken[3, 0] += 1
    assert frames_from_stacks(broken) is None
    assert compact_stacks(broken) is broken


def test_sampler_returns_uint8_segments_without_copying_the_dataset(tiny_breakout):
    _, ds = tiny_breakout
    stacked_bytes = ds.num_transitions * 4 * FRAME     # what one concatenated uint8 copy would take
    mean, std = state_stats(ds)
    tracemalloc.start()
    sampler = SegmentSampler(ds, context_length=6, rtg_scale=1.0, max_ep_len=4096, state_mean=mean,
                             state_std=std, seed=0)
    built = tracemalloc.get_traced_memory()[1]
    batch = sampler.sample(16)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mean.shape == (4, 84, 84) and (mean == 0).all() and (std == 1).all()
    assert built < 0.05 * stacked_bytes                    # no concatenated or float copy of the frames
    assert peak < built + 2.5 * 16 * 6 * 4 * FRAME         # a batch costs about its own uint8 size
    states, mask = batch["states"], batch["attention_mask"]
    assert states.shape == (16, 6, 4, 84, 84) and states.dtype == np.uint8
    assert batch["actions"].shape == (16, 6) and batch["actions"].dtype == np.int64
    assert mask.dtype == np.float32 and ((mask == 0) | (mask == 1)).all()
    assert (np.diff(mask, axis=1) >= 0).all()              # left padding, then real steps
    assert (states[mask == 0] == 0).all()
    # each real row is the trajectory's observation at that timestep
    for b in range(16):
        real = mask[b] == 1
        steps = batch["timesteps"][b, real]
        owners = [t for t in ds.trajectories if t.length > steps.max()
                  and np.array_equal(t.observations[steps], states[b, real])]
        assert owners, f"segment {b} does not match any trajectory"


def test_short_trajectory_is_left_padded():
    frames = np.arange(1, 6, dtype=np.uint8)[:, None, None].repeat(36, 1).repeat(36, 2)  # 5 frames
    from lamo_ray.data.trajectories import Trajectory, TrajectoryDataset

    traj = Trajectory(stacked_view(frames, 4), np.array([1, 2]), np.array([1.0, 2.0], dtype=np.float32), True)
    ds = TrajectoryDataset([traj], (4, 36, 36), 4, True, None, None, None, "synthetic")
    batch = SegmentSampler(ds, 4, 1.0, 10, *state_stats(ds), seed=0).sample(8)
    for b in range(8):
        n = int(batch["attention_mask"][b].sum())
        assert batch["attention_mask"][b].tolist() == [0.0] * (4 - n) + [1.0] * n
        t0 = int(batch["timesteps"][b, 4 - n])
        assert batch["states"][b, 4 - n, :, 0, 0].tolist() == [t0 + 1, t0 + 2, t0 + 3, t0 + 4]
        assert batch["returns_to_go"][b, 4 - n, 0] == pytest.approx([3.0, 2.0][t0])


# --------------------------------------------------------------------------- model


def atari_model(embedding: str = "mlp", finetune: str = "full") -> DecisionTransformer:
    cfg = ModelConfig(backbone="gpt2", pretrained=False, n_layer=1, n_embd=32, n_head=1, embedding=embedding,
                      finetune=finetune)
    return DecisionTransformer(cfg, (4, 84, 84), 4, 64, discrete_actions=True)


@pytest.mark.parametrize("embedding", ["mlp", "linear"])
def test_lamo_atari_variant_shapes(embedding):
    torch.manual_seed(0)
    model = atari_model(embedding).eval()
    assert isinstance(model.embed_state, ImageEncoder) and model.timestep_before_ln
    states = torch.randint(0, 256, (2, 3, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():                                   # large weights: outputs far outside [-1, 1] ...
        model.embed_state.fc.weight.mul_(1000)
        model.action_head[0].weight.mul_(1000)
    encoded = model.embed_state(states)
    assert encoded.shape == (2, 3, 32)
    assert encoded.abs().max() > 1                          # ... for LaMo's CNN, which ends in a Linear (no Tanh)
    actions = torch.randint(0, 4, (2, 3))
    logits = model(states, actions, torch.rand(2, 3, 1), torch.arange(3).repeat(2, 1), torch.ones(2, 3))
    assert logits.shape == (2, 3, 4) and logits.abs().max() <= 1   # ... but not for its head: Linear + Tanh
    assert logits.abs().max() > 0.9
    assert model.embed_action(actions).shape == (2, 3, 32)


def test_a_few_steps_reduce_the_cross_entropy():
    torch.manual_seed(0)
    model = atari_model("mlp", "lora")
    for module in model.modules():  # without dropout noise: 30 steps on 8 segments then overfit for any seed
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    g = torch.Generator().manual_seed(0)
    states = torch.randint(0, 256, (8, 4, 4, 84, 84), dtype=torch.uint8, generator=g)  # uint8 in, floats inside
    actions = torch.randint(0, 4, (8, 4), generator=g)
    rtg, timesteps, mask = torch.ones(8, 4, 1), torch.arange(4).repeat(8, 1), torch.ones(8, 4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(30):
        loss = action_loss(model(states, actions, rtg, timesteps, mask), actions, mask, discrete=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(4), abs=0.3)
    assert losses[-1] < 0.6 * losses[0]


# --------------------------------------------------------------------------- DQN replay (d4rl-atari layout)


def write_dqn_replay(folder, frames, actions, rewards, terminals):
    folder.mkdir(parents=True)
    for name, array in (("observation", frames), ("action", actions), ("reward", rewards), ("terminal", terminals)):
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            np.save(f, array, allow_pickle=False)


def replay_arrays(n=12):
    frames = (np.arange(1, n + 1, dtype=np.uint8)[:, None, None] * np.ones((84, 84), dtype=np.uint8))
    actions = (np.arange(n) % 3).astype(np.int32)
    rewards = np.arange(n, dtype=np.float32)
    terminals = np.zeros(n, dtype=np.uint8)
    terminals[[4, 9]] = 1                                   # episodes 0-4, 5-9, then an unfinished 10-11
    return frames, actions, rewards, terminals


def test_dqn_replay_loader_stacks_with_zero_padding(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_ATARI_PATH", str(tmp_path / "d4rl"))
    write_dqn_replay(tmp_path / "d4rl" / "Breakout" / "1" / "10", *replay_arrays())
    ds = load_dataset("d4rl-atari/breakout-medium-v0")
    assert [t.length for t in ds.trajectories] == [5, 5, 2]
    assert [t.terminated for t in ds.trajectories] == [True, True, False]
    assert ds.obs_shape == (4, 84, 84) and ds.act_dim == 4 and ds.discrete_actions   # Breakout's 4 actions
    assert ds.env_id == "BreakoutNoFrameskip-v4" and (ds.ref_min_score, ds.ref_max_score) == (1.7, 31.8)
    second = ds.trajectories[1].observations                 # frames 6..10
    assert second[:, :, 0, 0].tolist() == [[0, 0, 0, 6], [0, 0, 6, 7], [0, 6, 7, 8], [6, 7, 8, 9], [7, 8, 9, 10]]
    assert ds.trajectories[1].rewards.tolist() == [5, 6, 7, 8, 9]
    assert ds.trajectories[2].actions.tolist() == [1, 2]
    np.testing.assert_array_equal(ds.trajectories[0].observations[4], np.arange(2, 6)[:, None, None] * np.ones((84, 84)))
    # a checkpoint folder path works too, and the env it names is the one we evaluate on
    assert load_dataset(str(tmp_path / "d4rl" / "Breakout" / "1" / "10")).num_transitions == 12
    assert make_env(ds.env_id).observation_space.shape == ds.obs_shape


def test_dqn_replay_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_ATARI_PATH", str(tmp_path))
    with pytest.raises(DatasetNotDownloadedError, match=r"Qbert/1/50.*gsutil.*collect atari"):
        load_dataset("d4rl-atari/qbert-expert-v0")
    with pytest.raises(DatasetError, match="not a d4rl-atari id"):
        load_dataset("d4rl-atari/breakout-best-v0")
    frames, actions, rewards, terminals = replay_arrays()
    write_dqn_replay(tmp_path / "Pong" / "1" / "1", frames, actions[:-1], rewards, terminals)
    with pytest.raises(DatasetError, match="different lengths"):
        load_dataset("d4rl-atari/pong-mixed-v0")
    write_dqn_replay(tmp_path / "Pong" / "2" / "1", frames.astype(np.float32), actions, rewards, terminals)
    with pytest.raises(DatasetError, match="uint8"):
        load_dataset("d4rl-atari/pong-mixed-v1")
