"""Continual fine-tuning (L2M, "Learning to Modulate pre-trained Models in RL"; REFERENCE_L2M.md): a
model fine-tuned on tasks one after another, evaluated on every task after each stage.

- `lamo_ray.continual.metrics`: Continual World's metrics from the evaluations of a task sequence
  (success matrix, average success, forgetting, forward transfer);
- `lamo_ray.continual.pool`: L2M's pool of LoRA modulators with keys, applied grouped by modulator;
- `lamo_ray.continual.runner`: multi-task pre-training, then one stage per task (ft, lora, l2m,
  l2m_oracle), evaluations and a resumable state;
- `lamo_ray.continual.evaluation`: one Ray rollout actor per evaluated task.

Not yet reachable from a sweep file (issue 19).
"""
