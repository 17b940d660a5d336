"""L2M's own Meta-World files (hub dataset ml-jku/meta-world, 2M/<task>-v2.npz): read in L2M's format
with arrays only, served by the Meta-World domain, planned for download from the hub without the
network, and listed by the preflight when missing."""

import socket

import huggingface_hub.constants
import numpy as np
import pytest

from lamo_ray import domains, inputs
from lamo_ray.config import validate_trial
from lamo_ray.data.loading import load_dataset
from lamo_ray.data.trajectories import DatasetError, DatasetNotDownloadedError

HUB = "https://huggingface.co/datasets/ml-jku/meta-world/resolve/main/2M"


def write_buffer(path, ends=(200, 400), n=450, rng=np.random.default_rng(0)):
    """An L2M-format replay buffer: flat arrays, episodes cut where ``dones`` is set."""
    dones = np.zeros((n, 1), np.float32)
    dones[np.array(ends) - 1] = 1.0
    arrays = {"observations": rng.normal(size=(n, 39)), "next_observations": rng.normal(size=(n, 39)),
              "actions": rng.uniform(-1, 1, size=(n, 4)).astype(np.float32),
              "rewards": rng.uniform(0, 10, size=(n, 1)).astype(np.float32), "dones": dones}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_a_file_splits_into_trajectories_at_dones_as_l2m_does(tmp_path):
    path = tmp_path / "2M" / "hammer-v2.npz"
    arrays = write_buffer(path)
    ds = load_dataset(str(path))
    assert domains.for_dataset(str(path)).name == "metaworld"
    assert [len(t.rewards) for t in ds.trajectories] == [200, 200]        # the 50 steps after the last done: dropped
    assert ds.env_id == "MetaWorld/hammer-v3" and ds.obs_shape == (39,) and ds.act_dim == 4
    assert not ds.discrete_actions and ds.ref_max_score is None and ds.ref_min_score is None
    second = ds.trajectories[1]
    np.testing.assert_allclose(second.observations, arrays["observations"][200:400].astype(np.float32))
    np.testing.assert_allclose(second.actions, arrays["actions"][200:400])
    np.testing.assert_allclose(second.rewards, arrays["rewards"][200:400, 0])
    assert second.observations.dtype == np.float32 and not second.terminated


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "push-v2.npz"
    bad = np.empty(3, dtype=object)
    bad[:] = [{"a": 1}, None, "x"]
    np.savez(path, observations=bad, actions=np.zeros((3, 4)), rewards=np.zeros(3), dones=np.ones(3))
    with pytest.raises(DatasetError, match="without unpickling objects"):
        load_dataset(str(path))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("dones"), r"missing keys \['dones'\]"),
    (lambda a: a.update(actions=np.zeros((450, 6))), r"actions \(6,\) per step, not the task's \(4,\)"),
    (lambda a: a.update(rewards=np.zeros(449)), "keys have different lengths"),
    (lambda a: a.update(dones=np.zeros(450)), "no step has done set"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, change, message):
    path = tmp_path / "reach-v2.npz"
    arrays = write_buffer(path)
    change(arrays)
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(str(path))
    assert str(err.value).startswith(str(path))


def test_missing_file_says_where_the_hub_serves_it_and_unknown_tasks_get_a_did_you_mean(tmp_path):
    with pytest.raises(DatasetNotDownloadedError, match=f"wget -O {tmp_path}/push-v2.npz {HUB}/push-v2.npz"):
        load_dataset(str(tmp_path / "push-v2.npz"))
    with pytest.raises(DatasetError, match="did you mean 'hammer'"):
        load_dataset(str(tmp_path / "hamer-v2.npz"))


def continual_trial(source):
    return validate_trial({
        "data": {"source": source, "context_length": 5, "rtg_scale": 200, "max_ep_len": 200},
        "model": {"pretrained": False, "n_layer": 1, "n_embd": 16, "n_head": 1, "finetune": "full"},
        "train": {"steps": 10},
        "continual": {"pretrain_tasks": ["reach"], "tasks": ["hammer", "push-wall"], "steps_per_task": 5,
                      "eval_every": 5, "method": "l2m", "target_return": "data_max"}})


def test_a_continual_sweep_plans_every_missing_task_file_from_the_hub_without_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network request"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    cfg = continual_trial(str(tmp_path / "2M" / "{task}-v2.npz"))
    write_buffer(tmp_path / "2M" / "reach-v2.npz")
    planned = {item.name: item.where for item in inputs.plan_inputs([cfg])}
    assert planned == {str(tmp_path / "2M" / f"{t}-v2.npz"): f"{HUB}/{t}-v2.npz" for t in ("hammer", "push-wall")}


def test_preflight_lists_missing_files_as_obtainable_and_reads_present_ones(tmp_path):
    from lamo_ray.preflight import check_continual, check_datasets

    cfg = continual_trial(str(tmp_path / "2M" / "{task}-v2.npz"))
    write_buffer(tmp_path / "2M" / "reach-v2.npz")
    checks, datasets = check_datasets([cfg], generate=True)
    by_source = {c.name: c for c in checks}
    present, missing = str(tmp_path / "2M" / "reach-v2.npz"), str(tmp_path / "2M" / "hammer-v2.npz")
    assert by_source[present].ok and "2 trajectories, 400 transitions" in by_source[present].detail
    assert not by_source[missing].ok and by_source[missing].obtainable and HUB in by_source[missing].detail
    assert all(c.ok for c in check_continual([cfg], datasets))   # data_max: no recorded expert return needed
