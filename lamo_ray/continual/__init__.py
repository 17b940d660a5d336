"""Continual fine-tuning (L2M, "Learning to Modulate pre-trained Models in RL"; REFERENCE_L2M.md): a
model fine-tuned on tasks one after another, evaluated on every task after each stage.

- `lamo_ray.continual.metrics`: Continual World's metrics from the evaluations of a task sequence
  (success matrix, average success, forgetting, forward transfer).
"""
