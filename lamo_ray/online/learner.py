"""One ODT-TD3 learner update on a Decision Transformer (the authors' ``trainer.py``;
docs/references/odt_td3.md "Critic and TD3"), for deterministic action heads (TD3+ODT, and TD3 alone
with ``sup_coeff`` 0; ODT's stochastic variant uses `lamo_ray.online.stochastic`).

Per batch (`lamo_ray.data.sampling.SegmentSampler.sample` with ``transitions=True``):

1. critic: target actions from the target (EMA) DT on the window shifted by one step, smoothed
   (`target_actions`), then TD3's twin-Q loss (`critic_loss`) at the real positions that have a
   successor or are terminal; one step of the critic's own optimiser (AdamW);
2. every ``policy_delay`` batches, the actor: ``sup_coeff x`` masked MSE to the data's actions
   ``+ rl_coeff x (-Q1(s_t, DT(s)_t))`` over the real positions; one step of the DT's optimiser (its
   trainable parameters only: with LoRA the critic's gradient reaches LoRA, embeddings and head, never
   the frozen trunk); then the target critic and the target DT move ``tau`` toward their sources.

Rewards enter the critic multiplied by ``reward_scale``: the authors' env-side reward divisor (0.01 for
pen / door / relocate, 0.001 for hammer, 1 otherwise; their ``main.py`` lines 35 and 249-251). Their
return-to-go scale (0.001 outside Adroit and mazes, ``main.py`` line 142) multiplies only the
return-to-go (``data.py`` lines 145-148); the critic's target is ``rewards + (1 - d) gamma Q'`` on the
unscaled reward (``data.py`` line 102, ``trainer.py`` line 785 (TD3's target; 694 is AWAC's, the same formula)), so for MuJoCo it sees raw rewards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lamo_ray.config import OnlineConfig
from lamo_ray.learner import Learner
from lamo_ray.online.critic import TwinQ, critic_loss, ema_copy, soft_update, target_actions, td3_actor_loss
from lamo_ray.optim import MixedPrecision


class TD3Learner:
    """The DT (actor), its target, the twin critic, its target, and their learners (`lamo_ray.learner.Learner`).

    Args:
        model: a continuous-action `lamo_ray.model.DecisionTransformer` (pre-trained offline).
        actor: the DT's learner, the trial's own (its optimiser over the DT's trainable parameters, its LR
            schedule stepped after each actor step as the authors', ``train.grad_clip``, and
            ``train.precision``: the actor's forward and loss run under its autocast and its step goes
            through its fp16 scaler, as every offline step).
        device: where the model is and the critic goes; batches are moved there.
        state_dim, act_dim: sizes of one position's (normalised) state and action.
        online: the trial's ``online`` section (`lamo_ray.config.OnlineConfig`: ``sup_coeff``, ``rl_coeff``,
            ``gamma``, ``tau``, ``policy_noise``, ``noise_clip``, ``policy_delay``, ``critic_lr``,
            ``critic_hidden``, ``critic_layer_norm``, ``reward_scale``; validated there, one schema).
        action_low, action_high: the action range (target actions are clamped into it).

    The critic's learner: AdamW at ``online.critic_lr``, no clip, no schedule, fp32 whatever
    ``train.precision`` (a 256-wide MLP: autocast would save nothing, and its TD targets are where reduced
    precision would hurt).
    """

    def __init__(self, model: torch.nn.Module, actor: Learner, state_dim: int, act_dim: int, online: OnlineConfig,
                 action_low: float = -1.0, action_high: float = 1.0, device: str | torch.device = "cpu"):
        if online.method == "odt":
            raise ValueError("online.method 'odt' has no critic: TD3Learner is for 'td3_odt' and 'td3'")
        self.model, self.actor, self.online = model, actor, online
        self.device = torch.device(device)
        self.target_model = ema_copy(model)
        self.critic = TwinQ(state_dim, act_dim, online.critic_hidden, online.critic_layer_norm).to(self.device)
        self.target_critic = ema_copy(self.critic)
        self.critic_learner = Learner(torch.optim.AdamW(self.critic.parameters(), lr=online.critic_lr),
                                      MixedPrecision.for_device("fp32", self.device))
        self.low, self.high = action_low, action_high
        self.updates = 0

    def critic_update(self, t: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, float]:
        """One critic step (module docstring, 1.) on a ``transitions=True`` batch as tensors; returns
        ``online/critic_loss``, ``online/q1_mean``, ``online/q_target_mean``."""
        s = self.online
        mask = t["attention_mask"]
        with torch.no_grad():
            self.target_model.eval()
            next_pred = self.target_model(t["next_states"], t["next_actions"], t["next_returns_to_go"],
                                          t["next_timesteps"], mask)
            next_actions = target_actions(next_pred, s.policy_noise, s.noise_clip, self.low, self.high, generator)
        closs, info = critic_loss(self.critic, self.target_critic, t["states"], t["actions"],
                                  t["rewards"] * s.reward_scale, t["next_states"], next_actions, t["dones"],
                                  t["critic_mask"], s.gamma)
        self.critic_learner.update(closs)
        return {"online/critic_loss": closs.item(), "online/q1_mean": info["q1_mean"],
                "online/q_target_mean": info["target_mean"]}

    def hard_update_targets(self) -> None:
        """Copy the critic and the DT into their targets (the authors build a new ``SequenceTrainer`` for the
        online phase, ``main.py`` line 490, whose ``__init__`` deep-copies both: ``trainer.py`` lines 47, 51)."""
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_model.load_state_dict(self.model.state_dict())

    def soft_update_targets(self) -> None:
        """Move the target critic and the target DT ``tau`` toward their sources (after an actor step)."""
        soft_update(self.target_critic, self.critic, self.online.tau)
        soft_update(self.target_model, self.model, self.online.tau)

    def update(self, batch: dict[str, np.ndarray], generator: torch.Generator | None = None) -> dict[str, float]:
        """One update (module docstring) from a ``transitions=True`` batch; returns logging values
        (``online/critic_loss``, ``online/q1_mean``, ``online/q_target_mean``, and on actor steps
        ``online/actor_sup_loss``, ``online/actor_rl_loss``)."""
        s = self.online
        t = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        mask = t["attention_mask"]
        out: dict[str, Any] = self.critic_update(t, generator)
        self.updates += 1
        if self.updates % s.policy_delay:
            return out
        self.model.train()
        with self.actor.autocast():
            pred = self.model(t["states"], t["actions"], t["returns_to_go"], t["timesteps"], mask)
            loss, sup, rl = td3_actor_loss(self.critic, t["states"], pred.float(), t["actions"], mask, s.sup_coeff,
                                           s.rl_coeff)
        self.actor.update(loss)
        self.critic.zero_grad(set_to_none=True)  # the actor's loss does not train the critic
        self.soft_update_targets()
        out.update({"online/actor_sup_loss": sup.item(), "online/actor_rl_loss": rl.item()})
        return out

    def state_dict(self) -> dict[str, Any]:
        """Critic, targets and the critic's optimiser (for `--resume`). The DT's optimiser is the trial's
        `actor` learner's, saved once by its owner with the checkpoint (``optimizer.pt``); before, it was
        saved here a second time. A state that still holds it (``optimizer``) loads, the copy ignored."""
        return {"target_model": self.target_model.state_dict(), "critic": self.critic.state_dict(),
                "target_critic": self.target_critic.state_dict(),
                "critic_optimizer": self.critic_learner.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target_model.load_state_dict(state["target_model"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.critic_learner.optimizer.load_state_dict(state["critic_optimizer"])
        self.updates = int(state["updates"])
