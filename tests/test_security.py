"""Security regression guards (issue 6): no loader that can run code from a file, no dynamic code
execution, no shell, and whatever the project starts listens on 127.0.0.1 only.

The scanner reads the syntax tree of every Python file the project ships (``lamo_ray/``,
``benchmarks/``), so comments and docstrings do not count and ``model.eval()`` is not ``eval``.
`test_scanner_flags_unsafe_snippets` shows it does catch each pattern it looks for.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for d in ("lamo_ray", "benchmarks") for p in (REPO / d).rglob("*.py"))

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader"}
LOOPBACK = "127.0.0.1"


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str):
    """The constant value of keyword ``name`` (missing: None; not a constant: ...)."""
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else ...
    return None


def unsafe_uses(source: str) -> list[str]:
    """Unsafe loaders / execution / network binds in ``source``, as 'line N: what' strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in UNSAFE_MODULES:
                found.append(f"line {line}: from {node.module} import ...")
            if module == "torch" and any(a.name == "load" for a in node.names):
                found.append(f"line {line}: from torch import load (bypasses the weights_only check)")
            if module == "yaml" and any(a.name in UNSAFE_YAML | UNSAFE_YAML_LOADERS for a in node.names):
                found.append(f"line {line}: from yaml import an unsafe loader")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("eval", "exec", "compile", "__import__"):
                found.append(f"line {line}: {name}()")
            elif name == "torch.load" and _kw(node, "weights_only") is not True:
                found.append(f"line {line}: torch.load without weights_only=True")
            elif name.startswith("yaml.") and name.split(".", 1)[1] in UNSAFE_YAML:
                found.append(f"line {line}: {name} (use yaml.safe_load)")
            elif name.endswith((".read_pickle", ".to_pickle")) or name in ("torch.jit.load",):
                found.append(f"line {line}: {name}")
            elif name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") is not False:
                found.append(f"line {line}: {name} without allow_pickle=False")
            elif name in ("os.system", "os.popen"):
                found.append(f"line {line}: {name}")
            elif name.startswith("subprocess.") and _kw(node, "shell") not in (None, False):
                found.append(f"line {line}: {name}(shell=...)")
            elif _kw(node, "trust_remote_code") not in (None, False):
                found.append(f"line {line}: trust_remote_code")
            elif name == "ray.init" and _kw(node, "address") is None and _kw(node, "include_dashboard") is not False \
                    and _kw(node, "dashboard_host") != LOOPBACK:
                found.append(f"line {line}: local ray.init with a dashboard not bound to {LOOPBACK}")
        elif isinstance(node, ast.Attribute) and node.attr in UNSAFE_YAML_LOADERS and _dotted(node.value) == "yaml":
            found.append(f"line {line}: yaml.{node.attr}")
    return found


@pytest.mark.parametrize("snippet", [
    "import pickle", "from cloudpickle import loads", "import joblib",
    "torch.load(path)", "torch.load(path, weights_only=False)", "from torch import load",
    "yaml.load(text)", "yaml.load(text, Loader=yaml.Loader)", "yaml.unsafe_load(text)", "yaml.full_load(text)",
    "eval('1 + 1')", "exec(code)", "os.system('ls')", "subprocess.run(cmd, shell=True)",
    "np.load(path, allow_pickle=True)", "np.load(path)", "pd.read_pickle(path)",
    "AutoModel.from_pretrained(name, trust_remote_code=True)",
    "ray.init(include_dashboard=True)", "ray.init(dashboard_host='0.0.0.0')",
])
def test_scanner_flags_unsafe_snippets(snippet):
    assert unsafe_uses(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "torch.load(path, map_location='cpu', weights_only=True)", "yaml.safe_load(text)", "yaml.safe_dump(x)",
    "model.eval()", "np.load(path, allow_pickle=False)", "subprocess.run(['npm', 'pack'], capture_output=True)",
    "ray.init(include_dashboard=True, dashboard_host='127.0.0.1')", "ray.init(address=addr)",
    "ray.init(include_dashboard=False)",
])
def test_scanner_accepts_safe_snippets(snippet):
    assert unsafe_uses(snippet) == []


def test_shipped_code_has_no_unsafe_loaders_or_execution():
    assert len(SHIPPED) > 10
    problems = [f"{p.relative_to(REPO)} {hit}" for p in SHIPPED for hit in unsafe_uses(p.read_text())]
    assert problems == []


def test_checkpoints_keep_weights_in_safetensors():
    """Model weights go through safetensors; the one torch.load is the optimizer state's."""
    tree = ast.parse((REPO / "lamo_ray" / "checkpoint.py").read_text())
    torch_loads = {fn.name: [c for c in ast.walk(fn) if isinstance(c, ast.Call) and _dotted(c.func) == "torch.load"]
                   for fn in tree.body if isinstance(fn, ast.FunctionDef)}
    assert {name for name, calls in torch_loads.items() if calls} == {"load_optimizer_state"}
    weights = next(fn for fn in tree.body if isinstance(fn, ast.FunctionDef) and fn.name == "load_weights_into")
    assert any(isinstance(c, ast.Call) and _dotted(c.func) == "load_model" for c in ast.walk(weights))


def test_readme_servers_bind_to_loopback():
    """Every command the README tells users to run that opens a port binds it to 127.0.0.1."""
    readme = (REPO / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines()
                if re.search(r"\b(mlflow (ui|server)|ray start|ray dashboard)\b", line)]
    assert any("mlflow ui" in c for c in commands) and any("ray start --head" in c for c in commands)
    for command in commands:
        if "mlflow ui" in command or "mlflow server" in command:
            assert re.search(r"--host[ =]127\.0\.0\.1", command), command
        if "ray start --head" in command:
            assert "--dashboard-host=127.0.0.1" in command, command
