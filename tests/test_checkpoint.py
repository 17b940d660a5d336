"""Checkpoints round-trip without pickle, and a wrong or damaged checkpoint is a clear error."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lamo_ray.checkpoint import (CheckpointError, load_checkpoint, load_optimizer_state, load_weights_into,
                                 resolve_checkpoint, save_checkpoint)
from lamo_ray.config import validate_trial
from lamo_ray.checkpoint import PolicySpec
from lamo_ray.evaluate import build_policy


def make(n_embd=16):
    cfg = validate_trial({"data": {"source": "x", "context_length": 3, "max_ep_len": 32},
                          "model": {"pretrained": False, "n_layer": 1, "n_embd": n_embd, "n_head": 1}})
    spec = PolicySpec(trial=cfg, state_shape=(4,), act_dim=2, discrete_actions=False,
                      state_mean=np.arange(4, dtype=np.float32), state_std=np.ones(4, np.float32) * 2)
    return cfg, spec


def test_round_trip_restores_weights_config_and_normalisation(tmp_path):
    cfg, spec = make()
    torch.manual_seed(0)
    model = build_policy(spec, load_weights=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    save_checkpoint(tmp_path, model, spec, "Reacher-v5", (-40.0, -5.0), step=7,
                    optimizer_state={"optimizer": opt.state_dict()})
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 7 and ckpt.env_id == "Reacher-v5" and ckpt.refs == (-40.0, -5.0)
    assert ckpt.config == cfg
    np.testing.assert_array_equal(ckpt.spec.state_mean, spec.state_mean)
    fresh = build_policy(ckpt.spec, load_weights=False)
    load_weights_into(fresh, tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert "optimizer" in load_optimizer_state(tmp_path)


def test_checkpoint_from_other_model_config_is_rejected(tmp_path):
    _, spec = make(n_embd=16)
    save_checkpoint(tmp_path, build_policy(spec, load_weights=False), spec, "Reacher-v5", (None, None), step=1)
    _, other = make(n_embd=32)
    with pytest.raises(CheckpointError, match="does not match"):
        load_weights_into(build_policy(other, load_weights=False), tmp_path)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load_checkpoint(tmp_path)
    _, spec = make()
    model = build_policy(spec, load_weights=False)
    save_checkpoint(tmp_path, model, spec, "Reacher-v5", (None, None), step=1)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_weights_into(model, tmp_path)
    (tmp_path / "config.yaml").write_text("model: {lora: {rank: 0}}\n")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


def test_optimizer_state_refuses_pickled_objects(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "optimizer.pt")
    # torch.load(weights_only=True) stops at the first global outside its allow-list, before calling it
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global: GLOBAL print"):
        load_optimizer_state(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_in_trial_session_resumes_from_the_newest_complete_checkpoint_on_disk(tmp_path):
    """After the sweep driver was killed, Tune may not have registered the trial's newest checkpoints
    (its experiment state is saved every few seconds): the trial resumes from the newest complete
    ``checkpoint_*`` folder in its storage directory instead of starting over."""
    from lamo_ray.sessions import TuneTrialSession

    _, spec = make()
    model = build_policy(spec, load_weights=False)
    for index, step in ((0, 100), (1, 200)):
        save_checkpoint(tmp_path / f"checkpoint_{index:06d}", model, spec, "Reacher-v5", (None, None), step=step)
    (tmp_path / "checkpoint_000002").mkdir()  # being written when the process died: no files yet
    (tmp_path / "checkpoint_000002" / "config.yaml").write_text("{}")
    session = TuneTrialSession(use_gpu=False, started=0.0, storage_dir=tmp_path)
    assert Path(session.get_checkpoint().path).name == "checkpoint_000001"
    assert TuneTrialSession(use_gpu=False, started=0.0, storage_dir=tmp_path / "none").get_checkpoint() is None


def test_a_trial_restarted_in_a_new_directory_resumes_from_its_old_one(tmp_path):
    """A trial that started after Tune's last experiment-state save is restarted by ``--resume`` in a new
    directory (same trial id, new start time): its checkpoints are found in the old one. Another trial's
    directory beside them is not read. Before, the trial started over (the killed-driver test's resumed
    trial logged no restored step)."""
    from lamo_ray.sessions import TuneTrialSession

    _, spec = make()
    model = build_policy(spec, load_weights=False)
    old = tmp_path / "run_trial_8d8d9_00001_1_seed=1_2026-12-08_05-02-33"
    other = tmp_path / "run_trial_8d8d9_00000_0_seed=0_2026-12-08_05-02-22"
    save_checkpoint(old / "checkpoint_000001", model, spec, "Reacher-v5", (None, None), step=200)
    save_checkpoint(other / "checkpoint_000003", model, spec, "Reacher-v5", (None, None), step=400)
    new = tmp_path / "run_trial_8d8d9_00001_1_seed=1_2026-12-08_05-02-55"
    new.mkdir()
    session = TuneTrialSession(use_gpu=False, started=0.0, storage_dir=new, trial_id="8d8d9_00001")
    assert Path(session.get_checkpoint().path) == old / "checkpoint_000001"
    assert TuneTrialSession(use_gpu=False, started=0.0, storage_dir=new).get_checkpoint() is None   # no id: its own only


def test_in_trial_session_resumes_a_continual_trial_from_its_newest_checkpoint(tmp_path):
    """A continual trial's checkpoint is its runner's state (continual.pt) with its step beside it: the
    session picks the newest. Before, only policy checkpoints were recognised, every continual one was
    skipped as "not a lamo_ray checkpoint" and a restarted continual trial started over (--rehearse of
    l2m_local.yaml found it: every shape failed its resume)."""
    import json

    from lamo_ray.sessions import CONTINUAL_FILE, CONTINUAL_STEP_FILE, TuneTrialSession, checkpoint_step

    for index, step in ((0, 7), (1, 14)):
        d = tmp_path / f"checkpoint_{index:06d}"
        d.mkdir()
        torch.save({"step": step}, d / CONTINUAL_FILE)
        (d / CONTINUAL_STEP_FILE).write_text(json.dumps({"step": step, "stage": index}))
    (tmp_path / "checkpoint_000002").mkdir()               # being written when the process died
    torch.save({"step": 21}, tmp_path / "checkpoint_000002" / CONTINUAL_FILE)
    session = TuneTrialSession(use_gpu=False, started=0.0, storage_dir=tmp_path)
    assert Path(session.get_checkpoint().path).name == "checkpoint_000001"
    assert checkpoint_step(tmp_path / "checkpoint_000001") == 14
    with pytest.raises(CheckpointError, match=CONTINUAL_STEP_FILE):
        checkpoint_step(tmp_path / "checkpoint_000002")
