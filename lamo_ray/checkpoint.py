"""Checkpoints: a directory that can be loaded without unpickling arbitrary objects.

Layout::

    model.safetensors     model weights (safetensors)
    optimizer.pt          optimiser + LR-scheduler state (loaded with torch.load(weights_only=True))
    config.yaml           the resolved TrialConfig
    policy.json           state_shape, act_dim, discrete_actions, env_id, env_kwargs, ref scores,
                          state_mean / state_std (the training data's normalisation), step,
                          backbone_config (the backbone's config: rebuilt without its files)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_model, save_model

from lamo_ray.config import ConfigError, TrialConfig, validate_trial

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.pt"
CONFIG_FILE = "config.yaml"
POLICY_FILE = "policy.json"


@dataclass(frozen=True)
class PolicySpec:
    """What a rollout actor needs to rebuild the model and its input normalisation: the trial's
    validated config, the state shape (S,) or (C, H, W), the action dimension (or number of discrete
    actions). ``state_mean`` / ``state_std`` have the flattened observation's shape; ``None`` for images.
    """

    trial: TrialConfig
    state_shape: tuple[int, ...]
    act_dim: int
    discrete_actions: bool
    state_mean: np.ndarray | None
    state_std: np.ndarray | None
    backbone_config: dict | None = None  # `DecisionTransformer.backbone_base_config`: no backbone files needed to rebuild


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt or does not match the model. Names the path."""


@dataclass
class LoadedCheckpoint:
    path: Path
    config: TrialConfig
    spec: PolicySpec
    env_id: str
    env_kwargs: dict[str, Any]
    refs: tuple[float | None, float | None]
    step: int
    extra: dict[str, Any]


def save_checkpoint(directory: str | Path, model: torch.nn.Module, spec: PolicySpec, env_id: str,
                    refs: tuple[float | None, float | None], step: int,
                    optimizer_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    env_kwargs: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint into ``directory`` (created). ``model`` may be DDP-wrapped."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    module = model.module if hasattr(model, "module") else model
    save_model(module, str(directory / MODEL_FILE))  # handles tied weights (GPT-2 wte / lm_head)
    if optimizer_state is not None:
        torch.save(optimizer_state, directory / OPTIM_FILE)
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(spec.trial.model_dump(), sort_keys=False))
    policy = {
        "state_shape": list(spec.state_shape), "act_dim": spec.act_dim,
        "discrete_actions": spec.discrete_actions, "env_id": env_id, "env_kwargs": env_kwargs or {},
        "ref_min_score": refs[0], "ref_max_score": refs[1], "step": step,
        "state_mean": None if spec.state_mean is None else np.asarray(spec.state_mean).tolist(),
        "state_std": None if spec.state_std is None else np.asarray(spec.state_std).tolist(),
        "backbone_config": spec.backbone_config,
        "extra": extra or {},
    }
    (directory / POLICY_FILE).write_text(json.dumps(policy))
    return directory


def load_checkpoint(directory: str | Path) -> LoadedCheckpoint:
    """Read a checkpoint written by `save_checkpoint`.

    Raises:
        CheckpointError: missing directory or file, unreadable content, or an invalid config.
    """
    directory = Path(directory)
    for name in (MODEL_FILE, CONFIG_FILE, POLICY_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: not a lamo_ray checkpoint (missing {name})")
    try:
        trial_raw = yaml.safe_load((directory / CONFIG_FILE).read_text())
        if not isinstance(trial_raw, dict):
            raise CheckpointError(f"{directory / CONFIG_FILE}: expected a trial config mapping, "
                                  f"got {type(trial_raw).__name__}")
        config = validate_trial(trial_raw, origin=str(directory / CONFIG_FILE))
        policy = json.loads((directory / POLICY_FILE).read_text())
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt files of any kind
        raise CheckpointError(f"{directory}: unreadable checkpoint: {err}") from None
    try:
        mean = None if policy["state_mean"] is None else np.asarray(policy["state_mean"], dtype=np.float32)
        std = None if policy["state_std"] is None else np.asarray(policy["state_std"], dtype=np.float32)
        spec = PolicySpec(trial=config, state_shape=tuple(int(d) for d in policy["state_shape"]),
                          act_dim=int(policy["act_dim"]), discrete_actions=bool(policy["discrete_actions"]),
                          state_mean=mean, state_std=std, backbone_config=policy.get("backbone_config"))
        return LoadedCheckpoint(path=directory, config=config, spec=spec, env_id=str(policy["env_id"]),
                                env_kwargs=dict(policy.get("env_kwargs") or {}),
                                refs=(policy["ref_min_score"], policy["ref_max_score"]),
                                step=int(policy["step"]), extra=policy.get("extra", {}))
    except KeyError as err:
        raise CheckpointError(f"{directory / POLICY_FILE}: missing key {err} (not written by this "
                              "version's save_checkpoint, or damaged)") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory / POLICY_FILE}: malformed value: {err}") from None


def load_optimizer_state(directory: str | Path) -> dict[str, Any] | None:
    """Optimiser/scheduler state saved beside the weights (``weights_only`` load), or None."""
    path = Path(directory) / OPTIM_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights_into(model: torch.nn.Module, directory: str | Path) -> None:
    """Load a checkpoint's weights strictly into ``model`` (may be DDP-wrapped).

    Raises:
        CheckpointError: the weights are missing/corrupt or come from a different model config.
    """
    module = model.module if hasattr(model, "module") else model
    path = Path(directory) / MODEL_FILE
    try:
        load_model(module, str(path), strict=True)
    except Exception as err:  # noqa: BLE001 - safetensors raises RuntimeError / SafetensorError
        detail = " ".join(str(err).split())  # torch lists every mismatch on tab-indented lines
        if len(detail) > 400:
            detail = detail[:400] + " ..."
        raise CheckpointError(f"{directory}: checkpoint does not match the model config or is corrupt: {MODEL_FILE} "
                              f"does not fit the model {CONFIG_FILE} describes ({detail})") from None


def resolve_checkpoint(ref: str) -> Path:
    """A local checkpoint directory, or an MLflow artifact URI (``runs:/<run_id>/checkpoint``,
    ``models:/...``) downloaded to a temporary directory.

    Raises:
        CheckpointError: the path does not exist or the artifact cannot be downloaded.
    """
    if "://" in ref or ref.startswith("runs:/"):
        import mlflow

        uri = mlflow.get_tracking_uri()
        if ref.startswith(("runs:/", "models:/")) and uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///"):])
            if not db.is_file():  # MLflow would create an empty store here and then not find the run
                raise CheckpointError(f"{ref}: the MLflow tracking store {uri} does not exist; set "
                                      "MLFLOW_TRACKING_URI to the sweep's store (e.g. sqlite:///$PWD/mlflow.db)")
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{ref}: cannot download checkpoint artifact: {err}") from None
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{ref}: checkpoint directory not found")
    return path
