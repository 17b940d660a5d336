"""Task names of the continual domains (L2M's Meta-World and DMControl), the rules the config checks
them with and what each domain's tasks can be scored by: `check_continual_tasks` (Meta-World and
DMControl names and lists, did-you-mean), `task_domain`, `fill_source` (a domain's data template,
`PLACEHOLDERS`), `episode_steps`, `SUCCESS_RULES` and `SUCCESS_RULE_MEANING`, `CONTINUAL_DOMAINS`.

Free of torch: `lamo_ray.config` validates a ``continual:`` section with them, and `lamo_ray.continual`
(the continual runtime) re-exports them.
"""


#: the domains whose tasks a continual trial can name (L2M's: Meta-World and DMControl)
CONTINUAL_DOMAINS = ("metaworld", "dmcontrol")
#: the ``continual.success_rule`` values each continual domain's envs can give: Meta-World reports
#: ``info["success"]`` at every step (L2M reads it at the last, Continual World at any); DMControl none
SUCCESS_RULES = {"metaworld": ("last_step", "any_step"), "dmcontrol": ()}
#: what each ``continual.success_rule`` counts as an episode's success (`lamo_ray.continual.evaluation`)
SUCCESS_RULE_MEANING = {"last_step": "the env's info['success'] at the episode's last step (L2M's rule)",
                        "any_step": "info['success'] at any step of the episode (Continual World's rule)"}
#: placeholders of a data-source template: the task name, and the same with '-' as '_' (L2M's DMC file names)
PLACEHOLDERS = ("{task}", "{task_underscored}")


def check_continual_tasks(names, key: str) -> list[str]:
    """Task names of a continual trial, checked and expanded: Meta-World tasks and lists (``cw10``,
    ``mt40``, ``mt50``; `lamo_ray.domains.metaworld.check_tasks`) and DMControl tasks (``<domain>-<task>``,
    ``dmc10``; `lamo_ray.domains.dmcontrol.check_tasks`), in any mix.

    Raises:
        ValueError: a name of neither domain (naming ``key`` and the closest name of either).
    """
    import difflib

    from lamo_ray.domains import dmcontrol, metaworld

    out: list[str] = []
    meta_world = {*metaworld.all_tasks(), *metaworld.TASK_LISTS}
    for raw in names:
        name = str(raw)
        # Meta-World first: a Meta-World-only trial never imports dm_control (0.7 s)
        if name.removesuffix("-v3").lower() in meta_world:
            out.extend(metaworld.check_tasks([name], key=key))
        elif dmcontrol.is_task(name):
            out.extend(dmcontrol.check_tasks([name], key=key))
        else:
            known = [*metaworld.all_tasks(), *dmcontrol.all_tasks(), *metaworld.TASK_LISTS, "dmc10"]
            close = difflib.get_close_matches(name.removesuffix("-v3"), known, n=1)
            raise ValueError(f"{key}: unknown task {raw!r}, neither Meta-World's nor DMControl's"
                             + (f"; did you mean {close[0]!r}?" if close else "")
                             + " (Meta-World names without -v3, cw10 / mt40 / mt50; DMControl <domain>-<task>, dmc10)")
    return out


def task_domain(task: str) -> str:
    """The domain of a checked task name (`CONTINUAL_DOMAINS`), or of a ``continual.pretrain_datasets``
    source (the registered domain that serves it)."""
    from lamo_ray import domains
    from lamo_ray.domains import metaworld

    if "/" in task or task.endswith((".hdf5", ".npz")):
        domain = domains.for_dataset(task)
        if domain is not None:
            return domain.name
    return "metaworld" if task in metaworld.all_tasks() else "dmcontrol"


def fill_source(template: str, task: str) -> str:
    """A task's data source from a template (`PLACEHOLDERS`): ``{task}`` -> ``cartpole-balance``,
    ``{task_underscored}`` -> ``cartpole_balance``."""
    return template.replace("{task_underscored}", task.replace("-", "_")).replace("{task}", task)


def episode_steps(domain: str) -> int:
    """The episode length of a continual domain's evaluation envs (Meta-World 200, DMControl 1000)."""
    from lamo_ray.domains import dmcontrol, metaworld

    return {"metaworld": metaworld.EPISODE_STEPS, "dmcontrol": dmcontrol.EPISODE_STEPS}[domain]
