"""Continual fine-tuning (L2M, "Learning to Modulate pre-trained Models in RL"; docs/references/l2m.md): a
model fine-tuned on tasks one after another, evaluated on every task after each stage.

- `lamo_ray.continual.metrics`: Continual World's metrics from the evaluations of a task sequence
  (success matrix, average success, forgetting, forward transfer);
- `lamo_ray.continual.pool`: L2M's pool of LoRA modulators with keys, applied grouped by modulator;
- `lamo_ray.continual.prompts`: L2P's prompt pool, prompts in front of every layer's input;
- `lamo_ray.continual.runner`: multi-task pre-training, then one stage per task (every
  ``continual.method``), evaluations and a resumable state;
- `lamo_ray.continual.evaluation`: one Ray rollout actor per evaluated task;
- `lamo_ray.continual.trial`: a trial with a ``continual:`` section, run from a sweep file;
- here, free of torch (the sweep's preflight uses it): `target_return` (each task's evaluation
  target); and, re-exported from `lamo_ray.domains.tasks` (the config checks tasks with them), the
  tasks of several domains: `check_continual_tasks` (Meta-World and DMControl names, did-you-mean),
  `task_domain`, `fill_source` (a domain's data template), `episode_steps`, `SUCCESS_RULES`.
"""

from lamo_ray.domains.tasks import (CONTINUAL_DOMAINS, PLACEHOLDERS, SUCCESS_RULE_MEANING, SUCCESS_RULES,
                                    check_continual_tasks, episode_steps, fill_source, task_domain)

__all__ = ["CONTINUAL_DOMAINS", "PLACEHOLDERS", "SUCCESS_RULE_MEANING", "SUCCESS_RULES", "check_continual_tasks",
           "episode_steps", "fill_source", "target_return", "task_domain"]


def target_return(ds, rule: str, source: str) -> float:
    """A task's evaluation target return (`continual.target_return`).

    Args:
        ds: the task's dataset (`lamo_ray.data.loading.load_dataset`; for 'expert' its
            `lamo_ray.data.trajectories.DatasetSummary` will do). rule: 'expert' (its
            ``ref_max_score``: the scripted expert's mean return the collector recorded) or 'data_max'
            (L2M's rule, ``envs/target_returns.py``: the largest episode return in the data).
        source: the dataset id, for the error.

    Raises:
        ValueError: 'expert' for a dataset without ``ref_max_score`` (the message names the source and
            the key to change); an unknown rule.
    """
    if rule == "data_max":
        return float(ds.returns.max())
    if rule == "expert":
        if ds.ref_max_score is None:
            raise ValueError(f"continual.target_return 'expert': {source!r} records no expert return "
                             "(ref_max_score); set continual.target_return: data_max")
        return float(ds.ref_max_score)
    raise ValueError(f"continual.target_return: unknown rule {rule!r} (expert, data_max)")
