"""Text for LaMo's auxiliary language-modelling loss (REFERENCE.md "Loss": WikiText-103 raw v1,
the backbone's own tokenizer, 1024-token blocks, batch 2).

``language.corpus`` is either ``wikitext-103-raw-v1`` (read with the `datasets` library; needs the
network or a local Hugging Face datasets cache) or a local ``.txt`` file / folder of text files.
A corpus that cannot be had is a `CorpusError`, never replaced by other text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

WIKITEXT = "wikitext-103-raw-v1"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


class CorpusError(ValueError):
    """The configured corpus or tokenizer cannot be loaded. The message names it."""


def read_corpus(corpus: str) -> str:
    """All text of the corpus as one string.

    Raises:
        CorpusError: path missing / empty, or WikiText requested without `datasets` or network.
    """
    if corpus == WIKITEXT:
        try:
            import datasets  # noqa: PLC0415
        except ImportError:
            raise CorpusError(f"language.corpus={corpus!r} needs the `datasets` package "
                              "(pip install datasets) and network access, or give a local text path") from None
        try:
            ds = datasets.load_dataset("wikitext", corpus, split="train")
        except Exception as err:  # noqa: BLE001
            raise CorpusError(f"language.corpus={corpus!r} could not be loaded ({err}); "
                              "give a local text file or folder instead") from None
        return "".join(ds["text"])
    path = Path(corpus).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    else:
        raise CorpusError(f"language.corpus: {corpus!r} is neither {WIKITEXT!r} nor an existing file or folder")
    text = "\n".join(p.read_text(errors="replace") for p in files)
    if not text.strip():
        raise CorpusError(f"language.corpus: {corpus!r} holds no text")
    return text


def load_tokenizer(backbone: str):
    """The backbone's own tokenizer (hub id from the local cache, or a local directory).

    Raises:
        CorpusError: the tokenizer is not available.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(backbone)
    except Exception as err:  # noqa: BLE001
        raise CorpusError(f"tokenizer for model.backbone={backbone!r} is not available: {err}") from None


def tokenize_blocks(text: str, tokenizer, block_size: int) -> torch.Tensor:
    """Tokenise and cut into non-overlapping blocks: (N, block_size) int64.

    Raises:
        CorpusError: the text yields fewer than ``block_size`` tokens.
    """
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    n = len(ids) // block_size
    if n == 0:
        raise CorpusError(f"corpus has {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


class TextBlockSampler:
    """Seeded uniform sampling of text blocks: ``sample(batch_size) -> (batch_size, block_size)``."""

    def __init__(self, blocks: torch.Tensor, seed: int):
        self.blocks = blocks
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> torch.Tensor:
        idx = self.rng.integers(0, len(self.blocks), size=batch_size)
        return self.blocks[torch.as_tensor(idx)]


def text_sampler(corpus: str, backbone: str, block_size: int, seed: int) -> TextBlockSampler:
    """Corpus -> tokenizer -> blocks -> sampler, in one call (used by the train loop)."""
    blocks = tokenize_blocks(read_corpus(corpus), load_tokenizer(backbone), block_size)
    log.info("language corpus %s: %d blocks of %d tokens", corpus, len(blocks), block_size)
    return TextBlockSampler(blocks, seed)
