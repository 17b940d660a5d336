"""Adroit: Gymnasium-Robotics ``AdroitHand{Pen,Hammer,Door,Relocate}-v1`` evaluated as D4RL's
hand_dapg tasks (the ODT-TD3 paper's Adroit domain; docs/references/odt_td3.md "Environments").

- Episode length: D4RL's (pen 100 steps, hammer / door / relocate 200; the Gymnasium-Robotics envs
  default to 200 for all four), unless ``eval.max_episode_steps`` says otherwise.
- Observations are the envs' own vectors (45 / 46 / 39 / 39); every evaluation episode records
  ``success`` (the env's ``info["success"]`` at any step).
- Reference scores: D4RL's (``d4rl/infos.py``: the v1 datasets use the human-v0 references).
  Gymnasium-Robotics warns that the v1 dense rewards of hammer, door and relocate changed in its
  1.2.1 (Farama-Foundation/Gymnasium-Robotics#220): scores on these envs are not exactly D4RL's.
  That notice, which gymnasium_robotics prints at every import, is logged once per process for this
  domain only (`package_notice_applies`; `lamo_ray.domains.base.import_env_package`).
- Data: Minari ``D4RL/{pen,hammer,door,relocate}/{human,cloned,expert}-v2``, downloaded by the sweep
  where the network allows (`lamo_ray.inputs`); nothing is generated here.
"""

from __future__ import annotations

from typing import Any

from lamo_ray.domains.base import Domain, register

TASKS = ("pen", "hammer", "door", "relocate")
ENV_IDS = {task: f"AdroitHand{task.capitalize()}-v1" for task in TASKS}
# D4RL's hand_dapg episode lengths (docs/references/odt_td3.md "Environments": pen 100, others 200)
EPISODE_STEPS = {"pen": 100, "hammer": 200, "door": 200, "relocate": 200}
# d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE of <task>-human-v0, which its v1 datasets reuse
REF_SCORES = {"pen": (96.262799, 3076.8331017826877), "hammer": (-274.856578, 12794.134825156867),
              "door": (-56.512833, 2880.5693087298737), "relocate": (-6.425911, 4233.877797728884)}


def task_of(env_id: str) -> str | None:
    """``pen`` for ``AdroitHandPen-v1`` (any version), else None."""
    for task, known in ENV_IDS.items():
        if env_id.split("-v")[0] == known.split("-v")[0]:
            return task
    return None


class AdroitDomain(Domain):
    """Adroit hand manipulation with D4RL's episode lengths and reference scores (module docstring)."""

    name = "adroit"
    env_ids = tuple(ENV_IDS.values())
    env_package = "gymnasium_robotics"
    # its import-time notice (AdroitHand*Dense-v1 reward functions changed) is about these envs: shown once
    package_notice_applies = True
    dataset_prefixes = tuple(f"d4rl/{task}/" for task in TASKS)
    # env ids, Minari ids and D4RL names; never the bare task ("pen" is in "open")
    ref_scores_by_name = {key: REF_SCORES[task] for task in TASKS
                          for key in (f"adroithand{task}", f"d4rl/{task}/", f"{task}-human", f"{task}-cloned",
                                      f"{task}-expert")}

    def serves_env(self, env_id: str) -> bool:
        return task_of(env_id) is not None

    def make_env(self, env_id: str, max_episode_steps: int | None = None, **kwargs: Any):
        """The env with D4RL's episode length unless ``max_episode_steps`` is given."""
        task = task_of(env_id)
        return super().make_env(env_id, max_episode_steps=max_episode_steps or (EPISODE_STEPS[task] if task else None),
                                **kwargs)


ADROIT = register(AdroitDomain())
