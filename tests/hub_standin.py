"""A small local stand-in for the Hugging Face Hub HTTP API, for tests.

``HubStandin(root)`` serves the repos found in a folder on 127.0.0.1, so that the real clients
(``huggingface_hub``, and ``transformers`` and ``minari``'s ``hf://`` remote, which go through it) run
their own download code against it once pointed there with ``standin_env``. Standard library only.

Emulated, as huggingface_hub 2.4 calls it (file_download.py, _snapshot_download.py, hf_api.py):

* ``HEAD|GET /<repo_id>/resolve/<rev>/<file>`` (``/datasets/<repo_id>/...`` for datasets). A regular
  (git) file answers 200 with ``ETag`` (its git blob id), ``X-Repo-Commit`` and ``Content-Length``.
  A file the Hub would store in LFS (binary, i.e. a NUL byte in its first 8000 bytes, or >= 10 MB)
  answers 302 with ``X-Repo-Commit``, ``X-Linked-Etag`` (its sha256), ``X-Linked-Size`` and a
  ``Location`` on a second port standing for the CDN (``GET /lfs/<sha256>?repo=..&file=..``): another
  origin, so the client does not follow it on HEAD and sends no auth header there, as with the real CDN.
* ``GET /api/{models,datasets}/<repo_id>[/revision/<rev>][?blobs=true]``: repo info with ``sha`` and
  ``siblings`` (with ``blobs``: ``size``, ``blobId``, and ``lfs`` for LFS files).
* ``GET /api/{models,datasets}/<repo_id>/tree/<rev>[/<path>][?recursive=true]``.
* ``GET /api/{models,datasets}?author=..&search=..&limit=..``: the repos of ``author`` whose id
  contains every ``search`` term, case-insensitively; ``sort``/``filter``/``expand``/``full`` ignored.
* Errors as the client parses them: 404 with ``X-Error-Code: RepoNotFound`` (the Hub sends 401 to
  anonymous clients; the client reads both as RepositoryNotFoundError), ``RevisionNotFound`` or
  ``EntryNotFound`` (with ``X-Repo-Commit``, so the client caches the absence as with the Hub).

Not emulated: writes (create_repo, commits, uploads), auth, private and gated repos (tokens are
ignored), branches and tags other than ``main`` (a repo's revisions are ``main`` and its commit sha,
a fake one derived from its content), Xet (no ``X-Xet-Hash``, so clients download over plain HTTP as
for a non-Xet repo), ``Range`` requests, pagination (one page, no ``Link``), ``paths-info``,
telemetry, spaces. Anything else is a 404 without ``X-Error-Code`` (a plain ``HfHubHTTPError`` in the
client), and is listed in ``HubStandin.misses``.

Layout: ``root/models/<org>/<name>/<files>`` and ``root/datasets/<org>/<name>/<files>``, the org
being optional (``root/models/gpt2/<files>``). A folder is a repo if it holds a file directly;
``add_model_repo``/``add_dataset_repo`` write a ``.gitattributes`` there, as the Hub does on creating
a repo. Repos are read from disk at each request (hashes memoised by size and mtime), so files may be
added while the stand-in runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

_LFS_MIN_SIZE = 10 * 1024 * 1024
_DATE = "2024-01-01T00:00:00.000Z"
_GITATTRIBUTES = b"".join(b"*.%s filter=lfs diff=lfs merge=lfs -text\n" % ext
                          for ext in (b"bin", b"h5", b"hdf5", b"npz", b"pt", b"safetensors"))
_SEGMENT = r"[A-Za-z0-9][\w.-]*"
_REPO_ID = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})?")
_RESOLVE = re.compile(r"/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_API_INFO = re.compile(r"/api/(?P<kind>model|dataset)s/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<rev>[^/]+))?")
_API_TREE = re.compile(r"/api/(?P<kind>model|dataset)s/(?P<repo>[^/]+(?:/[^/]+)?)/tree/(?P<rev>[^/]+)(?P<sub>/.+)?")
_API_LIST = re.compile(r"/api/(?P<kind>model|dataset)s")


# --------------------------------------------------------------------------- repos on disk

_digests: dict[tuple[str, int, int], tuple[str, str, bool, int]] = {}


def _digest(path: Path) -> tuple[str, str, bool, int]:
    """(git blob id, sha256, kept in LFS, size) of a file, memoised by path, size and mtime."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        git, sha256, head = hashlib.sha1(b"blob %d\0" % st.st_size), hashlib.sha256(), b""
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                head = head or chunk[:8000]
                git.update(chunk)
                sha256.update(chunk)
        lfs = b"\0" in head or st.st_size >= _LFS_MIN_SIZE
        _digests[key] = (git.hexdigest(), sha256.hexdigest(), lfs, st.st_size)
    return _digests[key]


