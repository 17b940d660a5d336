"""Bad input (issue 6): every bad input a user can give `python -m lamo_ray.sweep` or
`python -m lamo_ray.evaluate` fails before any compute, with exit code 2 and ONE ``error:`` line
on stderr that names the key, file or value; no traceback, no trial, nothing written.

How each case is checked (`assert_rejected`):

- the CLI entry point runs in-process: ``lamo_ray.sweep.main(argv)`` / ``lamo_ray.evaluate.main(argv)``
  is exactly what ``python -m ...`` runs, and an exception escaping it is the traceback a user
  would see (the test fails on it); `test_real_cli_matches_in_process` runs some of the same
  cases as subprocesses;
- no trial started: ``ray.init``, the sweep's local Ray start and MLflow's first contact
  (``tracking.check_tracking``, ``start_sweep_run``) are replaced by sentinels that fail the test;
- nothing written: the cwd, the Minari store, ``storage_path``, the MLflow sqlite file and
  ``RAY_TMPDIR`` all live in one tmp workspace whose tree (paths, sizes, mtimes) must not change.

`test_valid_inputs_get_past_every_check` is the control: the same base sweep and checkpoint
without the defect do reach the sentinels, so each case fails because of its own defect.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DATASET = "test/reacher/tiny-v0"  # 2 Reacher-v5 episodes of 50 steps: obs (10,), action 2
GOOD_SWEEP: dict[str, Any] = {
    "name": "bad-input",
    "base": {
        "data": {"source": DATASET, "rtg_scale": 10, "context_length": 3, "max_ep_len": 64},
        "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 8, "n_head": 1},
        "train": {"steps": 10, "batch_size": 4, "warmup_steps": 1, "eval_every": 5, "log_every": 5,
                  "cpus_per_worker": 0.5},
        "eval": {"target_returns": [-4.0], "episodes": 1, "num_actors": 1, "envs_per_actor": 1},
    },
    "scheduler": {"type": "fifo"},
}


class Reached(BaseException):
    """A bad input got as far as Ray or MLflow (BaseException: no `except Exception` swallows it)."""


# --------------------------------------------------------------------------- workspace


@pytest.fixture(scope="module")
def dataset_store(tmp_path_factory) -> Path:
    """A Minari store holding DATASET, made once by the collector CLI as a user would."""
    store = tmp_path_factory.mktemp("store")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(store))
    subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", DATASET,
                    "--episodes", "2", "--noise-levels", "0.0", "--ref-episodes", "1"],
                   env=env, check=True, capture_output=True, timeout=120)
    return store


@dataclass
class Workspace:
    root: Path

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"

    @property
    def store(self) -> Path:
        return self.root / "minari"

    @property
    def env(self) -> dict[str, str]:
        return {"MINARI_DATASETS_PATH": str(self.store), "MLFLOW_TRACKING_URI": f"sqlite:///{self.root}/mlflow.db",
                "RAY_TMPDIR": str(self.root / "ray_tmp"), "HF_HUB_OFFLINE": "1"}

    def sweep(self, *mods: tuple[str, Any], drop: tuple[str, ...] = (), text: str | None = None,
              args: tuple[str, ...] = ()) -> list[str]:
        """Write GOOD_SWEEP with ``mods`` ((dotted path, value), ...) applied; return the CLI argv."""
        path = self.cwd / "sweep.yaml"
        if text is None:
            raw = copy.deepcopy(GOOD_SWEEP)
            raw["storage_path"] = str(self.root / "results")
            for dotted, value in mods:
                node = raw
                *parents, leaf = dotted.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = value
            for dotted in drop:
                *parents, leaf = dotted.split(".")
                node = raw
                for p in parents:
                    node = node[p]
                del node[leaf]
            text = yaml.safe_dump(raw, sort_keys=False)
        path.write_text(text)
        return [str(path), *args]

    def continual(self, source: str = "lamo/metaworld/{task}-v0", finetune: str = "full", **settings: Any) -> list[str]:
        """GOOD_SWEEP as a continual trial (reach pre-training, hammer) with ``settings`` in its section."""
        section = {"pretrain_tasks": ["reach"], "tasks": ["hammer"], "steps_per_task": 2, "eval_every": 1, "method": "l2m",
                   **settings}
        return self.sweep(("base.data.source", source), ("base.model.finetune", finetune), ("base.continual", section),
                          drop=("base.eval.episodes",))   # a continual trial's are continual.eval_episodes

    def hdf5(self, name: str, n: int = 20, obs_dim: int = 10, drop: tuple[str, ...] = (), rewards_len: int | None = None,
             actions: np.ndarray | None = None, nan: bool = False, env_id: str | None = "Reacher-v5") -> str:
        """A D4RL-format file (one trajectory per 10 steps) shaped like Reacher-v5 unless told otherwise."""
        data = {"observations": np.random.default_rng(0).normal(size=(n, obs_dim)),
                "actions": np.zeros((n, 2), np.float32) if actions is None else actions,
                "rewards": np.zeros(n if rewards_len is None else rewards_len, np.float32),
                "terminals": np.zeros(n, bool), "timeouts": (np.arange(n) % 10) == 9}
        if nan:
            data["observations"][3, 2] = np.nan
        path = self.root / "data" / name
        path.parent.mkdir(exist_ok=True)
        with h5py.File(path, "w") as f:
            for key, value in data.items():
                if key not in drop:
                    f.create_dataset(key, data=value)
            if env_id:
                f.attrs["env_id"] = env_id
        return str(path)

    def file(self, name: str, content: bytes | str) -> str:
        path = self.root / "data" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def store_file(self, name: str) -> Path:
        return self.store / DATASET / "data" / name

    def checkpoint(self, name: str = "ckpt", n_embd: int = 8, env_id: str = "Reacher-v5") -> Path:
        """A real checkpoint of a tiny random-init policy for Reacher-v5 (obs 10, action 2)."""
        from lamo_ray.checkpoint import PolicySpec, save_checkpoint
        from lamo_ray.config import validate_trial
        from lamo_ray.evaluate import build_policy

        cfg = validate_trial({"data": {"source": DATASET, "context_length": 3, "max_ep_len": 64},
                              "model": {"pretrained": False, "n_layer": 1, "n_embd": n_embd, "n_head": 1},
                              "eval": {"target_returns": [-4.0], "episodes": 1, "num_actors": 1, "envs_per_actor": 1}})
        spec = PolicySpec(trial=cfg, state_shape=(10,), act_dim=2, discrete_actions=False,
                          state_mean=np.zeros(10, np.float32), state_std=np.ones(10, np.float32))
        return save_checkpoint(self.root / "checkpoints" / name, build_policy(spec, load_weights=False), spec,
                               env_id, (-40.0, -4.0), step=5)


@pytest.fixture
def ws(tmp_path, dataset_store, monkeypatch) -> Workspace:
    import ray

    import lamo_ray.sweep
    import lamo_ray.tracking

    w = Workspace(tmp_path)
    w.cwd.mkdir()
    shutil.copytree(dataset_store, w.store)  # a private copy: some cases damage it
    for key, value in w.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(w.cwd)

    def sentinel(what: str) -> Callable[..., None]:
        def reached(*args, **kwargs):
            raise Reached(what)
        return reached

    monkeypatch.setattr(ray, "init", sentinel("ray.init"))
    monkeypatch.setattr(lamo_ray.sweep, "_init_ray", sentinel("the sweep's Ray start"))
    monkeypatch.setattr(lamo_ray.tracking, "check_tracking", sentinel("MLflow (check_tracking)"))
    monkeypatch.setattr(lamo_ray.tracking, "start_sweep_run", sentinel("MLflow (start_sweep_run)"))
    return w


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st_ = path.lstat()
        out[str(path.relative_to(root))] = (path.is_dir(), st_.st_size if path.is_file() else 0, st_.st_mtime_ns)
    return out


def run_main(cli: str, argv: list[str]) -> tuple[int, str, str]:
    """Run ``python -m lamo_ray.<cli>``'s main in-process; (exit code, stdout, stderr)."""
    import lamo_ray.evaluate
    import lamo_ray.sweep

    main = {"sweep": lamo_ray.sweep.main, "evaluate": lamo_ray.evaluate.main}[cli]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except Reached as reached:
            pytest.fail(f"bad input was not rejected: {reached} was reached\nstderr: {err.getvalue()[-2000:]}")
        except SystemExit as exit_:  # argparse
            code = exit_.code
        except Exception as exc:  # noqa: BLE001 - this is the traceback a user would see
            pytest.fail(f"uncaught {type(exc).__name__} (a traceback for the user): {exc}")
    return code, out.getvalue(), err.getvalue()


