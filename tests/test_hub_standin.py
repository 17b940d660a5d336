"""The Hub stand-in (tests/hub_standin.py) works with the real clients: huggingface_hub, transformers
and minari download from it through their own code, with HF_ENDPOINT pointing at it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hub_standin import (
    HubStandin,
    add_dataset_repo,
    add_minari_dataset,
    add_model_repo,
    make_pendulum_dataset,
    standin_env,
)

SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "hello world, hello hub"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running stand-in serving ``tmp_path/hub``, with the clients pointed at it and HF_HOME in tmp_path."""
    with HubStandin(tmp_path / "hub") as standin:
        standin_env(monkeypatch, standin.endpoint, tmp_path / "hf_home")
        yield standin


def test_hub_api_and_downloads(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    weights = bytes(range(256)) * 40  # binary: served like an LFS file, through the "CDN" redirect
    add_model_repo(hub.root, "standin-org/m", {"config.json": b'{"n": 1}', "weights.bin": weights,
                                                "extra/notes.txt": b"not wanted"})
    add_model_repo(hub.root, "gpt2", {"config.json": b"{}"})  # no org
    add_dataset_repo(hub.root, "farama-minari/D4RL", {"kitchen/a.json": b"[1]", "pen/b.json": b"[2]"})
    add_dataset_repo(hub.root, "farama-minari/other", {"x.txt": b"x"})
    add_dataset_repo(hub.root, "someone-else/D4RL-copy", {"x.txt": b"x"})

    folder = snapshot_download("standin-org/m", allow_patterns=["*.json", "*.bin"])
    assert sorted(p.name for p in Path(folder).iterdir()) == ["config.json", "weights.bin"]
    assert (tmp_path / "hf_home" / "hub" / "models--standin-org--m" / "snapshots").is_dir()
    assert Path(folder, "weights.bin").read_bytes() == weights
    head = next(r for r in hub.requests if r.startswith("HEAD") and r.endswith("/weights.bin"))
    assert head.startswith("HEAD /standin-org/m/resolve/") and any(r.startswith("GET /lfs/") for r in hub.requests)
    assert Path(hf_hub_download("gpt2", "config.json")).read_bytes() == b"{}"

    info = HfApi().model_info("standin-org/m", files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["weights.bin"] == len(weights) and sizes["config.json"] == 8 and len(info.sha) == 40
    assert {s.rfilename: s.lfs is not None for s in info.siblings}["weights.bin"]
    dataset_info = HfApi().dataset_info("farama-minari/D4RL", files_metadata=True)
    assert sum(s.size for s in dataset_info.siblings if s.rfilename != ".gitattributes") == 6

    listed = HfApi().list_datasets(author="farama-minari", dataset_name="D4RL")
    assert [d.id for d in listed] == ["farama-minari/D4RL"]
    assert hub.requests[-1] == "GET /api/datasets?author=farama-minari&search=D4RL"

    local = snapshot_download("farama-minari/D4RL", repo_type="dataset", allow_patterns="kitchen/*",
                              local_dir=tmp_path / "local")
    assert Path(local, "kitchen/a.json").read_text() == "[1]" and not (tmp_path / "local" / "pen").exists()
    path = hf_hub_download("farama-minari/D4RL", "pen/b.json", repo_type="dataset", local_dir=tmp_path / "local")
    assert Path(path).read_text() == "[2]"
    assert not hub.misses


def test_missing_repo_and_file_raise_the_clients_errors_at_once(hub):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    add_model_repo(hub.root, "standin-org/m", {"config.json": b"{}"})
    start = time.monotonic()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("standin-org/missing", "config.json")
    assert hub.requests == ["HEAD /standin-org/missing/resolve/main/config.json"]  # no retry
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("standin-org/missing")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("standin-org/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("standin-org/m", "config.json", repo_type="dataset")
    with pytest.raises(EntryNotFoundError):  # what minari catches for a missing namespace_metadata.json
        hf_hub_download("standin-org/m", "missing.json")
    assert len(hub.requests) == 5 and time.monotonic() - start < 2


def test_tiny_gpt2_loads_through_transformers(hub, tmp_path):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        GPT2TokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    torch.manual_seed(0)
    end = tokenizer.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=16, vocab_size=len(tokenizer),
                                       bos_token_id=end, eos_token_id=end))
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    add_model_repo(hub.root, "standin-org/tiny-gpt2", {p.name: p.read_bytes() for p in saved.iterdir()})

    config = AutoConfig.from_pretrained("standin-org/tiny-gpt2")
    loaded = AutoModelForCausalLM.from_pretrained("standin-org/tiny-gpt2")
    loaded_tokenizer = AutoTokenizer.from_pretrained("standin-org/tiny-gpt2")

    assert (config.n_layer, config.n_embd, config.vocab_size) == (1, 8, len(tokenizer))
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
    assert loaded_tokenizer("the cat sat").input_ids == tokenizer("the cat sat").input_ids
    assert any(r.startswith("GET /lfs/") for r in hub.requests)  # the safetensors came through the redirect
    assert not hub.misses, hub.misses  # e.g. transformers' extra calls: revision, tree listings, optional files


def test_minari_dataset_round_trip(hub, tmp_path, monkeypatch):
    import minari

    made, downloaded = tmp_path / "made", tmp_path / "downloaded"
    monkeypatch.setenv("MINARI_REMOTE", "hf://farama-minari")
    dataset_id = "D4RL/pendulum/random-v0"
    make_pendulum_dataset(dataset_id, made, episodes=3, steps=12)
    add_minari_dataset(hub.root, dataset_id, made / "D4RL" / "pendulum" / "random-v0")

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(downloaded))
    minari.download_dataset(dataset_id)
    assert not hub.misses, hub.misses
    assert (downloaded / "D4RL" / "namespace_metadata.json").is_file()
    assert (downloaded / "D4RL" / "pendulum" / "namespace_metadata.json").is_file()
    copy = minari.load_dataset(dataset_id)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(made))
    original = minari.load_dataset(dataset_id)
    assert copy.total_episodes == original.total_episodes == 3
    assert copy.total_steps == original.total_steps == 36
    for a, b in zip(copy.iterate_episodes(), original.iterate_episodes()):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert files(downloaded / "D4RL/pendulum/random-v0") == files(made / "D4RL/pendulum/random-v0")


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
