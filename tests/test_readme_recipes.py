"""README's cluster recipe, run as written (issue 16): the bash block of "On a Ray cluster" in a fresh
HOME (no ``~/.ray/auth_token``, no caches), from a copy of the repository, with one substitution: the
quick start's sweep file (~10 minutes of training) becomes a 2-trial Reacher sweep of a few seconds.
Every other character of the block runs as a user would paste it (``bash -euo pipefail``): the token
export, ``ray get-auth-token --generate``, ``ray start --head`` with the default ports, and ``ray job
submit --working-dir .`` with the tracking URI under ``$PWD``.

The cluster's processes carry ``LAMO_RAY_TEST_TAG`` and are stopped by it afterwards (never ``ray
stop``: it would end every Ray process on the machine). The README's quick-start block is not run
here (it trains for ~10 minutes); docs/results.md records it run as written from a fresh clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import kill_tagged

pytestmark = [pytest.mark.slow, pytest.mark.serial]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASET_ID = "test/reacher/recipe-v0"
SWEEP = {
    "name": "recipe",
    "seeds": [0],
    "base": {
        "data": {"source": DATASET_ID, "rtg_scale": 10, "context_length": 3, "max_ep_len": 64},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1},
        "train": {"steps": 20, "batch_size": 16, "warmup_steps": 5, "eval_every": 20, "log_every": 10,
                  "cpus_per_worker": 0.49},
        "eval": {"target_returns": [-4.0], "episodes": 2, "num_actors": 1, "envs_per_actor": 2},
    },
    "scheduler": {"type": "fifo"},
    "variants": {"lamo": {"model": {"finetune": "lora", "embedding": "mlp"}},
                 "dt": {"model": {"finetune": "full", "embedding": "linear"}}},
}


def readme_block(section: str) -> str:
    """The first ```bash block after the README heading ``## <section>``."""
    text = (REPO / "README.md").read_text()
    body = text[text.index(f"## {section}\n"):]
    match = re.search(r"```bash\n(.*?)```", body, re.S)
    assert match, f"no bash block under '## {section}'"
    return match.group(1)


def test_cluster_recipe_runs_as_written_in_a_fresh_home(tmp_path):
    block = readme_block("On a Ray cluster")
    assert block.count("sweeps/quickstart.yaml") == 1
    sweep_file = tmp_path / "recipe.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    script = block.replace("sweeps/quickstart.yaml", str(sweep_file))

    work = tmp_path / "repo"  # the user's checkout: tracked files only (no .venv, no results)
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".git", ".venv", "test-artifacts", "*.db",
                                                              "mlruns", "mlartifacts", "__pycache__", ".pytest_cache"))
    home = tmp_path / "home"
    home.mkdir()
    tag = f"recipe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "HF_"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", LAMO_RAY_TEST_TAG=tag,
               MINARI_DATASETS_PATH=str(tmp_path / "minari"))
    collect = subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", DATASET_ID,
                              "--episodes", "20", "--ref-episodes", "5"], env=env, cwd=work, capture_output=True,
                             text=True, timeout=300)
    assert collect.returncode == 0, collect.stderr[-3000:]
    # `ray start` records its cluster in /tmp/ray/ray_current_cluster, which a later ray.init() without an
    # address would try to join; `ray stop` removes it, so the teardown puts back what was there
    current = Path("/tmp/ray/ray_current_cluster")
    before = current.read_text() if current.is_file() else None
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=work, capture_output=True,
                              text=True, timeout=900)
    finally:
        kill_tagged("LAMO_RAY_TEST_TAG", tag)
        if before is None:
            current.unlink(missing_ok=True)
        else:
            current.write_text(before)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    assert "Token authentication is enabled but Ray couldn't find" not in proc.stderr
    assert (home / ".ray" / "auth_token").is_file()  # made by the recipe's own line
    assert "succeeded" in (proc.stdout + proc.stderr).lower()

    client = MlflowClient(f"sqlite:///{work}/mlflow.db")  # the recipe's $PWD/mlflow.db
    runs = client.search_runs([client.get_experiment_by_name("recipe").experiment_id])
    trials = [r for r in runs if r.data.tags.get("lamo_ray.role") == "trial"]
    assert sorted(r.data.tags["variant"] for r in trials) == ["dt", "lamo"]
    assert all(r.info.status == "FINISHED" for r in runs)