def _is_repo(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.iterdir())


class _Repo:
    """A repo folder, as the Hub describes the repo at its one commit."""

    def __init__(self, root: Path, kind: str, repo_id: str):
        folder = root / f"{kind}s" / repo_id
        self.kind, self.repo_id = kind, repo_id
        self.files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        self.digests = {name: _digest(p) for name, p in self.files.items()}
        listing = "".join(f"{name}\0{d[0]}\n" for name, d in self.digests.items())
        self.sha = hashlib.sha1(listing.encode()).hexdigest()

    @staticmethod
    def load(root: Path, kind: str, repo_id: str) -> _Repo | None:
        ok = _REPO_ID.fullmatch(repo_id) and _is_repo(root / f"{kind}s" / repo_id)
        return _Repo(root, kind, repo_id) if ok else None

    def _lfs(self, name: str, sha_key: str) -> dict | None:
        _, sha256, lfs, size = self.digests[name]
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        return {sha_key: sha256, "size": size, "pointerSize": len(pointer)} if lfs else None

    def info(self, siblings: bool, blobs: bool = False) -> dict:
        """The JSON of ``/api/<kind>s/<repo_id>`` (``siblings``) or of a listing entry."""
        org = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        info = {"_id": self.sha[:24], "id": self.repo_id, "author": org, "sha": self.sha, "lastModified": _DATE,
                "createdAt": _DATE, "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": []}
        if self.kind == "model":
            info["modelId"] = self.repo_id
        if siblings:
            info["siblings"] = [{"rfilename": name} if not blobs else
                                {"rfilename": name, "size": d[3], "blobId": d[0], "lfs": self._lfs(name, "sha256")}
                                for name, d in self.digests.items()]
        return info

    def tree(self, sub: str, recursive: bool) -> list[dict] | None:
        """The entries of ``/tree/<rev>/<sub>``; None if ``sub`` is not a folder of the repo."""
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        names = [name for name in self.files if name.startswith(prefix)]
        if prefix and not names:
            return None
        folders, files = set(), []
        for name in names:
            parts = name[len(prefix):].split("/")
            depth = len(parts) if recursive else min(len(parts), 2)  # the folders above the file, or the first
            folders.update(prefix + "/".join(parts[:i]) for i in range(1, depth))
            if recursive or len(parts) == 1:
                files.append(name)
        entries = [{"type": "directory", "oid": hashlib.sha1(f"{self.sha}:{d}".encode()).hexdigest(), "size": 0,
                    "path": d} for d in sorted(folders)]
        for name in files:
            oid, _, _, size = self.digests[name]
            entry = {"type": "file", "oid": oid, "size": size, "path": name}
            if lfs := self._lfs(name, "oid"):
                entry["lfs"] = lfs
            entries.append(entry)
        return entries


