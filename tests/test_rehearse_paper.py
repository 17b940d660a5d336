"""``python -m lamo_ray.sweep SWEEP.yaml --rehearse`` of the offline paper sweeps (issue 32): sweeps/kitchen.yaml,
mujoco.yaml, atari.yaml and kitchen_search.yaml shrunk to CPU sizes with ``--set`` and given stand-ins for their missing inputs
(D4RL's data, GPT-2's weights, WikiText), in a subprocess as a user runs it. The online and continual
rehearsals are in tests/test_rehearse_e2e.py (a file of its own: under ``pytest -n 2`` each file runs on one
worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamo_ray.config import load_sweep
from lamo_ray.rehearse import trial_shapes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = ["seeds=[0]", "model.pretrained=false", "model.n_layer=1", "model.n_embd=32", "model.n_head=1",
               "train.batch_size=8", "eval.num_actors=1"]
SMALL_DT = ["variants.dt.model.n_layer=1", "variants.dt.model.n_embd=32"]
KITCHEN_PARTIAL = ("data={grid: [{source: D4RL/kitchen/partial-v2, sample_ratio: 0.01, rtg_scale: 1, "
                   "context_length: 20, max_ep_len: 1000}]}")


@pytest.mark.parametrize("name, shrink, standins", [
    # the DT baseline and LaMo with the language loss (a stand-in WikiText); one data section (the other is
    # the same shape on another file) and two of the five variants: lamo is kitchen_search's shape below, the
    # two ablations change one model key each (the whole file rehearsed by hand: 10 of 10 passed, 3 min 28 s)
    ("kitchen", [KITCHEN_PARTIAL, "variants={dt: {model: {pretrained: false, n_layer: 1, n_embd: 32, "
                 "n_head: 1, activation: relu, finetune: full, embedding: linear}}, lamo_cotrain: {language: "
                 "{co_lambda: 0.1}}}", "language.batch_size=1", "eval.episodes=2", "eval.envs_per_actor=2"],
     ["STAND-IN dataset for D4RL/kitchen/partial-v2", "STAND-IN corpus for wikitext-103-raw-v1"]),
    # one task of three: D4RL's hdf5 file and its 4 sample ratios, which collapse into one shape per variant
    ("mujoco", [*SMALL_DT, "task=hopper", "eval.episodes=2", "eval.envs_per_actor=2"],
     ["STAND-IN dataset for ~/.d4rl/datasets/hopper-medium-v2.hdf5"]),
    # one game of three: 84 x 84 x 4 uint8 frames, the lamo_atari schedule, full-length evaluation episodes
    ("atari", [*SMALL_DT, "task=breakout", "eval.episodes=1", "eval.envs_per_actor=1"],
     ["STAND-IN dataset for d4rl-atari/breakout-medium-v0"]),
    # the search (16 random configurations, ASHA) and its confirmation: one shape, the first point's
    ("kitchen_search", ["eval.episodes=2", "eval.envs_per_actor=2"], ["STAND-IN dataset for D4RL/kitchen/partial-v2"]),
])
def test_an_offline_paper_sweep_shrunk_to_cpu_sizes_rehearses_every_shape(tmp_path, name, shrink, standins):
    """sweeps/kitchen.yaml, mujoco.yaml, atari.yaml and kitchen_search.yaml with CPU-sized models and
    ``--rehearse-standin`` for their D4RL data, GPT-2's weights and WikiText: every shape of the shrunk sweep
    passes (offline steps, the checkpoint and the resume from it, evaluations with real envs), is listed,
    and is projected, the search's confirmation trials included."""
    path = REPO / "sweeps" / f"{name}.yaml"
    settings = [*SMALL_MODEL, *shrink, f"storage_path={tmp_path / 'ray'}"]
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", HF_HUB_OFFLINE="1",
               MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    env.pop("RAY_ADDRESS", None)
    args = [a for s in settings for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "lamo_ray.sweep", str(path), "--rehearse", "--rehearse-standin", *args],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    out = proc.stdout
    sweep = load_sweep(path, settings)
    shapes = trial_shapes(sweep, sweep.trials)
    assert len(shapes) >= (1 if sweep.confirm else 2)
    for shape in shapes:
        assert f"[PASS] {shape.name} ({len(shape.rows)} trials): offline/pre-training step" in out, out[-3000:]
    assert f"rehearsal: {len(shapes)} of {len(shapes)} shape(s) passed" in out
    for line in standins:
        assert line in out, line
    trials = len(sweep.trials) * sweep.num_samples
    if sweep.confirm:
        trials += sweep.confirm.top_k * len(sweep.variants) * len(sweep.confirm.seeds)
    assert f"projection (every trial to its end: an upper bound under ASHA): {trials} trials" in out
