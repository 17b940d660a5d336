"""What the two domains of L2M's multi-domain pre-training share (`lamo_ray.domains.metaworld`,
`lamo_ray.domains.dmcontrol`): named tasks with one local dataset each (``<local_prefix><task>-vN``),
and L2M's own data files, one per task, recognised, read, downloaded and explained by a module of the
domain (`L2MTaskDomain.l2m_module`)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

from lamo_ray.domains.base import Domain


def check_task_names(tasks: Sequence[str], key: str, known: Sequence[str],
                     lists: Mapping[str, Callable[[], Sequence[str]]], family: str, hint: str,
                     suffix: str = "") -> tuple[str, ...]:
    """``tasks`` checked against ``known`` and expanded: a name of ``lists`` (any case) becomes its tasks,
    a trailing ``suffix`` is dropped (e.g. ``-v3``).

    Raises:
        ValueError: an unknown task: "``key``: unknown ``family`` task '<name>'; did you mean '<closest>'?
            (``hint``)".
    """
    out: list[str] = []
    for raw in tasks:
        name = str(raw).removesuffix(suffix) if suffix else str(raw)
        if name.lower() in lists:
            out.extend(lists[name.lower()]())
            continue
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ValueError(f"{key}: unknown {family} task {raw!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                             + f" ({hint})")
        out.append(name)
    return tuple(out)


class L2MTaskDomain(Domain):
    """A `Domain` of named tasks with L2M's data files.

    Class attributes:
        l2m_module: the module that handles L2M's files of this domain; it defines ``l2m_file_task(source)``
            (the task a file path names, or None), ``load_l2m_npz(source)``, ``hub_url(source)`` and
            ``missing_hint(source)``.
    """

    l2m_module: str = ""

    def check_tasks(self, tasks: Sequence[str], key: str) -> tuple[str, ...]:
        """The domain's task names, checked (did-you-mean errors naming ``key``)."""
        raise NotImplementedError

    def _l2m_file(self, source: str) -> ModuleType | None:
        """`l2m_module` if ``source`` is one of its files, else None."""
        module = importlib.import_module(self.l2m_module)
        return module if module.l2m_file_task(source) is not None else None

    def serves_dataset(self, source: str) -> bool:
        """``<local_prefix>*`` ids and L2M's files."""
        return super().serves_dataset(source) or self._l2m_file(source) is not None

    def own_format(self, source: str) -> bool:
        return self._l2m_file(source) is not None

    def load_dataset(self, source: str):
        """L2M's files (``load_l2m_npz`` of `l2m_module`); None for the Minari datasets made here."""
        module = self._l2m_file(source)
        return module.load_l2m_npz(source) if module is not None else None

    def download_url(self, source: str) -> str | None:
        """The hub URL of an L2M file path."""
        module = self._l2m_file(source)
        return module.hub_url(source) if module is not None else None

    def missing_dataset_hint(self, source: str) -> str | None:
        module = self._l2m_file(source)
        return module.missing_hint(source) if module is not None else None

    def task_of_dataset(self, dataset_id: str) -> str:
        """The task of ``<local_prefix><task>-vN``.

        Raises:
            ValueError: another id or an unknown task.
        """
        if not dataset_id.startswith(self.local_prefix):
            raise ValueError(f"{dataset_id}: not a {self.local_prefix}<task>-vN id")
        name = dataset_id[len(self.local_prefix):].rsplit("-v", 1)[0]
        return self.check_tasks([name], key=dataset_id)[0]