def _repo_ids(root: Path, kind: str, author: str | None) -> list[str]:
    """Ids of the repos of one kind, of ``author`` if given."""
    base = root / f"{kind}s"
    if author is not None and not re.fullmatch(_SEGMENT, author):
        return []
    owners = [base / author] if author else sorted(base.iterdir()) if base.is_dir() else []
    ids = []
    for owner in owners:
        if _is_repo(owner):  # a repo without an org
            ids += [] if author else [owner.name]
        elif owner.is_dir():
            ids += [f"{owner.name}/{p.name}" for p in sorted(owner.iterdir()) if _is_repo(p)]
    return ids


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # the clients download with up to 8-10 threads
    daemon_threads = True
    standin: HubStandin


class _Handler(BaseHTTPRequestHandler):
    """Each response closes its connection (HTTP/1.0), so nothing is served once the stand-in stops."""

    server: _Server

    def log_message(self, format, *args):  # quiet: HubStandin.requests records them
        pass

    def do_GET(self):
        standin = self.server.standin
        line = f"{self.command} {self.path}"
        with standin._lock:
            standin.requests.append(line)
        url = urlsplit(self.path)
        if not self._route(unquote(url.path), parse_qs(url.query)):
            with standin._lock:
                standin.misses.append(line)
            self._error(404, None, f"HubStandin does not emulate {line}")

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _route(self, path: str, params: dict[str, list[str]]) -> bool:
        """Answer an emulated request; False if it is not one."""
        hub, get = self.server is not self.server.standin._cdn_server, self.command == "GET"
        if self.command not in ("GET", "HEAD"):
            return False
        if not hub and (m := re.fullmatch(r"/lfs/(?P<sha256>[0-9a-f]{64})", path)):
            self._cdn(m["sha256"], params)
        elif hub and not path.startswith("/api/") and (m := _RESOLVE.fullmatch(path)):
            self._resolve("dataset" if m["kind"] else "model", m["repo"], m["rev"], m["file"])
        elif hub and get and (m := _API_INFO.fullmatch(path)):
            if repo := self._repo(m["kind"], m["repo"], m["rev"] or "main"):
                self._json(repo.info(siblings=True, blobs=params.get("blobs", [""])[0].lower() in ("1", "true")))
        elif hub and get and (m := _API_TREE.fullmatch(path)):
            self._api_tree(m["kind"], m["repo"], m["rev"], m["sub"] or "", params)
        elif hub and get and (m := _API_LIST.fullmatch(path)):
            self._api_list(m["kind"], params)
        else:
            return False
        return True

    # ------------------------------------------------------------------ routes

    def _resolve(self, kind: str, repo_id: str, rev: str, file: str) -> None:
        if (repo := self._repo(kind, repo_id, rev)) is None:
            return
        if file not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
        oid, sha256, lfs, size = repo.digests[file]
        if not lfs:
            return self._send(200, repo.files[file], {"X-Repo-Commit": repo.sha, "ETag": f'"{oid}"'})
        query = urlencode({"repo": f"{kind}/{repo_id}", "file": file})
        self._send(302, b"", {"X-Repo-Commit": repo.sha, "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(size),
                              "Location": f"{self.server.standin.cdn}/lfs/{sha256}?{query}"})

    def _cdn(self, sha256: str, params: dict[str, list[str]]) -> None:
        kind, _, repo_id = params.get("repo", [""])[0].partition("/")
        file = params.get("file", [""])[0]
        repo = _Repo.load(self.server.standin.root, kind, repo_id) if kind in ("model", "dataset") else None
        if repo is None or file not in repo.files or repo.digests[file][1] != sha256:
            return self._error(404, None, "No such object")
        self._send(200, repo.files[file], {"ETag": f'"{sha256}"'})

    def _api_tree(self, kind: str, repo_id: str, rev: str, sub: str, params: dict[str, list[str]]) -> None:
        if (repo := self._repo(kind, repo_id, rev)) is None:
            return
        entries = repo.tree(sub, params.get("recursive", [""])[0].lower() in ("1", "true"))
        if entries is None:
            return self._error(404, "EntryNotFound", f"{sub.strip('/')} does not exist on {rev}")
        self._json(entries)

    def _api_list(self, kind: str, params: dict[str, list[str]]) -> None:
        root = self.server.standin.root
        terms = [term.lower() for term in params.get("search", [])]
        ids = [i for i in _repo_ids(root, kind, params.get("author", [None])[0]) if all(t in i.lower() for t in terms)]
        if "limit" in params:
            ids = ids[: int(params["limit"][0])]
        self._json([_Repo(root, kind, i).info(siblings=False) for i in ids])

    # ------------------------------------------------------------------ responses

    def _repo(self, kind: str, repo_id: str, rev: str) -> _Repo | None:
        """The repo at ``rev``, or None once the Hub's 404 is sent."""
        repo = _Repo.load(self.server.standin.root, kind, repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        elif rev not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        else:
            return repo
        return None

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
        self._send(status, json.dumps({"error": message}).encode(),
                   {**({"X-Error-Code": code} if code else {}), "X-Error-Message": message, **(headers or {})})

    def _json(self, data) -> None:
        self._send(200, json.dumps(data).encode())

    def _send(self, status: int, body: bytes | Path, headers: dict | None = None) -> None:
        """Answer with ``body``, JSON bytes or a file; HEAD gets the same headers and no body."""
        file = isinstance(body, Path)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if file else "application/json")
        self.send_header("Content-Length", str(body.stat().st_size if file else len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if file:
            with body.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)
        else:
            self.wfile.write(body)


class HubStandin:
    """Context manager serving the repos under ``root`` at a free port of 127.0.0.1 (see the module doc).

    ``root``: a folder laid out as ``root/models/<org>/<name>/<files...>`` and
    ``root/datasets/<org>/<name>/<files...>`` (org optional: ``root/models/gpt2/...``).

    ``endpoint``: ``"http://127.0.0.1:PORT"``, set on entering; give it to ``standin_env``.
    ``cdn``: the origin LFS files are redirected to (another port).
    ``requests``: every request seen by either, as ``"GET /api/..."`` (method and path with query, the
    CDN's starting with ``/lfs/``), in arrival order; appended under a lock from the server threads.
    ``misses``: those not emulated (answered 404 without ``X-Error-Code``), e.g. to assert it is empty.
    Entering starts the two servers on daemon threads; leaving stops them.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.endpoint = self.cdn = ""
        self.requests: list[str] = []
        self.misses: list[str] = []
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._cdn_server: _Server | None = None

    def __enter__(self) -> Self:
        for _ in ("hub", "cdn"):
            server = _Server(("127.0.0.1", 0), _Handler)
            server.standin = self
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name=f"HubStandin:{server.server_address[1]}").start()
            self._servers.append(server)
        self._cdn_server = self._servers[1]
        self.endpoint, self.cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []


# --------------------------------------------------------------------------- publishing


def _add_repo(root: Path, kind: str, repo_id: str, files: dict[str, bytes]) -> None:
    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"Not a repo id: {repo_id!r}")
    folder = Path(root) / f"{kind}s" / repo_id
    if not (folder / ".gitattributes").exists():
        files = {".gitattributes": _GITATTRIBUTES, **files}
    for name, data in files.items():
        target = folder / name
        if not target.resolve().is_relative_to(folder.resolve()) or name.startswith("/"):
            raise ValueError(f"Not a path inside the repo: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def add_model_repo(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Add (or add files to) the model repo ``repo_id``: ``files`` maps repo paths (``"a/b.json"``) to
    contents. A ``.gitattributes`` is written too if the repo has none."""
    _add_repo(root, "model", repo_id, files)


def add_dataset_repo(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Same as ``add_model_repo`` for the dataset repo ``repo_id``."""
    _add_repo(root, "dataset", repo_id, files)


def add_minari_dataset(root: Path, dataset_id: str, local_dataset_dir: Path, author: str = "farama-minari") -> None:
    """Publish a local Minari dataset as Minari's ``hf://<author>`` remote holds it.

    ``local_dataset_dir``: the dataset folder (``<store>/<namespace>/<name>-vN``, holding
    ``data/{main_data.hdf5,metadata.json}``) whose ``data/metadata.json`` has ``dataset_id``, which
    must have a namespace (``D4RL/kitchen/complete-v2``, ``pendulum/random-v0``). As ``minari`` 0.5's
    ``HuggingFaceStorage.upload_namespace`` and ``upload_dataset`` would, this writes into the
    dataset repo ``<author>/<first namespace part>`` (``farama-minari/D4RL``): the folder's files under
    ``<rest of the id>/`` (``kitchen/complete-v2/data/...``), each sub-namespace's
    ``namespace_metadata.json`` (``kitchen/namespace_metadata.json``, copied from the local store if
    there, else ``{}``), and the root ``namespace_metadata.json``, whose ``datasets`` and
    ``namespaces`` lists gain the dataset and its sub-namespaces.
    """
    local_dataset_dir = Path(local_dataset_dir).resolve()
    metadata = json.loads((local_dataset_dir / "data" / "metadata.json").read_text())
    if metadata.get("dataset_id") != dataset_id:
        raise ValueError(f"{local_dataset_dir} holds {metadata.get('dataset_id')!r}, not {dataset_id!r}")
    repo_name, _, path_in_repo = dataset_id.partition("/")
    if not path_in_repo:
        raise ValueError(f"Minari's hf:// remote needs a namespace in the dataset id: {dataset_id!r}")
    repo_folder = Path(root) / "datasets" / author / repo_name
    files = {f"{path_in_repo}/{p.relative_to(local_dataset_dir).as_posix()}": p.read_bytes()
             for p in sorted(local_dataset_dir.rglob("*")) if p.is_file()}

    parts = dataset_id.split("/")[:-1]  # D4RL, kitchen
    namespaces = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # D4RL, D4RL/kitchen
    local = {ns: local_dataset_dir.parents[len(parts) - 1 - i] / "namespace_metadata.json"
             for i, ns in enumerate(namespaces)}
    for ns in namespaces[1:]:
        target = f"{ns.partition('/')[2]}/namespace_metadata.json"
        if not (repo_folder / target).exists():
            files[target] = local[ns].read_bytes() if local[ns].is_file() else b"{}"
    source = next((p for p in (repo_folder / "namespace_metadata.json", local[repo_name]) if p.is_file()), None)
    top = json.loads(source.read_text()) if source else {}
    top["datasets"] = sorted({*top.get("datasets", []), dataset_id})
    top["namespaces"] = sorted({*top.get("namespaces", []), *namespaces[1:]})
    files["namespace_metadata.json"] = json.dumps(top).encode()
    add_dataset_repo(root, f"{author}/{repo_name}", files)


# --------------------------------------------------------------------------- test inputs


def make_pendulum_dataset(dataset_id: str, store: Path, episodes: int, steps: int) -> Path:
    """A Minari dataset ``dataset_id`` in the store ``store``: ``episodes`` episodes of ``steps``
    uniform-random actions on ``Pendulum-v1`` (reset seeds 0, 1, ...; `lamo_ray.episodes.run_episode`),
    written with `lamo_ray.episodes.write_minari` (``minari.DataCollector`` would need jax). The
    caller's ``MINARI_DATASETS_PATH`` is left as it was. Returns the dataset's folder."""
    import os

    import gymnasium as gym
    import numpy as np
    from minari.data_collector import EpisodeBuffer

    from lamo_ray.episodes import dataset_path, run_episode, uniform_random, write_minari

    env = gym.make("Pendulum-v1", max_episode_steps=steps)
    policy = uniform_random(env, np.random.default_rng(0))
    buffers = [EpisodeBuffer(id=seed, seed=seed, **run_episode(env, policy, seed)) for seed in range(episodes)]
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(store)
    try:
        path = dataset_path(dataset_id)
        write_minari(dataset_id, path, buffers, env=env, eval_env=env, algorithm_name="uniform random actions",
                     code_permalink="tests/hub_standin.py", description="test data")
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    return path


def make_tiny_gpt2(folder: Path):
    """A pre-trained-looking tiny GPT-2 (1 layer, 16 wide, 64 tokens, seed 0) saved with
    ``save_pretrained`` into ``folder``; returns the model."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64,
                                                                 n_positions=64, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(folder)
    return model


# --------------------------------------------------------------------------- clients


def standin_env(monkeypatch, endpoint: str, home: Path) -> None:
    """Point huggingface_hub (so transformers and minari too) at ``endpoint``, with ``HF_HOME=home``.

    Sets ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_DISABLE_TELEMETRY=1`` and removes the cache, token
    and offline variables from the environment (for subprocesses; tokens are read at call time). The
    environment alone is not enough in this process: huggingface_hub reads it into
    ``huggingface_hub.constants`` at import, and some objects keep the endpoint of their creation.
    So this also patches (``monkeypatch`` undoes all of it):

    * ``constants.ENDPOINT``: the endpoint of every ``HfApi()`` created afterwards (snapshot_download,
      minari's remote), of transformers' error messages and of the Xet and telemetry routes;
    * ``constants.HUGGINGFACE_CO_URL_TEMPLATE``: ``hf_hub_url`` builds every ``/resolve/`` URL from it,
      not from ``ENDPOINT``: left alone, hf_hub_download would HEAD huggingface.co;
    * ``huggingface_hub.hf_api.api.endpoint``: the module-level ``HfApi`` behind the functions
      ``huggingface_hub.model_info``, ``list_datasets``, ``list_repo_tree``, ...;
    * ``transformers.utils.hub._hf_api`` (reset to None, transformers is imported if installed): the
      ``HfApi`` transformers shares, created once with the endpoint of the time, which it uses to
      list repo files and chat templates;
    * the paths under HF_HOME: ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ASSETS_CACHE``, ``HF_XET_CACHE``,
      ``HF_TOKEN_PATH``, ``HF_STORED_TOKENS_PATH``, ``AGENT_HARNESSES_PATH``,
      ``CHECK_FOR_UPDATE_DONE_PATH``, ``CHECK_FOR_SKILL_UPDATE_DONE_PATH``: nothing is read from or
      written to the user's cache, and no stored token is sent;
    * ``HF_HUB_OFFLINE = False``: ``is_offline_mode()`` returns it, and tests may run with
      ``HF_HUB_OFFLINE=1`` to keep the real Hub away; the stand-in is local;
    * ``HF_HUB_DISABLE_TELEMETRY = True``: otherwise the first request of the process, building the
      user agent, first fetches ``<ENDPOINT>/api/agent-harnesses`` (at most once a process, whichever
      endpoint is set then) and the agent registry is cached in HF_HOME; this keeps
      ``HubStandin.requests`` the same whatever ran before.
    """
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    endpoint, home = endpoint.rstrip("/"), str(home)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", home)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE",
                "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(var, raising=False)
    patched = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": home,
        "HF_HUB_CACHE": f"{home}/hub",
        "HF_ASSETS_CACHE": f"{home}/assets",
        "HF_XET_CACHE": f"{home}/xet",
        "HF_TOKEN_PATH": f"{home}/token",
        "HF_STORED_TOKENS_PATH": f"{home}/stored_tokens",
        "AGENT_HARNESSES_PATH": f"{home}/.agent_harnesses.json",
        "CHECK_FOR_UPDATE_DONE_PATH": f"{home}/.check_for_update_done",
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": f"{home}/.check_for_skill_update_done",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)
    if importlib.util.find_spec("transformers") is not None:
        import transformers.utils.hub

        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
