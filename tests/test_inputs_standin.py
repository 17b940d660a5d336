"""The sweep's fetch step against a stand-in Hugging Face hub on 127.0.0.1 (tests/hub_standin.py),
through the libraries' own endpoint settings: a pre-trained backbone into the HF cache, a Minari
dataset from Minari's hf:// remote, WikiText through `datasets` (issue 16). No test reaches the internet."""

from __future__ import annotations

import io

import pytest
import torch
import transformers
from hub_standin import (HubStandin, add_dataset_repo, add_minari_dataset, add_model_repo, make_pendulum_dataset,
                         make_tiny_gpt2, standin_env)

from lamo_ray import inputs
from lamo_ray.config import validate_trial
from lamo_ray.preflight import check_backbone, check_corpora, check_datasets

BACKBONE = "standin-org/tiny-gpt2"
DATASET = "D4RL/pendulum/random-v0"
PROBE = "HEAD /"  # lamo_ray.inputs.probe: is the endpoint there at all (the stand-in has no page at /)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("MINARI_REMOTE", "hf://farama-minari")
    monkeypatch.setenv("LAMO_RAY_HOME", str(tmp_path / "lamo"))
    with HubStandin(tmp_path / "hub") as standin:
        standin_env(monkeypatch, standin.endpoint, tmp_path / "hf_home")
        yield standin


def publish_tiny_gpt2(hub, tmp_path) -> transformers.PreTrainedModel:
    model = make_tiny_gpt2(tmp_path / "made")
    add_model_repo(hub.root, BACKBONE, {p.name: p.read_bytes() for p in (tmp_path / "made").iterdir()}
                   | {"pytorch_model.bin": b"\0" * 64, "README.md": b"not needed"})
    return model


def publish_pendulum(hub, tmp_path):
    made = make_pendulum_dataset(DATASET, tmp_path / "made_minari", episodes=3, steps=10)
    add_minari_dataset(hub.root, DATASET, made)


def trial(**language):
    return validate_trial({"data": {"source": DATASET}, "model": {"backbone": BACKBONE, "pretrained": True},
                           "language": language or {"co_lambda": 0.0}, "eval": {"env_id": "Pendulum-v1"}})


def test_sweep_fetches_backbone_and_minari_dataset_then_the_preflight_passes(hub, tmp_path, monkeypatch):
    model = publish_tiny_gpt2(hub, tmp_path)
    publish_pendulum(hub, tmp_path)
    configs = [trial()]
    planned = inputs.plan_inputs(configs)
    assert [(i.kind, i.name, i.what) for i in planned] == [("dataset", DATASET, "Minari dataset"),
                                                           ("backbone", BACKBONE, "config, weights")]
    assert not hub.requests  # planning reads only local stores
    lines = []
    assert inputs.fetch_inputs(planned, offline=False, say=lines.append) == []
    assert hub.requests[0] == PROBE and hub.requests.count(PROBE) == 1  # one probe for both (same endpoint)
    assert hub.misses == [PROBE], hub.misses
    assert sum(ln.startswith("  cannot reach") or "failed" in ln for ln in lines) == 0, lines
    size = sum(p.stat().st_size for p in (tmp_path / "made").iterdir())  # config, generation config, weights
    assert any(ln.startswith(f"  backbone {BACKBONE}: ") and f"(3 files, {inputs.format_bytes(size)})" in ln
               for ln in lines), lines

    # the backbone: config + safetensors only (not the .bin, not the README)
    snapshot = next((tmp_path / "hf_home" / "hub" / "models--standin-org--tiny-gpt2" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    check = check_backbone(BACKBONE, pretrained=True)
    assert check.ok and "local Hugging Face cache" in check.detail
    from lamo_ray.backbones import load_config, load_pretrained

    loaded = load_pretrained(BACKBONE, load_config(BACKBONE))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    checks, datasets = check_datasets(configs, generate=False)
    assert all(c.ok for c in checks), checks
    assert len(datasets[DATASET].trajectories) == 3 and datasets[DATASET].num_transitions == 30

    served = len(hub.requests)
    assert inputs.plan_inputs(configs) == [] and len(hub.requests) == served  # nothing left, nothing asked


def test_missing_repo_is_one_failed_line_and_the_preflight_names_it(hub, tmp_path):
    lines = []
    planned = inputs.plan_inputs([validate_trial({"data": {"source": "lamo/reacher/mixed-v0"},
                                                  "model": {"backbone": "standin-org/none", "pretrained": True}})])
    assert inputs.fetch_inputs(planned, offline=False, say=lines.append) == ["standin-org/none"]
    assert [ln for ln in lines if "fetch failed" in ln] == [lines[-1]]
    assert "standin-org/none" in lines[-1]
    assert hub.requests == [PROBE, "GET /api/models/standin-org/none?blobs=true"]  # no retries
    check = check_backbone("standin-org/none", pretrained=True)
    assert not check.ok and check.obtainable and "hf download standin-org/none" in check.detail


def test_wikitext_is_fetched_through_datasets_and_then_read_without_the_network(hub, tmp_path, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lamo_ray import language

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    lines = [" = Valkyria Chronicles III = \n", "", " The game began development in 2010 . \n"]
    parquet = io.BytesIO()
    pq.write_table(pa.table({"text": lines}), parquet)
    readme = ("---\nconfigs:\n- config_name: wikitext-103-raw-v1\n  data_files:\n  - split: train\n"
              "    path: wikitext-103-raw-v1/train-*\n---\n# stand-in\n")
    add_dataset_repo(hub.root, language.WIKITEXT_REPO,
                     {"README.md": readme.encode(), "wikitext-103-raw-v1/train-00000-of-00001.parquet": parquet.getvalue()})
    configs = [trial(co_lambda=0.1, corpus=language.WIKITEXT)]
    (check,) = [c for c in check_corpora(configs) if c.name.startswith(language.WIKITEXT)]
    assert not check.ok and check.obtainable and language.WIKITEXT_REPO in check.detail
    planned = [i for i in inputs.plan_inputs(configs) if i.kind == "corpus"]
    assert [i.name for i in planned] == [language.WIKITEXT]
    said = []
    assert inputs.fetch_inputs(planned, offline=False, say=said.append) == [], said
    assert "3 rows" in said[-1]
    served = len(hub.requests)
    assert language.wikitext_cached() and len(hub.requests) == served
    assert language.read_corpus(language.WIKITEXT) == "".join(lines)
    assert hub.misses == [PROBE]