def error_line(stderr: str) -> str:
    """The one ``error:`` line of a failed run (asserts there is exactly one and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}:\n{stderr}"
    return errors[0]


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    build: Callable[[Workspace], list[str]]   # -> argv
    names: tuple[str, ...]                    # each must appear in the error line
    cli: str = "sweep"
    preflight: bool = False                   # caught by the input checks (also run with --dry-run)
    obtainable: bool = False                  # not here yet but downloadable: --dry-run lists it and exits 0


def _cpus_plus(n: int) -> int:
    from lamo_ray.preflight import local_cpus

    return int(local_cpus()) + n


def damage(path: Path, content: bytes | None) -> Path:
    """Overwrite ``path`` with ``content`` (None: delete it); returns the path."""
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    return path


def damaged_checkpoint(w: Workspace, file: str, content: bytes | None) -> list[str]:
    """A good checkpoint with one file replaced by ``content`` (None: deleted); the evaluate argv."""
    return ["--checkpoint", str(damage(w.checkpoint() / file, content).parent)]


def mixed_checkpoint(w: Workspace) -> Path:
    """Weights of an n_embd=8 model under the config.yaml of an n_embd=16 one."""
    narrow = w.checkpoint("narrow", n_embd=8)
    shutil.copy(w.checkpoint("wide", n_embd=16) / "config.yaml", narrow / "config.yaml")
    return narrow


C = Case
CASES = [
    # ---- the sweep file itself
    C("malformed_yaml", lambda w: w.sweep(text="name: [unclosed\nbase: {}\n"), ("sweep.yaml", "malformed YAML", "line 2, column 5")),
    C("yaml_tab_indent", lambda w: w.sweep(text="name: x\n\tbase: {}\n"), ("sweep.yaml", "malformed YAML", "line 2, column 1")),
    C("sweep_file_missing", lambda w: [str(w.cwd / "nope.yaml")], ("nope.yaml", "not found")),
    C("sweep_file_empty", lambda w: w.sweep(text=""), ("sweep.yaml", "empty")),
    C("sweep_file_not_text", lambda w: [w.file("s.yaml", b"\xff\xfe\x00garbage\x9c")], ("s.yaml", "cannot read")),
    C("top_level_not_mapping", lambda w: w.sweep(text="- a\n- b\n"), ("sweep.yaml", "mapping", "list")),
    # ---- unknown keys (did-you-mean)
    C("unknown_top_level_key", lambda w: w.sweep(("seed", 3)), ("seed", "did you mean 'seeds'")),
    C("unknown_nested_key", lambda w: w.sweep(("base.model.lora.rnak", 4)), ("base.model.lora.rnak", "did you mean 'rank'")),
    C("unknown_key_in_variant", lambda w: w.sweep(("variants", {"dt": {"train": {"stpes": 3}}})),
      ("variants.dt.train.stpes", "did you mean 'steps'")),
    C("misspelled_search_domain", lambda w: w.sweep(("base.train.lr", {"gird": [1e-3, 1e-4]})),
      ("base.train.lr", "did you mean 'grid'")),
    # ---- wrong types, missing keys
    C("wrong_type_int", lambda w: w.sweep(("base.train.batch_size", "many")), ("base.train.batch_size", "'many'")),
    C("wrong_type_bool", lambda w: w.sweep(("base.model.pretrained", "maybe")), ("base.model.pretrained", "'maybe'")),
    C("section_not_mapping", lambda w: w.sweep(("base.data", DATASET)), ("base.data", DATASET)),
    C("missing_required_key", lambda w: w.sweep(drop=("base.data.source",)), ("base.data.source", "required")),
    C("bad_sweep_name", lambda w: w.sweep(("name", "my sweep/1")), ("name", "'my sweep/1'")),
    # ---- out-of-range values
    C("sample_ratio_zero", lambda w: w.sweep(("base.data.sample_ratio", 0)), ("base.data.sample_ratio", "got 0")),
    C("sample_ratio_above_one", lambda w: w.sweep(("base.data.sample_ratio", 1.5)), ("base.data.sample_ratio", "1.5")),
    C("context_length_zero", lambda w: w.sweep(("base.data.context_length", 0)), ("base.data.context_length", "got 0")),
    C("negative_lr", lambda w: w.sweep(("base.train.lr", -0.001)), ("base.train.lr", "-0.001")),
    C("lora_rank_zero", lambda w: w.sweep(("base.model.lora.rank", 0)), ("base.model.lora.rank", "got 0")),
    C("zero_ddp_workers", lambda w: w.sweep(("base.train.num_workers", 0)), ("base.train.num_workers", "got 0")),
    C("batch_not_divisible_by_workers", lambda w: w.sweep(("variants", {"ddp": {"train": {"num_workers": 3}}})),
      ("variants.ddp.train", "batch_size (4)", "num_workers (3)")),
    C("width_on_pretrained_backbone", lambda w: w.sweep(("variants", {"lamo": {"model": {"pretrained": True}}})),
      ("variants.lamo.model", "model.n_embd", "pretrained: false")),
    C("no_target_returns", lambda w: w.sweep(("base.eval.target_returns", [])), ("base.eval.target_returns",)),
    C("no_variants", lambda w: w.sweep(("variants", {})), ("variants",)),
    C("duplicate_seeds", lambda w: w.sweep(("seeds", [1, 1])), ("seeds", "[1, 1]")),
    C("grid_value_out_of_range", lambda w: w.sweep(("base.data.sample_ratio", {"grid": [0.5, 2.0]})),
      ("base.data.sample_ratio", "2.0")),
    C("loguniform_not_positive", lambda w: w.sweep(("base.train.lr", {"loguniform": [0, 1e-3]})),
      ("base.train.lr", "loguniform", "[0, 0.001]")),
    C("domain_in_variant", lambda w: w.sweep(("variants", {"a": {"train": {"lr": {"grid": [1e-3]}}}})),
      ("train.lr", "domains belong in base")),
    C("grace_period_beyond_steps", lambda w: w.sweep(("scheduler", {"type": "asha", "grace_period": 100})),
      ("scheduler.grace_period", "100", "train.steps (10)")),
    # ---- --set overrides
    C("set_without_equals", lambda w: w.sweep(args=("--set", "train.lr")), ("--set", "train.lr", "key.path=value")),
    C("set_unknown_key", lambda w: w.sweep(args=("--set", "train.lrr=0.1")), ("base.train.lrr", "did you mean 'lr'")),
    C("set_value_not_yaml", lambda w: w.sweep(args=("--set", "train.steps=[1")), ("--set", "train.steps", "not valid YAML")),
    C("set_wrong_type", lambda w: w.sweep(args=("--set", "train.steps=abc")), ("base.train.steps", "'abc'")),
    # ---- resources
    C("more_ddp_workers_than_cpus", lambda w: w.sweep(("base.train.num_workers", _cpus_plus(1)),
                                                        ("base.train.batch_size", 2 * _cpus_plus(1)),
                                                        ("base.train.cpus_per_worker", 1)),
      ("train.num_workers", "cluster has"), preflight=True),
    C("storage_path_not_a_folder", lambda w: w.sweep(("storage_path", w.file("results.txt", "x") + "/sub")),
      ("storage_path", "results.txt"), preflight=True),
    # ---- datasets
    C("unknown_minari_id", lambda w: w.sweep(("base.data.source", "nobody/nothing-v0")),
      ("nobody/nothing-v0", "minari download", DATASET), preflight=True, obtainable=True),
    C("d4rl_kitchen_not_downloaded", lambda w: w.sweep(("base.data.source", "D4RL/kitchen/mixed-v2")),
      ("D4RL/kitchen/mixed-v2", "lamo/kitchen/mixed-v0"), preflight=True, obtainable=True),
    C("hdf5_missing", lambda w: w.sweep(("base.data.source", str(w.root / "gone.hdf5"))), ("gone.hdf5", "not found"),
      preflight=True),
    C("hdf5_corrupt", lambda w: w.sweep(("base.data.source", w.file("bad.hdf5", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4))),
      ("bad.hdf5", "cannot read HDF5"), preflight=True),
    C("hdf5_truncated", lambda w: w.sweep(("base.data.source", w.file(
        "cut.hdf5", Path(w.hdf5("whole.hdf5", n=2000)).read_bytes()[:6000]))), ("cut.hdf5", "cannot read HDF5"), preflight=True),
    C("hdf5_missing_key", lambda w: w.sweep(("base.data.source", w.hdf5("nokeys.hdf5", drop=("timeouts",)))),
      ("nokeys.hdf5", "missing keys ['timeouts']"), preflight=True),
    C("hdf5_keys_of_different_lengths", lambda w: w.sweep(("base.data.source", w.hdf5("len.hdf5", rewards_len=7))),
      ("len.hdf5", "different lengths"), preflight=True),
    C("hdf5_actions_wrong_rank", lambda w: w.sweep(("base.data.source", w.hdf5(
        "act.hdf5", actions=np.zeros((20, 2, 1), np.float32)))), ("act.hdf5", "(N, A)"), preflight=True),
    C("hdf5_nan_observation", lambda w: w.sweep(("base.data.source", w.hdf5("nan.hdf5", nan=True))),
      ("nan.hdf5", "observations", "NaN"), preflight=True),
    C("empty_dataset", lambda w: w.sweep(("base.data.source", w.hdf5("empty.hdf5", n=0))), ("empty.hdf5", "no steps"),
      preflight=True),
    C("minari_data_corrupt", lambda w: damage(w.store_file("main_data.hdf5"), b"garbage" * 100) and w.sweep(),
      (DATASET, "damaged"), preflight=True),
    C("minari_data_missing", lambda w: damage(w.store_file("main_data.hdf5"), None) and w.sweep(),
      (DATASET, "No data found"), preflight=True),
    C("minari_metadata_corrupt", lambda w: damage(w.store_file("metadata.json"), b"{not json") and w.sweep(),
      (DATASET, "cannot load Minari dataset"), preflight=True),
    C("sample_ratio_keeps_no_trajectory", lambda w: w.sweep(("base.data.sample_ratio", 0.1)),
      ("data.sample_ratio=0.1", "= 0 of its 2 trajectories", "at least 0.5"), preflight=True),
    # ---- environments
    C("unknown_env_id", lambda w: w.sweep(("base.eval.env_id", "Reacher-v99")), ("Reacher-v99", "did you mean Reacher-v5"),
      preflight=True),
    C("env_dims_differ_from_dataset", lambda w: w.sweep(("base.eval.env_id", "Hopper-v5")),
      ("Hopper-v5", "(11,) / action 3", DATASET, "(10,) / 2"), preflight=True),
    C("dataset_dims_differ_from_its_env", lambda w: w.sweep(("base.data.source", w.hdf5("obs3.hdf5", obs_dim=3))),
      ("Reacher-v5", "obs3.hdf5", "(3,)"), preflight=True),
    C("dataset_names_no_env", lambda w: w.sweep(("base.data.source", w.hdf5("noenv.hdf5", env_id=None))),
      ("eval.env_id", "noenv.hdf5"), preflight=True),
    # ---- language corpus, backbone
    C("corpus_path_missing", lambda w: w.sweep(("base.language", {"co_lambda": 0.1, "corpus": str(w.root / "no_corpus")})),
      ("language.corpus", "no_corpus"), preflight=True),
    C("corpus_empty", lambda w: w.sweep(("base.language", {"co_lambda": 0.1, "corpus": w.file("blank.txt", "  \n")})),
      ("language.corpus", "blank.txt", "no text"), preflight=True),
    C("backbone_unavailable", lambda w: w.sweep(("base.model", {"backbone": "nobody/no-such-lm", "pretrained": True})),
      ("nobody/no-such-lm",), preflight=True, obtainable=True),
    # ---- continual trials (L2M)
    C("continual_unknown_task", lambda w: w.continual(tasks=["hamer"]), ("base.continual.tasks", "did you mean 'hammer'")),
    C("continual_pool_size_zero", lambda w: w.continual(pool={"size": 0}), ("base.continual.pool.size", "got 0")),
    C("continual_top_k_above_pool", lambda w: w.continual(pool={"size": 2, "top_k": 3}),
      ("continual.pool.top_k (3)", "larger than the pool (size 2)")),
    C("continual_lora_pretraining", lambda w: w.continual(finetune="lora"), ("model.finetune 'lora'", "continual")),
    C("continual_source_not_a_template", lambda w: w.continual(source="lamo/metaworld/hammer-v0"),
      ("data.source", "{task}", "lamo/metaworld/hammer-v0")),
    C("continual_dmcontrol_in_the_scored_sequence", lambda w: w.continual(tasks=["hammer", "walker-run"]),
      ("continual.tasks", "'walker-run'", "no success flag", "continual.pretrain_tasks")),
    C("grad_accumulation_zero", lambda w: w.sweep(("base.train.grad_accumulation", 0)),
      ("base.train.grad_accumulation", "got 0")),
    C("grad_accumulation_outside_continual", lambda w: w.sweep(("base.train.grad_accumulation", 2)),
      ("train.grad_accumulation 2", "only a continual trial")),
    C("continual_success_rule_dmcontrol_has_no_flag",
      lambda w: w.continual(tasks=["hammer", "walker-run"], success_rule="last_step"),
      ("continual.success_rule 'last_step'", "'walker-run'", "no success flag")),
    C("continual_success_rule_unknown", lambda w: w.continual(success_rule="first_step"),
      ("base.continual.success_rule", "'first_step'")),
    C("continual_pretrain_dataset_of_no_domain", lambda w: w.continual(pretrain_datasets=["someone/else-v0"]),
      ("continual.pretrain_datasets", "no domain serves 'someone/else-v0'")),
    C("continual_dmcontrol_timesteps_clipped", lambda w: w.continual(pretrain_tasks=["reach", "dmc10"]),
      ("data.max_ep_len", "DMControl episodes have 1000 steps")),
    C("continual_sequence_data_missing", lambda w: w.continual(source="test/metaworld/{task}-v0", pretrain_tasks=["hammer"]),
      ("test/metaworld/hammer-v0", "no local Minari dataset"), preflight=True, obtainable=True),
    # ---- checkpoints (python -m lamo_ray.evaluate)
    C("checkpoint_from_other_model_config", lambda w: ["--checkpoint", str(mixed_checkpoint(w))],
      ("narrow", "does not match the model config", "model.safetensors"), cli="evaluate"),
    C("checkpoint_dir_missing", lambda w: ["--checkpoint", str(w.root / "no_ckpt")], ("no_ckpt", "not found"), cli="evaluate"),
    C("checkpoint_incomplete", lambda w: damaged_checkpoint(w, "model.safetensors", None),
      ("ckpt", "missing model.safetensors"), cli="evaluate"),
    C("checkpoint_weights_corrupt", lambda w: damaged_checkpoint(w, "model.safetensors", b"\x00garbage"),
      ("ckpt", "model.safetensors", "corrupt"), cli="evaluate"),
    C("checkpoint_config_unknown_key", lambda w: damaged_checkpoint(
        w, "config.yaml", f"data: {{source: {DATASET}}}\nmodel: {{lora: {{rnak: 2}}}}\n".encode()),
      ("config.yaml", "model.lora.rnak", "did you mean 'rank'"), cli="evaluate"),
    C("checkpoint_policy_json_incomplete", lambda w: damaged_checkpoint(w, "policy.json", json.dumps({"step": 1}).encode()),
      ("policy.json", "missing key"), cli="evaluate"),
    C("checkpoint_env_dims_differ", lambda w: ["--checkpoint", str(w.checkpoint(env_id="Hopper-v5"))],
      ("Hopper-v5", "(11,)", "(10,)"), cli="evaluate"),
    C("evaluate_zero_episodes", lambda w: ["--checkpoint", str(w.checkpoint()), "--episodes", "0"],
      ("--episodes", "got 0"), cli="evaluate"),
    C("checkpoint_run_in_missing_mlflow_store", lambda w: ["--checkpoint", "runs:/0123abcd/checkpoint"],
      ("runs:/0123abcd/checkpoint", "mlflow.db", "does not exist"), cli="evaluate"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_rejected_before_anything_starts(ws, case):
    argv = case.build(ws)
    before = tree(ws.root)
    code, _, stderr = run_main(case.cli, argv)
    assert code == 2, f"exit code {code}\n{stderr}"
    line = error_line(stderr)
    for name in case.names:
        assert name in line, f"{name!r} not named in: {line}"
    assert tree(ws.root) == before, "the failed run wrote files"


PREFLIGHT = [c for c in CASES if c.preflight]


@pytest.mark.parametrize("case", PREFLIGHT, ids=[c.id for c in PREFLIGHT])
def test_dry_run_reports_the_same_bad_input(ws, case):
    argv = case.build(ws)
    before = tree(ws.root)
    code, stdout, stderr = run_main("sweep", [*argv, "--dry-run"])
    if case.obtainable:  # issue 3: a paper-scale config validates where its data/weights are not downloaded
        assert code == 0, f"exit code {code}\n{stderr}"
        assert "error:" not in stderr and "to download or fetch" in stdout
        missing = [ln for ln in stdout.splitlines() if "[MISSING]" in ln]
        assert len(missing) == 1, stdout
        for name in case.names:
            assert name in missing[0], f"{name!r} not named in: {missing[0]}"
    else:
        assert code == 2, f"exit code {code}\n{stderr}"
        line = error_line(stderr)
        for name in case.names:
            assert name in line, f"{name!r} not named in: {line}"
        assert "[MISSING]" in stdout
    assert tree(ws.root) == before


def test_valid_inputs_get_past_every_check(ws):
    """Control: without a defect, the base sweep passes the preflight and the base checkpoint
    loads, so both reach the sentinels (the cases above fail on their own defect)."""
    import lamo_ray.evaluate
    import lamo_ray.sweep

    argv = ws.sweep()
    code, stdout, stderr = run_main("sweep", [*argv, "--dry-run"])
    assert code == 0, stderr
    assert "[MISSING]" not in stdout and "0 input(s) unavailable" in stdout
    with pytest.raises(Reached, match="MLflow"), redirect_stdout(io.StringIO()):
        lamo_ray.sweep.main(argv)
    with pytest.raises(Reached, match="ray.init"), redirect_stdout(io.StringIO()):
        lamo_ray.evaluate.main(["--checkpoint", str(ws.checkpoint())])


# --------------------------------------------------------------------------- the real CLI


REAL_CLI = ["malformed_yaml", "minari_data_corrupt", "more_ddp_workers_than_cpus", "checkpoint_from_other_model_config"]


@pytest.mark.parametrize("case_id", REAL_CLI)
def test_real_cli_matches_in_process(ws, case_id):
    """`python -m lamo_ray.<cli>` in a subprocess (no sentinels there: a Ray start would write
    under RAY_TMPDIR and MLflow would create mlflow.db, both inside the checked tree)."""
    case = next(c for c in CASES if c.id == case_id)
    argv = case.build(ws)
    before = tree(ws.root)
    env = dict(os.environ, **ws.env)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", f"lamo_ray.{case.cli}", *argv], cwd=ws.cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc.stderr)
    for name in case.names:
        assert name in line, f"{name!r} not named in: {line}"
    assert tree(ws.root) == before


# --------------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), ratio=st.floats(min_value=1e-4, max_value=1.0))
def test_sample_ratio_keeps_zero_trajectories_iff_int_n_ratio_is_zero(n, ratio):
    from lamo_ray.data.trajectories import DatasetError, Trajectory, TrajectoryDataset, subsample

    one = Trajectory(np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32), np.zeros(1, np.float32), False)
    ds = TrajectoryDataset([one] * n, (2,), 1, False, None, None, None, "mem")
    if int(n * ratio) == 0:
        with pytest.raises(DatasetError) as err:
            subsample(ds, ratio, seed=0)
        assert f"sample_ratio {ratio}" in str(err.value) and f"of its {n} trajectories" in str(err.value)
    else:
        assert len(subsample(ds, ratio, seed=0).trajectories) == int(n * ratio)


CONFIG_KEYS = ["name", "base", "data", "source", "sample_ratio", "model", "lora", "rank", "train", "lr", "steps",
               "num_workers", "batch_size", "eval", "env_id", "variants", "seeds", "scheduler", "grid", "loguniform"]
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(CONFIG_KEYS), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=200), yaml_values.map(lambda v: yaml.safe_dump(v).encode())))
def test_any_sweep_file_content_is_valid_or_a_config_error(tmp_path, content):
    """Fuzz: whatever the file holds, load_sweep accepts it or raises ConfigError naming the file."""
    from lamo_ray.config import ConfigError, load_sweep

    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    try:
        load_sweep(path)
    except ConfigError as err:
        assert str(path) in str(err) or str(err).startswith("--set")
