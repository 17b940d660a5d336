"""Typed configuration: the single source of truth for every knob and its default.

A *trial* is one training run (`TrialConfig`). A *sweep* (`SweepConfig`) is a base trial
config plus named method variants, search domains and seeds; `expand_trials` turns it into the
list of trials Ray Tune runs (variants x grid x seeds).

Defaults follow the LaMo reference code (REFERENCE.md "Model", "Data", "Evaluation") unless a
field's description says "ours".

Errors: every validation failure raises `ConfigError`, whose message names the offending key
path (``model.lora.rank``), the file it came from and, for unknown keys, a did-you-mean.
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator


#: the evaluation metric the schedulers and reports use: the best target's normalized score x100
#: (`lamo_ray.evaluate.summarize`), logged with ``_ci_low`` / ``_ci_high``
SCORE_METRIC = "normalized_score"
#: the variant a report compares the others with unless the sweep says otherwise
DEFAULT_BASELINE = "dt"


class ConfigError(ValueError):
    """A config file, key or value is invalid. The message names the key path and source."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Which trajectories to train on and how segments are cut (REFERENCE.md "Data")."""

    source: str = Field(
        description="Minari dataset id (e.g. 'lamo/reacher/mixed-v0', 'D4RL/kitchen/partial-v2') "
        "or a path to a D4RL-format HDF5 file."
    )
    sample_ratio: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of whole trajectories kept.")
    rtg_scale: float = Field(1000.0, gt=0.0, description="Return-to-go divisor: MuJoCo 1000, Reacher2d 10, Kitchen 1.")
    context_length: int = Field(20, ge=1, description="Context length K in timesteps (3K tokens).")
    max_ep_len: int = Field(1000, ge=1, description="Size of the timestep embedding table.")
    subsample: Literal["uniform", "length_weighted"] = Field(
        "uniform", description="How sample_ratio picks its trajectories: 'uniform' (LaMo's D4RL code) or weighted by "
        "length without replacement ('length_weighted', LaMo's Atari buffer.ratio_dataset).")
    segments: Literal["left_padded", "full_window"] = Field(
        "left_padded", description="Where training segments start: 'left_padded' (DT / LaMo D4RL get_batch): uniform "
        "over [0, T-1], up to K steps, left-padded; 'full_window' (LaMo's Atari buffer.sample): uniform over [0, T-K) "
        "so every segment has K real steps (right-padded only when T < K).")
    rtg_includes_current_reward: bool = Field(
        True, description="Return-to-go at step t: sum of rewards from t on (true: DT / LaMo D4RL) or after t "
        "(false: LaMo's Atari buffer).")
    reward_shift: float = Field(
        0.0, description="Added to every reward the trial learns from, in the data and in rollouts (ODT-TD3's "
        "AntMaze: -1, so returns-to-go count steps to the goal); scores use the env's own rewards.")
    delayed_reward: int = Field(
        0, ge=0, description="M >= 2: each block of M steps reports its summed reward at its last step, 0 elsewhere, "
        "in the data and in rollouts (ODT-TD3's --delayed_reward); 0: off.")

    @field_validator("delayed_reward")
    @classmethod
    def _delay_not_one(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (off) or >= 2: a delay of 1 step changes nothing (the authors' code forbids it)")
        return v


class LoraConfig(_Strict):
    """peft LoRA on the attention QKV projection (REFERENCE.md "Model": rank 16, alpha 32, dropout 0.1)."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    fused_qkv: bool = Field(
        False, description="GPT-2 only. false: Q, K and V each get their own rank-r A and B (LaMo's D4RL code, loralib "
        "MergedLinear(enable_lora=[True, True, True]) on c_attn); true: one A/B shared by the fused c_attn (LaMo's "
        "Atari code, peft on c_attn).")
    bias: Literal["lora_only", "none"] = Field(
        "lora_only", description="Also train the biases of the adapted projections ('lora_only': LaMo's D4RL code) or "
        "not ('none': LaMo's Atari code, peft's default).")


class ModelConfig(_Strict):
    """The LaMo Decision Transformer (REFERENCE.md "Model")."""

    backbone: str = Field("gpt2", description="Hugging Face hub id or local directory of a causal LM.")
    pretrained: bool = Field(True, description="Load pre-trained weights; false gives the DT baseline of the same shape.")
    n_layer: int | None = Field(None, ge=1, description="Override depth (keeps the first N blocks of a pre-trained model).")
    n_embd: int | None = Field(None, ge=1, description="Hidden size; only for pretrained: false.")
    n_head: int | None = Field(None, ge=1, description="Attention heads; only for pretrained: false.")
    activation: Literal["relu", "gelu", "gelu_new", "silu", "tanh"] | None = Field(
        None, description="MLP activation of a randomly initialised backbone ('relu' in LaMo's DT baseline); only for "
        "pretrained: false. Default: the backbone's own (GPT-2 gelu_new, Llama silu).")
    position_embedding: bool = Field(
        False, description="Add GPT-2's learned position table wpe (true: stock GPT-2, LaMo's Atari code) or not "
        "(false: LaMo's D4RL code; the timestep embedding replaces it). Rotary backbones keep their rotary positions.")
    timestep_embedding: bool = Field(
        True, description="Add the learned timestep embedding to every token (LaMo, DT). false: no timestep and no "
        "position signal but the causal order (the ODT-TD3 authors' default --ordering 0: their "
        "decision_transformer.py lines 220-227 add embed_ordering only when ordering is set, and their GPT-2 has no "
        "position table).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Residual, embedding and attention dropout.")
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel: 'sdpa' (PyTorch's fused scaled_dot_product_attention), 'eager' "
        "(the model's own matmul-softmax code, what LaMo ran), or 'auto' (transformers' default: 'sdpa' where the "
        "architecture supports it, else 'eager'). Same function; outputs agree to float32 rounding.")
    embedding: Literal["linear", "mlp"] = Field("mlp", description="LaMo's --mlp_embedding or DT's linear embeddings.")
    action_head: Literal["deterministic", "tanh_gaussian"] = Field(
        "deterministic", description="'deterministic': the embedding's head (LaMo / DT), trained with MSE; "
        "'tanh_gaussian': Online DT's stochastic head (tanh-squashed Gaussian, learned temperature toward entropy "
        "-act_dim), trained with NLL - T x entropy offline and online; its mean action is used for evaluation. "
        "Continuous actions only.")
    action_tanh: bool | None = Field(
        None, description="End the deterministic continuous action head in tanh, bounding actions to [-1, 1]. Default "
        "(null): true for the critic methods (online td3_odt, td3), as the ODT-TD3 authors' head "
        "(decision_transformer.py lines 174-180, action_tanh=True), since -Q would otherwise push actions outside the "
        "range the critic was trained on (false is refused there); otherwise the embedding's head: DT's Linear + tanh "
        "for 'linear', LaMo's unbounded Linear-GELU-Linear for 'mlp'.")
    finetune: Literal["lora", "full", "frozen"] = Field("lora")
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @property
    def bounded_actions(self) -> bool:
        """The continuous action head ends in tanh (`action_tanh`, else the embedding's default)."""
        if self.action_head == "tanh_gaussian":
            return True
        return self.action_tanh if self.action_tanh is not None else self.embedding == "linear"

    @model_validator(mode="after")
    def _shape_overrides_need_random_init(self) -> "ModelConfig":
        if self.pretrained and (self.n_embd is not None or self.n_head is not None or self.activation is not None):
            raise ValueError("model.n_embd / model.n_head / model.activation can only be set with model.pretrained: "
                             "false (a pre-trained backbone has a fixed architecture)")
        if self.n_embd is not None and self.n_head is not None and self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        return self


class LanguageConfig(_Strict):
    """Auxiliary language-modelling loss: loss = action_loss + co_lambda * lm_loss (LaMo uses 0.1)."""

    co_lambda: float = Field(0.0, ge=0.0)
    corpus: str = Field("wikitext-103-raw-v1", description="'wikitext-103-raw-v1' (needs network) or a local text file/folder.")
    block_size: int = Field(1024, ge=2, description="Tokens per text block.")
    batch_size: int = Field(2, ge=1, description="Text blocks per step.")


class TrainConfig(_Strict):
    """Optimisation and Ray Train scaling (REFERENCE.md "Optimiser", "Training")."""

    steps: int = Field(100_000, ge=1)
    batch_size: int = Field(64, ge=1, description="Global batch (split across DDP workers).")
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    adam_eps: float = Field(1e-6, gt=0.0)
    optimizer: Literal["adamw", "lamb"] = Field(
        "adamw", description="The DT's optimiser: 'adamw' (LaMo, L2M) or 'lamb' (the ODT-TD3 authors': their lamb.py, "
        "through pytorch-optimizer; lamo_ray.optim.lamb). lr, weight_decay and adam_eps apply to either.")
    warmup_steps: int = Field(2500, ge=0)
    lr_schedule: Literal["constant", "cosine", "lamo_atari"] = Field(
        "constant", description="After the linear warm-up: 'constant' (LaMo, DT, ODT) or 'cosine' (L2M's "
        "pre-training: one cosine cycle from train.lr down to train.lr_min over train.steps, then lr_min); "
        "'lamo_atari': LaMo's Atari schedule as their code runs it, counted in non-NOOP actions of the batches "
        "(lamo_ray.optim.NonNoopActionLR; discrete actions only; warmup_steps unused).")
    lr_min: float = Field(1e-6, ge=0.0, description="The cosine schedule's floor (L2M's eta_min 1e-6).")
    grad_clip: float = Field(0.25, gt=0.0)
    grad_accumulation: int = Field(1, ge=1, description="Continual trials' pre-training: micro-batches of "
                                   "batch_size whose gradients make one optimiser step (L2M's accumulation_steps: 2, "
                                   "one micro-batch per domain with continual.pretrain_mixing 'domain'). As L2M's, the "
                                   "lr schedule advances once per micro-batch: warmup_steps and the cosine's length "
                                   "(steps x grad_accumulation) count micro-batches. Other trials: 1 only.")
    eval_every: int = Field(2500, ge=1, description="Steps between evaluations (each one a checkpoint and a Tune report).")
    log_every: int = Field(100, ge=1, description="Steps between training-metric logs to MLflow.")
    num_workers: int = Field(1, ge=1, description="Ray Train DDP workers.")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    use_gpu: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Training arithmetic: 'fp32' (LaMo), 'bf16' or 'fp16' mixed precision (torch.autocast "
        "around forward and loss; fp32 weights and optimiser; fp16 adds a GradScaler), 'auto': bf16 on a CUDA GPU "
        "that supports it, fp16 on other CUDA GPUs, fp32 on CPU. Evaluation always runs in fp32.")
    max_failures: int = Field(2, ge=-1, description="Restarts from the last checkpoint after an error (-1: "
                              "unlimited): of the Ray Train worker group, or of the Tune trial when it trains in its "
                              "own process. A NaN/inf loss fails the same way again after a restart, so such a trial "
                              "ends FAILED after max_failures + 1 tries.")
    launcher: Literal["auto", "ray_train", "in_trial"] = Field(
        "auto", description="'ray_train': a Ray Train TorchTrainer (controller + worker group) per trial; 'in_trial': "
        "the training loop runs in the Tune trial's own process (1 worker only; no Train controller or worker "
        "processes to start, and with Tune's actor reuse no new process per trial); 'auto': in_trial for 1 worker, "
        "ray_train for DDP.")

    @model_validator(mode="after")
    def _batch_divides(self) -> "TrainConfig":
        if self.batch_size % self.num_workers:
            raise ValueError(f"train.batch_size ({self.batch_size}) must be divisible by train.num_workers ({self.num_workers})")
        if self.launcher == "in_trial" and self.num_workers != 1:
            raise ValueError(f"train.launcher 'in_trial' trains in the Tune trial's own process, so it needs "
                             f"train.num_workers 1 (got {self.num_workers}); use 'ray_train' or 'auto' for DDP")
        if self.lr_schedule == "cosine" and self.lr_min > self.lr:
            raise ValueError(f"train.lr_min ({self.lr_min}) is above train.lr ({self.lr}): the cosine schedule "
                             "decays from lr down to lr_min")
        return self

    @property
    def resolved_launcher(self) -> str:
        """'in_trial' or 'ray_train': ``launcher`` with 'auto' decided by ``num_workers``."""
        if self.launcher == "auto":
            return "in_trial" if self.num_workers == 1 else "ray_train"
        return self.launcher

    @property
    def in_trial(self) -> bool:
        """True when the loop runs inside the Tune trial process instead of a Ray Train worker group."""
        return self.resolved_launcher == "in_trial"


class EvalConfig(_Strict):
    """Rollout evaluation by Ray actors (REFERENCE.md "Evaluation"; ours: parallel and batched)."""

    env_id: str | None = Field(None, description="Gymnasium env id; default: the dataset's own env.")
    target_returns: list[float] = Field(default_factory=lambda: [3600.0], min_length=1)
    episodes: int = Field(20, ge=1, description="Episodes per target return.")
    num_actors: int = Field(2, ge=1)
    envs_per_actor: int = Field(10, ge=1)
    actor_cpus: float = Field(0.0, ge=0.0, description="Ray CPUs reserved per rollout actor. 0 (ours): actors "
                              "borrow the CPUs of the trial's training workers, which wait during evaluation.")
    gpus_per_actor: float = Field(0.0, ge=0.0, le=1.0, description="GPU share per rollout actor (e.g. 0.25: four "
                                  "actors share a GPU); > 0 runs the actor's forward on CUDA. 0: CPU actors.")
    max_episode_steps: int | None = Field(None, ge=1)
    context_length: int | None = Field(
        None, ge=1, description="Rollouts (evaluation and online collection) condition on the last N steps only, "
        "padded to data.context_length (ODT's eval_context_length); none: all K.")
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    seed_offset: int = Field(10_000, ge=0, description="Env seeds are trial seed + offset + episode index.")
    clip_actions: bool = Field(
        False, description="Clip continuous actions to the action space before env.step. false: the model's raw "
        "action, as LaMo's evaluate_episode_rtg (MuJoCo clamps the control but its control cost sees the raw action; "
        "FrankaKitchen clips itself).")


ONLINE_METHODS = ("odt", "td3_odt", "td3")


class OnlineConfig(_Strict):
    """Online fine-tuning after the offline ``train.steps`` (ODT, and ODT with a TD3 critic's gradient:
    REFERENCE_ODT_TD3.md "Online loop", "Critic and TD3"; defaults: the paper's Adroit / maze settings).

    One iteration: rollout actors collect whole episodes at ``target_return`` with the current
    weights until ``transitions_per_iteration`` are collected, they enter the trajectory replay, then
    ``updates_per_iteration`` learner updates. ``method``: 'odt' (stochastic head, NLL - T x entropy,
    no critic; needs ``model.action_head: tanh_gaussian``), 'td3_odt' (deterministic head, MSE +
    ``rl_coeff`` x -Q1), 'td3' (the RL term alone: ``sup_coeff`` 0)."""

    method: Literal["odt", "td3_odt", "td3"] = Field(description="odt, td3_odt or td3 (the paper's three variants).")
    iterations: int = Field(ge=1, description="Online iterations (collect, then update).")
    transitions_per_iteration: int = Field(1000, ge=1, description="Collect whole episodes until at least this "
                                           "many transitions (the authors' minimum_sapairs_per_iter).")
    updates_per_iteration: int = Field(300, ge=1, description="Actor updates per iteration (the critic updates "
                                       "every batch: policy_delay x as many).")
    replay_size: int = Field(1000, ge=1, description="Trajectories the replay buffer holds.")
    target_return: float = Field(description="Return-to-go the collecting policy is conditioned on (online RTG); "
                                 "evaluation uses eval.target_returns.")
    exploration_noise: float = Field(0.1, ge=0.0, description="Std of the Gaussian noise added to a deterministic "
                                     "policy's actions while collecting (a stochastic head samples instead).")
    eval_every: int = Field(10, ge=1, description="Iterations between evaluations (each a checkpoint and a report).")
    num_actors: int = Field(2, ge=1, description="Rollout actors collecting in parallel (ours; the paper: one env).")
    envs_per_actor: int = Field(1, ge=1, description="Environments each collecting actor steps together.")
    overlap: bool = Field(False, description="Collect iteration i+1 with iteration i's weights while the learner "
                          "updates (ours); false: the paper's schedule, collect then update.")
    rl_coeff: float = Field(0.1, ge=0.0, description="Weight of the critic term -Q1 in the actor loss (td3_odt, td3).")
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    tau: float = Field(0.005, gt=0.0, le=1.0, description="Soft update of the target critic and target DT.")
    policy_noise: float = Field(0.2, ge=0.0, description="TD3 target smoothing noise std.")
    noise_clip: float = Field(0.5, ge=0.0)
    policy_delay: int = Field(1, ge=1, description="Critic updates per actor update (MuJoCo 2).")
    critic_lr: float = Field(2e-4, gt=0.0, description="Critic AdamW learning rate (MuJoCo 1e-3).")
    critic_hidden: int = Field(256, ge=1)
    critic_layer_norm: bool = Field(True, description="Parameter-free LayerNorm in the critic (all but MuJoCo).")
    reward_scale: float = Field(1.0, gt=0.0, description="The critic learns from the env reward times this: the "
                                "authors' env-side divisor (0.01 pen, door, relocate; 0.001 hammer; 1 for MuJoCo, "
                                "AntMaze and mazes: their main.py:35, 249-251). Their return-to-go scale (0.001 "
                                "outside Adroit and mazes) never reaches the critic (data.py:102, trainer.py:694).")
    rl_from_start: bool = Field(False, description="The actor's loss has the critic term during the offline steps "
                                "too (sup_coeff x supervised + rl_coeff x -Q1; the authors' RL_from_start, AntMaze); "
                                "false: offline steps are supervised while the critic trains beside them. No effect "
                                "with method 'odt' (no critic term), as the authors' flag, so one task can set it for "
                                "every method.")

    @model_validator(mode="after")
    def _method_coefficients(self) -> "OnlineConfig":
        if self.method == "odt" and "rl_coeff" in self.model_fields_set and self.rl_coeff > 0:
            raise ValueError(f"online.rl_coeff: method 'odt' has no critic term (got {self.rl_coeff}); use "
                             "method td3_odt for supervised + critic")
        if self.method in ("td3_odt", "td3") and self.rl_coeff == 0:
            raise ValueError(f"online.rl_coeff: method {self.method!r} needs rl_coeff > 0 (0 is method 'odt')")
        return self

    @property
    def sup_coeff(self) -> float:
        """Weight of the supervised term: 0 for 'td3' (the authors' actor_sup_coeff), else 1."""
        return 0.0 if self.method == "td3" else 1.0


CONTINUAL_METHODS = ("l2m", "l2m_oracle", "lora", "ft", "ewc", "l2", "l2p", "joint", "single")


class PoolConfig(_Strict):
    """L2M's modulation pool (REFERENCE_L2M.md "The modulation pool"; `lamo_ray.continual.pool`)."""

    size: int = Field(30, ge=1, description="Modulators in the pool (L2M: 30).")
    rank: int = Field(8, ge=1, description="LoRA rank of each modulator (L2M: 8).")
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha; the update is scaled by alpha / rank (L2M: 16).")
    top_k: int = Field(1, ge=1, description="Modulators selected per sample (L2M: 1, the only value built).")
    key_loss: float = Field(0.5, ge=0.0, description="Weight of the key pull term -cos(key, query) (L2M: 0.5).")

    @model_validator(mode="after")
    def _top_k_fits(self) -> "PoolConfig":
        if self.top_k > self.size:
            raise ValueError(f"continual.pool.top_k ({self.top_k}) is larger than the pool (size {self.size})")
        if self.top_k != 1:
            raise ValueError(f"continual.pool.top_k {self.top_k}: L2M selects one modulator per sample; only 1 is built")
        return self


class PromptPoolConfig(_Strict):
    """L2P's prompt pool as L2M's baseline (REFERENCE_L2M.md "Baselines"; ml-jku/L2M ``prompt/l2p.py``,
    ``prompt_kwargs/l2p.yaml``; `lamo_ray.continual.prompts`)."""

    size: int = Field(100, ge=1, description="Prompts in the pool (L2M's L2P: 100).")
    length: int = Field(5, ge=1, description="Tokens per prompt and layer (L2M's L2P: 5).")
    top_k: int = Field(5, ge=1, description="Prompts selected per sample, by key similarity (L2M's L2P: 5).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the selected prompts in training (L2M's "
                           "Prompt default 0.1).")
    key_loss: float = Field(0.5, ge=0.0, description="Weight of the key pull term -sum_k cos(key_k, query) (L2M: "
                            "pull_constraint_coef 0.5).")

    @model_validator(mode="after")
    def _top_k_fits(self) -> "PromptPoolConfig":
        if self.top_k > self.size:
            raise ValueError(f"continual.prompt_pool.top_k ({self.top_k}) is larger than the pool (size {self.size})")
        return self


class MDDTConfig(_Strict):
    """L2M's multi-domain DT sizes (`lamo_ray.mddt`)."""

    state_dim: int = Field(204, ge=1, description="Shared state space; a task's states are zero-padded to it.")
    action_dim: int = Field(6, ge=1, description="Shared action size; a task's actions are zero-padded, and masked.")
    action_bins: int = Field(64, ge=2, description="Tokens per action dimension, over [-1, 1].")
    action_dim_embedding: bool = Field(False, description="Add an embedding of the action dimension's index to its "
                                       "token (L2M's a_pos_embds, off in its configs).")


class ContinualConfig(_Strict):
    """Multi-task pre-training, then continual fine-tuning over a task sequence (L2M; Continual World's
    protocol, REFERENCE_L2M.md). Each stage trains on one task's data only and every ``eval_every``
    steps evaluates every task of ``eval_tasks`` (default: the sequence)."""

    pretrain_tasks: list[str] = Field(min_length=1, description="Tasks of the multi-task pre-training for "
                                      "train.steps steps, all of the MDDT trained: Meta-World tasks and DMControl "
                                      "tasks (<domain>-<task>, dmc10) in any mix (L2M: mt40 + dmc10); batches mixed "
                                      "as pretrain_mixing says.")
    pretrain_datasets: list[str] = Field(default_factory=list, description="More pre-training data: dataset "
                                         "sources of the project's other continuous-control domains (e.g. "
                                         "lamo/mujoco/hopper/medium-v0, D4RL/pointmaze/umaze-v2), states zero-padded "
                                         "on the right into the shared space as Meta-World's; each scaled by "
                                         "continual.rtg_scales of its domain, else that domain's evaluation scale "
                                         "(MuJoCo 1000), else data.rtg_scale. Never evaluated.")
    pretrain_mixing: Literal["task", "domain"] = Field(
        "task", description="How pre-training batches mix their tasks: 'task' (each sample's task uniform over the "
        "tasks) or 'domain' (L2M's: each batch from one domain, the domains in turn, tasks uniform within it; with "
        "train.grad_accumulation = the number of domains every optimiser step takes one batch of each).")
    sources: dict[str, str] = Field(default_factory=dict, description="Data-source templates per domain "
                                    "('metaworld', 'dmcontrol'), for that domain's tasks instead of data.source; "
                                    "placeholders {task} and {task_underscored} (L2M's DMC files: "
                                    "'~/data/dm_control/{task_underscored}.npz').")
    rtg_scales: dict[str, float] = Field(default_factory=dict, description="Return-to-go and reward divisor per "
                                         "domain for that domain's tasks instead of data.rtg_scale (L2M: metaworld "
                                         "200, dmcontrol 100).")
    tasks: list[str] = Field(min_length=1, description="The continual sequence, in order ('cw10' for Continual "
                             "World's).")
    steps_per_task: int = Field(ge=1, description="Training steps of each stage (Continual World: 100k).")
    eval_every: int = Field(ge=1, description="Steps between evaluations within a stage (each stage's end too).")
    eval_tasks: list[str] | None = Field(None, description="Tasks evaluated at each evaluation; default the sequence.")
    eval_episodes: int = Field(5, ge=1, description="Episodes per task and evaluation (L2M: 5).")
    target_return: Literal["expert", "data_max"] = Field(
        "expert", description="Each evaluated task's target return: 'expert' (the mean return of the scripted expert "
        "recorded in the task's dataset as ref_max_score) or 'data_max' (L2M's rule: the largest episode return in the "
        "task's dataset; its envs/target_returns.py tables are its datasets' maxima).")
    success_rule: Literal["last_step", "any_step"] = Field(
        "any_step", description="When an evaluation episode is a success: 'last_step' (L2M's rule: info['success'] "
        "at the episode's last step, ml-jku/L2M src/callbacks/custom_eval_callback.py:298-303) or 'any_step' "
        "(Continual World's SuccessCounter: the flag set at any step). Logged with the trial's params, so every "
        "success rate says which rule made it; only domains with a success flag (Meta-World) can be scored.")
    method: Literal["l2m", "l2m_oracle", "lora", "ft", "ewc", "l2", "l2p", "joint", "single"] = Field(
        description="l2m (pool selected by keys), l2m_oracle (L2M's task mask: the keys select within the task's group of "
        "pool.size // len(tasks) modulators), lora (one "
        "modulator for every task), ft (the whole model fine-tuned), ewc / l2 (ft with a penalty pulling the "
        "weights towards the previous stage's end, weighted by the Fisher information / uniformly), l2p (a pool of "
        "prompts prepended to every layer's input, the top-k chosen per sample by their keys; the model frozen), "
        "joint (the upper "
        "bound: every stage trains on all the sequence's tasks at once), single (forward transfer's reference: every "
        "stage starts again from the pre-trained weights).")
    lr: float = Field(1e-4, gt=0.0, description="Constant learning rate of the continual stages (L2M).")
    penalty: float = Field(400.0, ge=0.0, description="ewc / l2: the penalty's weight lambda (L2M: ewc_lambda 400, "
                           "for both).")
    fisher_batches: int = Field(10, ge=1, description="ewc: batches of the finished stage's data whose squared "
                                "gradients are averaged into the Fisher information (L2M: 10).")
    pool: PoolConfig = Field(default_factory=PoolConfig)
    prompt_pool: PromptPoolConfig = Field(default_factory=PromptPoolConfig)
    mddt: MDDTConfig = Field(default_factory=MDDTConfig)

    @field_validator("pretrain_tasks", "tasks", "eval_tasks")
    @classmethod
    def _tasks_known(cls, v: list[str] | None, info) -> list[str] | None:
        """Meta-World and DMControl task names (did-you-mean), with named lists (cw10, mt40, mt50, dmc10)
        expanded (`lamo_ray.continual.check_continual_tasks`)."""
        from lamo_ray.continual import check_continual_tasks

        return None if v is None else check_continual_tasks(v, key=f"continual.{info.field_name}")

    @field_validator("sources", "rtg_scales")
    @classmethod
    def _domains_known(cls, v: dict, info) -> dict:
        from lamo_ray import domains
        from lamo_ray.continual import CONTINUAL_DOMAINS, PLACEHOLDERS

        known = CONTINUAL_DOMAINS if info.field_name == "sources" else [d.name for d in domains.registered()]
        for domain, value in v.items():
            if domain not in known:
                raise ValueError(f"continual.{info.field_name}: unknown domain {domain!r} (known: "
                                 f"{', '.join(known)})")
            if info.field_name == "sources" and not any(p in value for p in PLACEHOLDERS):
                raise ValueError(f"continual.sources.{domain}: {value!r} has no {' or '.join(PLACEHOLDERS)} placeholder")
            if info.field_name == "rtg_scales" and not value > 0:
                raise ValueError(f"continual.rtg_scales.{domain}: must be > 0, got {value}")
        return v

    @model_validator(mode="after")
    def _sequence_is_success_scored(self) -> "ContinualConfig":
        from lamo_ray.continual import SUCCESS_RULES, task_domain

        for key, tasks in (("tasks", self.tasks), ("eval_tasks", self.eval_tasks or [])):
            scoreless = [t for t in tasks if self.success_rule not in SUCCESS_RULES[task_domain(t)]]
            if scoreless:
                raise ValueError(f"continual.{key}: {scoreless} are DMControl tasks, which have no success flag for "
                                 f"continual.success_rule {self.success_rule!r}; the continual sequence and its "
                                 "evaluations are scored by success (Continual World's metrics). DMControl tasks go in "
                                 "continual.pretrain_tasks (L2M: mt40 + dmc10)")
        return self

    @model_validator(mode="after")
    def _oracle_has_a_modulator_per_task(self) -> "ContinualConfig":
        if self.method != "l2m_oracle":
            return self
        n, size = len(dict.fromkeys(self.tasks)), self.pool.size
        if size < n:
            raise ValueError(f"continual.pool.size {size}: the task-id oracle needs a modulator per task ({n} tasks)")
        unseen = [t for t in self.evaluated if t not in self.tasks]
        if unseen and size % n == 0:    # L2M's task mask (continual.pool.oracle_groups) leaves no remainder group
            raise ValueError(f"continual.pool.size {size}: the oracle's task mask splits it into {n} groups of "
                             f"{size // n} with no modulator left for the evaluated tasks outside the sequence "
                             f"{unseen}; a size that is not a multiple of {n} leaves one")
        return self

    @field_validator("pretrain_datasets")
    @classmethod
    def _datasets_have_a_domain(cls, v: list[str]) -> list[str]:
        from lamo_ray import domains
        from lamo_ray.continual import PLACEHOLDERS

        for source in v:
            if any(p in source for p in PLACEHOLDERS):
                raise ValueError(f"continual.pretrain_datasets: {source!r} is one dataset, not a template (tasks with "
                                 "templates go in continual.pretrain_tasks)")
            if domains.for_dataset(source) is None:
                raise ValueError(f"continual.pretrain_datasets: no domain serves {source!r} (its return scale and "
                                 "episodes come from its domain: " + ", ".join(d.name for d in domains.registered()) + ")")
        if len(set(v)) != len(v):
            raise ValueError(f"continual.pretrain_datasets: {v} lists a dataset twice")
        return v

    @property
    def pretrain_sources(self) -> list[str]:
        """What pre-training mixes: ``pretrain_tasks`` then ``pretrain_datasets`` (each named by its source)."""
        return [*self.pretrain_tasks, *self.pretrain_datasets]

    @property
    def evaluated(self) -> list[str]:
        """The tasks of every evaluation: ``eval_tasks``, else the sequence (each once)."""
        return list(dict.fromkeys(self.eval_tasks if self.eval_tasks is not None else self.tasks))


class TrialConfig(_Strict):
    """Everything one training run needs."""

    seed: int = 0
    task: str | None = Field(None, description="Name of the sweep's `tasks` entry this trial takes its settings "
                             "from (a label; the settings are merged by `resolve_trial`).")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    online: OnlineConfig | None = Field(None, description="Online fine-tuning after the offline steps; none: "
                                        "offline only.")
    continual: ContinualConfig | None = Field(None, description="L2M: multi-task pre-training of a multi-domain DT "
                                              "for train.steps, then a continual task sequence; data.source is a "
                                              "template with {task}.")

    @model_validator(mode="after")
    def _continual_fits(self) -> "TrialConfig":
        if self.continual is None:
            if "{task}" in self.data.source or "{task_underscored}" in self.data.source:
                raise ValueError(f"data.source {self.data.source!r} has a task placeholder, which only a "
                                 "continual: section fills")
            if self.train.grad_accumulation != 1:
                raise ValueError(f"train.grad_accumulation {self.train.grad_accumulation}: only a continual trial's "
                                 "pre-training accumulates gradients (L2M); offline and online trials take one batch "
                                 "per optimiser step, so set it to 1")
            return self
        from lamo_ray.continual import PLACEHOLDERS, episode_steps, task_domain

        needs = {task_domain(t) for t in [*self.continual.pretrain_tasks, *self.continual.tasks]}
        if any(d not in self.continual.sources for d in needs) and not any(p in self.data.source for p in PLACEHOLDERS):
            raise ValueError(f"continual: data.source must be a template with {{task}} (e.g. "
                             f"'lamo/metaworld/{{task}}-v0'), got {self.data.source!r}")
        # DT clips timesteps past the table (Meta-World sweeps may size it below 200); DMControl's 1000-step
        # episodes in a table sized for Meta-World would have most of their steps clipped, so that is an error
        if "dmcontrol" in needs and self.data.max_ep_len < episode_steps("dmcontrol"):
            raise ValueError(f"data.max_ep_len {self.data.max_ep_len}: DMControl episodes have "
                             f"{episode_steps('dmcontrol')} steps, most of whose timesteps the table would clip; set "
                             f"data.max_ep_len >= {episode_steps('dmcontrol')} (L2M: 1000)")
        from lamo_ray import domains

        for source in self.continual.pretrain_datasets:
            evaluation = domains.for_dataset(source).evaluation
            if evaluation is not None and (evaluation.max_episode_steps or 0) > self.data.max_ep_len:
                raise ValueError(f"data.max_ep_len {self.data.max_ep_len}: continual.pretrain_datasets {source!r} has "
                                 f"episodes of up to {evaluation.max_episode_steps} steps, whose later timesteps the "
                                 f"table would clip; set data.max_ep_len >= {evaluation.max_episode_steps}")
        if self.online is not None:
            raise ValueError("online: and continual: are two different second phases; a trial has at most one")
        if self.train.num_workers != 1:
            raise ValueError(f"continual: needs train.num_workers 1 (got {self.train.num_workers})")
        if self.model.finetune == "lora":
            raise ValueError("continual: model.finetune 'lora' is not an MDDT pre-training mode: set model.finetune "
                             "to 'full' (L2M) or 'frozen'; LoRA in the continual stages is continual.method")
        if self.train.lr_schedule == "lamo_atari":
            raise ValueError("train.lr_schedule 'lamo_atari' counts the non-NOOP actions of Atari batches; a continual "
                             "trial's multi-domain batches have none: use 'constant' or 'cosine'")
        return self

    @property
    def data_sources(self) -> dict[str | None, str]:
        """``{task: dataset source}`` of every task a continual trial reads (pre-training, sequence,
        evaluation); ``{None: data.source}`` for other trials."""
        if self.continual is None:
            return {None: self.data.source}
        from lamo_ray.continual import fill_source, task_domain

        c = self.continual
        tasks = dict.fromkeys([*c.pretrain_tasks, *c.tasks, *c.evaluated])
        out = {t: fill_source(c.sources.get(task_domain(t), self.data.source), t) for t in tasks}
        return {**out, **{source: source for source in c.pretrain_datasets}}

    def rtg_scale_of(self, task: str) -> float:
        """A continual task's return-to-go divisor: ``continual.rtg_scales`` of its domain, else
        ``data.rtg_scale``; for a ``continual.pretrain_datasets`` entry, its domain's, else the domain's
        evaluation scale (LaMo's: MuJoCo 1000), else ``data.rtg_scale``."""
        from lamo_ray import domains
        from lamo_ray.continual import task_domain

        assert self.continual is not None
        domain, default = task_domain(task), self.data.rtg_scale
        if task in self.continual.pretrain_datasets and domains.get(domain).evaluation is not None:
            default = domains.get(domain).evaluation.rtg_scale
        return float(self.continual.rtg_scales.get(domain, default))

    @property
    def continual_steps(self) -> int:
        """Steps of the continual stages (``len(tasks) x steps_per_task``; 0 without a continual section)."""
        return 0 if self.continual is None else len(self.continual.tasks) * self.continual.steps_per_task

    @model_validator(mode="after")
    def _eval_context_fits(self) -> "TrialConfig":
        if self.eval.context_length is not None and self.eval.context_length > self.data.context_length:
            raise ValueError(f"eval.context_length ({self.eval.context_length}) exceeds data.context_length "
                             f"({self.data.context_length}): a rollout cannot condition on more steps than the model "
                             "was trained on")
        return self

    @model_validator(mode="after")
    def _online_fits(self) -> "TrialConfig":
        if self.online is None:
            return self
        head = self.model.action_head
        if self.online.method == "odt" and head != "tanh_gaussian":
            raise ValueError("online.method 'odt' needs model.action_head: tanh_gaussian (Online DT's stochastic "
                             f"head; the authors' code asserts it), got {head!r}")
        if self.online.method != "odt" and head != "deterministic":
            raise ValueError(f"online.method {self.online.method!r} trains a deterministic policy with the critic's "
                             f"gradient: it needs model.action_head: deterministic, got {head!r}")
        if self.online.method != "odt" and self.model.action_tanh is None:
            self.model.action_tanh = True  # the authors' bounded head, whatever the embedding (logged resolved)
        if self.online.method != "odt" and not self.model.bounded_actions:
            raise ValueError(f"model.action_tanh: online.method {self.online.method!r} needs actions bounded to "
                             "[-1, 1] (the authors' head ends in tanh; -Q would push actions where the critic never "
                             "trained): remove model.action_tanh: false")
        if self.train.lr_schedule != "constant":
            raise ValueError(f"online: needs train.lr_schedule 'constant' (got {self.train.lr_schedule!r}): the DT's "
                             "scheduler keeps stepping through the online phase, which a schedule over train.steps "
                             "would spend at its floor (Online DT and ODT-TD3: warm-up, then constant)")
        if self.train.num_workers != 1:
            raise ValueError(f"online: needs train.num_workers 1 (got {self.train.num_workers}); the online phase "
                             "learns in one process while rollout actors collect")
        return self

    @property
    def online_steps(self) -> int:
        """Learner updates of the online phase (``iterations x updates_per_iteration``; 0 offline only)."""
        return 0 if self.online is None else self.online.iterations * self.online.updates_per_iteration

    @property
    def total_steps(self) -> int:
        """The last step a trial reports: ``train.steps`` plus `online_steps` (one per online actor update)
        plus `continual_steps`."""
        return self.train.steps + self.online_steps + self.continual_steps


class SchedulerConfig(_Strict):
    """Tune scheduler. ASHA stops trials on the evaluation normalized score, in training steps."""

    type: Literal["asha", "fifo"] = "asha"
    metric: str = SCORE_METRIC
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(2500, ge=1, description="Steps before a trial can be stopped.")
    reduction_factor: float = Field(2.0, gt=1.0)

    def rungs(self, max_t: int) -> list[int]:
        """ASHA's milestones in training steps, ascending: ``grace_period * reduction_factor**k`` below
        ``max_t`` (Ray's ``_Bracket`` with one bracket, as `lamo_ray.sweep` configures it); [] for FIFO."""
        if self.type != "asha":
            return []
        count = int(math.log(max_t / self.grace_period) / math.log(self.reduction_factor) + 1)
        return [int(self.grace_period * self.reduction_factor ** k) for k in range(max(count, 0))]


class ConfirmConfig(_Strict):
    """Confirmation stage of a hyperparameter search: after the search (the sweep's variants x search
    domains x seeds under ``scheduler``, usually ASHA), the ``top_k`` configurations of each variant
    are trained again to their full ``train.steps`` with the fresh ``seeds``, every trial to the end
    (FIFO), in the same sweep command and MLflow parent run. The report scores arms only from these
    trials: an ASHA arm is a mean over the seeds that survived, and the best of many configurations
    is biased upward by the selection itself (REFERENCE.md "Evaluation").

    Ranking of the search (per variant, over a configuration's search seeds): furthest step reached
    first (what ASHA let run longest), then the mean of the last evaluation's ``scheduler.metric``."""

    top_k: int = Field(1, ge=1, description="Configurations per variant to confirm.")
    seeds: list[int] = Field(min_length=1, description="Seeds of the confirmation trials; none may be a search seed.")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"confirm.seeds must be unique, got {v}")
        return v


class TrackingConfig(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; default the sweep name.")


SEARCH_DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")


class SweepConfig(_Strict):
    """A sweep file. ``base`` may hold search domains ({grid: [...]}, ...) at any leaf."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"default": {}}, min_length=1)
    tasks: dict[str, dict[str, Any]] | None = Field(
        None, description="Named settings of a task (its dataset, evaluation env, target returns, ...), chosen by "
        "base.task (usually {grid: [...]}): a trial is base + its task + its variant, and the report compares "
        "variants task by task.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    num_samples: int = Field(1, ge=1, description="Samples of the random domains per grid point.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage_path: str = Field("~/lamo_ray_results", description="Ray Tune results and checkpoints.")
    trial_cpus: float = Field(0.01, gt=0.0, description="CPU share of each trial's driver (it only waits on its workers).")
    max_concurrent_trials: int | None = Field(None, ge=1)
    report_baseline: str = Field(DEFAULT_BASELINE, description="Variant the report compares every other variant with.")
    confirm: ConfirmConfig | None = Field(None, description="Search-then-confirm: re-run the best configurations "
                                          "of each variant with fresh seeds to the end (see ConfirmConfig).")

    _origin: str = PrivateAttr("sweep")

    @functools.cached_property
    def trials(self) -> list[dict[str, Any]]:
        """The trial table (`expand_trials`), expanded and validated once per sweep."""
        return expand_trials(self, origin=self._origin)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be unique, got {v}")
        return v

    @model_validator(mode="after")
    def _tasks_are_chosen(self) -> "SweepConfig":
        chosen = self.base.get("task")
        if self.tasks is None:
            if chosen is not None:
                raise ValueError(f"base.task is {chosen!r} but the sweep has no tasks: section to take it from")
            return self
        if not self.tasks:
            raise ValueError("tasks: is empty; give at least one named task, or remove the section")
        if chosen is None:
            raise ValueError(f"tasks: defined ({', '.join(self.tasks)}) but base.task does not choose one: set "
                             f"base.task: {{grid: [{', '.join(self.tasks)}]}} (or one name)")
        names = chosen[next(iter(chosen))] if _is_domain(chosen) else [chosen]
        for name in names if isinstance(names, list) else [names]:
            if name not in self.tasks:
                close = difflib.get_close_matches(str(name), list(self.tasks), n=1)
                raise ValueError(f"base.task: unknown task {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (tasks: {', '.join(self.tasks)})")
        swept = set(find_domains(self.base))
        for name, overrides in self.tasks.items():
            if find_domains(overrides):
                raise ValueError(f"tasks.{name}: search domains belong in base, not in tasks "
                                 f"(at {', '.join(find_domains(overrides))})")
            clash = sorted(p for p in _leaf_paths(overrides) if p in swept or p == "task")
            if clash:
                raise ValueError(f"tasks.{name} sets {', '.join(clash)}, which base sweeps: the task would override "
                                 "every swept value")
        return self

    @model_validator(mode="after")
    def _confirm_needs_a_search(self) -> "SweepConfig":
        if self.confirm is None:
            return self
        reused = sorted(set(self.confirm.seeds) & set(self.seeds))
        if reused:
            raise ValueError(f"confirm.seeds must be fresh seeds: {reused} also in seeds {self.seeds} (a confirmation "
                             "run on a search seed repeats the run it was selected on)")
        if not find_domains(self.base):
            raise ValueError("confirm: base has no search domains ({grid: ...}, {loguniform: ...}, ...), so there is "
                             "no configuration to select; for more seeds of one configuration extend seeds instead")
        return self


# --------------------------------------------------------------------------- helpers


def _format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str, origin: str) -> str:
    return "\n".join(_format_error(e, model, prefix, origin) for e in err.errors())


def _format_error(e: dict[str, Any], model: type[BaseModel], prefix: str, origin: str) -> str:
    """One pydantic error as ``origin: key.path: message`` (did-you-mean for unknown keys)."""
    loc = [str(p) for p in e["loc"]]
    path = ".".join([prefix] + loc if prefix else loc)
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        parent = _submodel(model, loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(loc[-1], known, n=1)
        msg = f"unknown key '{loc[-1]}'" + (f" (did you mean '{close[0]}'?)" if close else "")
        if known:
            msg += f"; valid keys: {', '.join(known)}"
    elif e["type"] == "value_error":  # our validators' messages already name the values
        msg = msg.removeprefix("Value error, ")
        msg = msg.removeprefix(f"{'.'.join(loc)}: ") if loc else msg      # ... and some their key too
    elif "input" in e and e["type"] not in ("missing",):
        msg = f"{msg} (got {e['input']!r})" + _domain_hint(e["input"])
    return f"{origin}: {path}: {msg}" if path else f"{origin}: {msg}"


def _domain_hint(value: Any) -> str:
    """For a one-key mapping where a value was expected: a did-you-mean for a misspelled search domain."""
    if not (isinstance(value, dict) and len(value) == 1):
        return ""
    key = str(next(iter(value)))
    close = difflib.get_close_matches(key, SEARCH_DOMAINS, n=1)
    return (f"; '{key}' is not a search domain" + (f" (did you mean '{close[0]}'?)" if close else "")
            + f"; domains: {', '.join(SEARCH_DOMAINS)}")


def _submodel(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        current = field.annotation
        if not isinstance(current, type):  # an optional section (``OnlineConfig | None``): its model
            current = next((a for a in typing.get_args(current) if isinstance(a, type) and issubclass(a, BaseModel)),
                           current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validate_trial(raw: dict[str, Any], prefix: str = "", origin: str = "config") -> TrialConfig:
    """Validate a nested dict into a `TrialConfig`. Raises `ConfigError` naming the key path."""
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, TrialConfig, prefix, origin)) from None


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating dicts on the way."""
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with ``overrides`` applied; override keys may be dotted paths."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        target = _get_path(out, key)
        if isinstance(value, dict) and not _is_domain(value) and isinstance(target, dict):
            set_path(out, key, deep_merge(target, value))
        else:
            set_path(out, key, copy.deepcopy(value))
    return out


def _get_path(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def _is_domain(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SEARCH_DOMAINS


def find_domains(tree: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """All search domains in a nested dict, as ``{dotted.path: {kind: args}}``."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if _is_domain(value):
            found[path] = value
        elif isinstance(value, dict):
            found.update(find_domains(value, path))
    return found


def _domain_points(path: str, domain: dict[str, Any], origin: str) -> list[Any]:
    """Values of a domain to validate: every grid/choice value, or the bounds of a range."""
    kind, args = next(iter(domain.items()))
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{origin}: base.{path}: {{{kind}: ...}} needs a non-empty list, got {args!r}")
        return args
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
        raise ConfigError(f"{origin}: base.{path}: {{{kind}: [lo, hi]}} needs two numbers, got {args!r}")
    lo, hi = args
    if not lo < hi:
        raise ConfigError(f"{origin}: base.{path}: {{{kind}: [lo, hi]}} needs lo < hi, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{origin}: base.{path}: loguniform bounds must be > 0, got {args!r}")
    if kind == "randint":
        return [int(lo), int(hi) - 1]
    return [lo, hi]


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.path=value`` (value read as YAML). Raises `ConfigError` on a missing '='."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value of {key} is not valid YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override and validate a sweep YAML file, checking every trial it expands to.

    ``overrides`` are ``key.path=value`` strings; a path starting with a trial section
    (data, model, language, train, eval, seed) applies to ``base``.

    Raises:
        ConfigError: missing or malformed file, unknown keys, bad values (naming the key path).
    """
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise ConfigError(f"{origin}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: malformed YAML: {_yaml_problem(err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{origin}: cannot read sweep file ({err})") from None
    if raw is None:
        raise ConfigError(f"{origin}: sweep file is empty; it needs at least name and base.data.source")
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    for text in overrides or []:
        key, value = parse_override(text)
        if key.split(".")[0] in TrialConfig.model_fields:
            key = f"base.{key}"
        set_path(raw, key, value)
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, SweepConfig, "", origin)) from None
    sweep._origin = origin
    max_steps = max(r["config"].total_steps for r in sweep.trials)  # expands and validates every trial, once
    if sweep.scheduler.type == "asha" and sweep.scheduler.grace_period > max_steps:
        raise ConfigError(f"{origin}: scheduler.grace_period ({sweep.scheduler.grace_period}) exceeds the longest "
                          f"trial's train.steps ({max_steps}); ASHA could never compare trials")
    return sweep


def expand_trials(sweep: SweepConfig, origin: str = "sweep") -> list[dict[str, Any]]:
    """The trial table: one row per (variant, grid point, seed).

    Each row is ``{"variant": str, "seed": int, "params": {dotted: value or domain}, "config": TrialConfig}``
    where ``config`` is validated with random domains at a bound (the real value is drawn by Tune).

    Raises:
        ConfigError: a variant or grid point that does not validate, naming variant and key.
    """
    domains = find_domains(sweep.base)
    grid_paths = [p for p, d in domains.items() if next(iter(d)) == "grid"]
    random_paths = [p for p in domains if p not in grid_paths]
    grid_values = [_domain_points(p, domains[p], origin) for p in grid_paths]
    random_points = {p: _domain_points(p, domains[p], origin) for p in random_paths}
    rows = []
    for variant, overrides in sweep.variants.items():
        for combo in itertools.product(*grid_values) if grid_paths else [()]:
            grid_point = dict(zip(grid_paths, combo))
            # validate every random-domain bound, once per grid point
            n_checks = max([len(v) for v in random_points.values()] or [1])
            for i in range(n_checks):
                params = dict(grid_point)
                params.update({p: vals[min(i, len(vals) - 1)] for p, vals in random_points.items()})
                for seed in sweep.seeds:
                    resolved = resolve_trial(sweep, variant, seed, params, origin=origin)
                    if i == 0:
                        shown = dict(grid_point)
                        shown.update({p: domains[p] for p in random_paths})
                        rows.append({"variant": variant, "seed": seed, "params": shown, "config": resolved})
    return rows


#: keys of a Tune trial's config besides the search-domain key paths (`lamo_ray.sweep` param spaces)
TUNE_KEYS = ("variant", "seed", "stage", "point")


def tune_variant_and_params(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(variant, {key path: value})`` of a Tune trial's ``config``: a search trial holds ``variant``
    and one entry per search-domain key path; a confirmation trial holds them in ``point``."""
    point = config.get("point")
    if point is not None:
        return point["variant"], dict(point["params"])
    return config["variant"], {k: v for k, v in config.items() if k not in TUNE_KEYS}


def resolve_tune_config(sweep: SweepConfig, config: dict[str, Any]) -> TrialConfig:
    """The `TrialConfig` of a Tune trial's ``config`` (`tune_variant_and_params`, plus ``seed``), as
    `lamo_ray.sweep` builds the param spaces. Raises as `resolve_trial`."""
    variant, params = tune_variant_and_params(config)
    return resolve_trial(sweep, variant, config["seed"], params)


def resolve_trial(sweep: SweepConfig, variant: str, seed: int, params: dict[str, Any],
                  origin: str = "sweep") -> TrialConfig:
    """Base config + sampled params + the chosen task's settings + variant overrides + seed, validated.

    Raises:
        ConfigError: unknown variant or task, or invalid result, naming the variant, task or base and the
            key path.
    """
    if variant not in sweep.variants:
        raise ConfigError(f"{origin}: unknown variant {variant!r}; known: {', '.join(sweep.variants)}")
    raw = copy.deepcopy(sweep.base)
    for p, value in params.items():
        set_path(raw, p, value)
    task = raw.get("task")
    task_overrides: dict[str, Any] = {}
    if task is not None and not _is_domain(task):
        if not sweep.tasks or task not in sweep.tasks:
            raise ConfigError(f"{origin}: task: unknown task {task!r}; known: {', '.join(sweep.tasks or []) or 'none'}")
        task_overrides = sweep.tasks[task]
        raw = deep_merge(raw, task_overrides)
    raw = deep_merge(raw, sweep.variants[variant])
    raw["seed"] = seed
    leftover = find_domains(raw)
    if leftover:
        raise ConfigError(f"{origin}: search domains not resolved at {', '.join(leftover)} "
                          "(domains belong in base, not in variants)")
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        # name each bad key where the user wrote it: the variant if it sets that key, else base
        lines = []
        for e in err.errors():
            where = "base"
            for prefix, tree in ((f"variants.{variant}", sweep.variants[variant]), (f"tasks.{task}", task_overrides)):
                if _sets(tree, e):
                    where = prefix
                    break
            lines.append(_format_error(e, TrialConfig, where, origin))
        raise ConfigError("\n".join(lines)) from None


def _sets(tree: dict[str, Any], error: dict[str, Any]) -> bool:
    """Whether the override mapping ``tree`` sets the key a pydantic ``error`` is about (or, for a rule
    across sections, which has no location, a key its message names)."""
    loc = ".".join(str(p) for p in error["loc"])
    paths = _leaf_paths(tree)
    if any(p == loc or p.startswith(loc + ".") or loc.startswith(p + ".") for p in paths):
        return True
    return not loc and any(p in error["msg"] for p in paths)


def _leaf_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values a (possibly dotted-key) override mapping sets."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and not _is_domain(value):
            out |= _leaf_paths(value, path)
        else:
            out.add(path)
    return out


def asdict_flat(cfg: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Flatten a config to ``{dotted.key: value}`` (lists as strings), for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in cfg.model_dump().items():
        _flatten(out, f"{prefix}{key}", value)
    return out


def _flatten(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(out, f"{key}.{k}", v)
    else:
        out[key] = value


def torch_threads(cpus: float) -> int:
    """Torch intra-op threads for a process granted ``cpus`` Ray CPUs (FACTS: match threads to CPUs)."""
    return max(1, int(math.floor(cpus + 0.5)))
