"""lamo_ray/domains/reacher.py (and the collect CLI): scripted Reacher data written to a (temporary) Minari store."""

import logging

import numpy as np
import pytest

from lamo_ray import collect
from lamo_ray.data.loading import load_dataset
from lamo_ray.domains import reacher
from lamo_ray.domains.reacher import REACHER, ReacherController, collect_reacher
from lamo_ray.envs import make_env
from lamo_ray.episodes import mean_return, uniform_random

TINY = dict(episodes=4, noise_levels=(0.0, 1.0), ref_episodes=2, progress=False)


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def test_noise_free_controller_clearly_beats_random():
    env = make_env("Reacher-v5")
    seeds = range(500, 520)
    controller = mean_return(env, ReacherController.from_env(env), seeds)
    random = mean_return(env, uniform_random(env, np.random.default_rng(0)), seeds)
    assert controller > -10 and random < -35  # measured: about -5.4 and -43
    assert controller - random > 25


def test_collect_writes_loadable_dataset_with_reference_scores(minari_store):
    report = collect_reacher("test/reacher/a-v0", seed=0, **TINY)
    assert report.path == minari_store / "test" / "reacher" / "a-v0"
    assert report.episodes == 4 and report.transitions == 200
    assert report.ref_max_score > report.ref_min_score + 20
    assert report.level_returns[0.0] > report.level_returns[1.0]
    ds = load_dataset("test/reacher/a-v0")
    assert (ds.ref_min_score, ds.ref_max_score) == (report.ref_min_score, report.ref_max_score)
    assert ds.env_id == "Reacher-v5" and ds.obs_shape == (10,) and ds.act_dim == 2
    assert all(t.length == 50 and not t.terminated for t in ds.trajectories)
    # episode i uses noise level i % 2: the noise-free episodes are the better ones
    returns = ds.returns
    assert returns[0::2].mean() == pytest.approx(report.level_returns[0.0])
    assert all(abs(t.actions).max() <= 1.0 for t in ds.trajectories)


def test_same_seed_gives_identical_data():
    collect_reacher("test/a-v0", seed=7, **TINY)
    collect_reacher("test/b-v0", seed=7, **TINY)
    collect_reacher("test/c-v0", seed=8, **TINY)
    a, b, c = (load_dataset(i) for i in ("test/a-v0", "test/b-v0", "test/c-v0"))
    for ta, tb in zip(a.trajectories, b.trajectories):
        np.testing.assert_array_equal(ta.observations, tb.observations)
        np.testing.assert_array_equal(ta.actions, tb.actions)
    assert a.ref_min_score == b.ref_min_score and a.ref_max_score == b.ref_max_score
    assert not np.array_equal(a.trajectories[0].observations, c.trajectories[0].observations)


def test_refuses_to_overwrite_without_force(capsys):
    collect_reacher("test/keep-v0", seed=0, **TINY)
    before = load_dataset("test/keep-v0").returns
    with pytest.raises(FileExistsError, match="test/keep-v0.*--force"):
        collect_reacher("test/keep-v0", seed=1, **TINY)
    assert collect.main(["reacher", "--dataset-id", "test/keep-v0", "--episodes", "2", "--ref-episodes", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    np.testing.assert_array_equal(load_dataset("test/keep-v0").returns, before)  # untouched

    assert collect.main(["reacher", "--dataset-id", "test/keep-v0", "--episodes", "2", "--ref-episodes", "1",
                         "--seed", "3", "--force"]) == 0
    assert "noise std 0: mean return" in capsys.readouterr().out
    assert len(load_dataset("test/keep-v0").trajectories) == 2


def test_malformed_id_is_rejected_before_collecting():
    with pytest.raises(ValueError, match="malformed"):
        collect_reacher("no version", **TINY)


def test_ensure_generates_once(caplog, monkeypatch):
    calls = []
    real = reacher.collect_reacher
    monkeypatch.setattr(reacher, "collect_reacher", lambda *a, **kw: calls.append(a) or real(
        *a, **{**kw, "episodes": 2, "ref_episodes": 1, "progress": False}))
    with caplog.at_level(logging.INFO, logger="lamo_ray.domains.reacher"):
        REACHER.ensure_dataset("test/ensure-v0", seed=0)
        REACHER.ensure_dataset("test/ensure-v0", seed=0)
    assert len(calls) == 1
    assert sum("generating test/ensure-v0" in r.getMessage() for r in caplog.records) == 1
    assert len(load_dataset("test/ensure-v0").trajectories) == 2
