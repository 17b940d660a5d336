"""Online fine-tuning of a Decision Transformer (ODT, and ODT with a TD3 critic: "Reinforcement
Learning Gradients as Vitamin for Online Fine-tuning Decision Transformers", NeurIPS 2024;
REFERENCE_ODT_TD3.md). Pieces, each following the authors' code (and Online DT's):

- `lamo_ray.online.replay`: ODT's trajectory replay buffer (best offline trajectories first,
  overwritten lowest-return first), with hindsight return-to-go relabelling;
- `lamo_ray.online.critic`: the TD3 twin critic over (state, action) per context position, its
  target, the actor's RL term and the soft target update;
- `lamo_ray.online.stochastic`: ODT's tanh-Gaussian action head with a learned temperature;
- collection: `lamo_ray.evaluate.Rollout.run` with ``record=True`` and ``action_noise`` returns whole
  trajectories explored with clamped Gaussian noise (the rollout actors' side of the loop).

The online loop (rollout actors collecting with the current weights, the learner updating, resume,
MLflow curves) builds on these; it is not in this package yet.
"""
