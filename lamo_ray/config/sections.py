"""The trial's sections (`lamo_ray.config`): data, model, language loss, training, evaluation and the
online phase, on a strict base (unknown keys are errors), with `ConfigError` and how a validation
error is worded (key path, origin, did-you-mean).

Defaults follow the LaMo reference code (docs/references/lamo.md "Model", "Data", "Evaluation") unless a
field's description says "ours".
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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
    """Which trajectories to train on and how segments are cut (docs/references/lamo.md "Data")."""

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
    """peft LoRA on the attention QKV projection (docs/references/lamo.md "LoRA": rank 16, alpha 32, dropout 0.1)."""

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
    """The LaMo Decision Transformer (docs/references/lamo.md "Model")."""

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
    """Optimisation and Ray Train scaling (docs/references/lamo.md "Optimiser", "Training")."""

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
    """Rollout evaluation by Ray actors (docs/references/lamo.md "Evaluation"; ours: parallel and batched)."""

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
    docs/references/odt_td3.md "Online loop", "Critic and TD3"; defaults: the paper's Adroit / maze settings).

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
    rl_coeff: float | None = Field(None, ge=0.0, description="Weight of the critic term -Q1 in the actor loss; "
                                   "default 0.1 for td3_odt and td3 (the paper), 0 for odt (no critic term).")
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
                                "outside Adroit and mazes) never reaches the critic (data.py:102, trainer.py:785).")
    rl_from_start: bool = Field(False, description="The actor's loss has the critic term during the offline steps "
                                "too (sup_coeff x supervised + rl_coeff x -Q1; the authors' RL_from_start, AntMaze); "
                                "false: offline steps are supervised while the critic trains beside them. No effect "
                                "with method 'odt' (no critic term), as the authors' flag, so one task can set it for "
                                "every method.")

    @model_validator(mode="after")
    def _method_coefficients(self) -> "OnlineConfig":
        # the default resolved here, so a dumped config (a checkpoint's config.yaml) validates again as itself:
        # before, odt's dump held rl_coeff 0.1, read back as an explicit value and refused (found by --rehearse).
        # odt's 0 is the authors': actor_rl_coeff < 1e-10 is their ODT (KaiYan289/RL_as_Vitamin_for_Online_
        # Decision_Transformers main.py:42; get_args.py:69's default 0.1 is the TD3 arms')
        if self.rl_coeff is None:
            self.rl_coeff = 0.0 if self.method == "odt" else 0.1
        if self.method == "odt" and self.rl_coeff > 0:
            raise ValueError(f"online.rl_coeff: method 'odt' has no critic term (got {self.rl_coeff}); use "
                             "method td3_odt for supervised + critic")
        if self.method in ("td3_odt", "td3") and self.rl_coeff == 0:
            raise ValueError(f"online.rl_coeff: method {self.method!r} needs rl_coeff > 0 (0 is method 'odt')")
        return self

    @property
    def sup_coeff(self) -> float:
        """Weight of the supervised term: 0 for 'td3' (the authors' actor_sup_coeff), else 1."""
        return 0.0 if self.method == "td3" else 1.0


#: the search domains a sweep's ``base`` may hold at a leaf (`lamo_ray.config.sweep`); validation errors
#: suggest one for a misspelled domain
SEARCH_DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")


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
