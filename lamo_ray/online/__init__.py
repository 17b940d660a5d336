"""Online fine-tuning of a Decision Transformer (ODT, and ODT with a TD3 critic: "Reinforcement
Learning Gradients as Vitamin for Online Fine-tuning Decision Transformers", NeurIPS 2024;
docs/references/odt_td3.md). Pieces, each following the authors' code (and Online DT's):

- `lamo_ray.online.replay`: ODT's trajectory replay buffer (best offline trajectories first,
  overwritten lowest-return first), with hindsight return-to-go relabelling;
- `lamo_ray.online.critic`: the TD3 twin critic over (state, action) per context position, its
  target, the actor's RL term and the soft target update;
- `lamo_ray.online.stochastic`: ODT's tanh-Gaussian action head with a learned temperature
  (`lamo_ray.heads`, re-exported);
- `lamo_ray.online.learner`: one ODT-TD3 update of a Decision Transformer (critic, delayed actor with
  the RL term, target networks), from `lamo_ray.data.sampling.SegmentSampler` transitions;
- collection: `lamo_ray.evaluate.Rollout.run` with ``record=True`` and ``action_noise`` returns whole
  trajectories explored with clamped Gaussian noise (the rollout actors' side of the loop);
- `lamo_ray.online.loop`: the online phase of a trial (``online:`` in its config): rollout actors
  collecting with the current weights each iteration, the learner's updates on the replay, the state
  that checkpoints carry for ``--resume``; `lamo_ray.train` runs it after the offline steps.

The authors' per-task settings live beside it: ``eval.context_length``, ``data.reward_shift`` and
``data.delayed_reward`` (`lamo_ray.data.rewards`), ``online.rl_from_start``. Not built
(docs/differences.md): rl_coeff normalised by mean |Q|, the recurrent critic, the other RL algorithms.
"""
