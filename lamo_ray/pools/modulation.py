"""L2M's pool of LoRA modulators with learned keys (docs/references/l2m.md "The modulation pool"; ml-jku/L2M
``prompt/l2m.py`` ``L2MLoRA``, ``prompt/l2p.py``).

- ``size`` modulators; each has a key (``hidden`` numbers, init uniform(-1, 1)) and, in every
  transformer layer, low-rank updates (rank r, scaling alpha / r; A kaiming-uniform over L2M's whole
  pool tensor, `l2m_init_bound`; B zeros):
  on the query and the value parts of GPT-2's fused ``c_attn`` output (``x A B``), and a residual on
  the ``c_fc`` output before the activation (``h + h A B``, 4h -> r -> 4h).
- Selection (`ModulationPool.select`): the query is the masked mean of the state tokens' input
  embeddings (after the embedding LayerNorm, no transformer pass); its cosine similarity with every
  key picks the top-1 modulator per sample, in training and evaluation. From the second task on,
  training scores are ``((cos + 1) / 2) x inv_freq``, ``inv_freq`` the normalised inverse selection
  count so far, refreshed at each task switch (`ModulationPool.start_task`), so new tasks drift to
  unused modulators. L2M's task-id oracle (``task_groups`` = the number of tasks) splits the pool into
  groups of ``size // task_groups`` modulators and lets the keys select within the task's group only
  (`oracle_groups`; ml-jku/L2M ``src/algos/prompt/l2p.py:96-108, 125-126``).
- Key loss (`ModulationPool.key_loss`): ``- mean cos(selected key, query)``, weighted 0.5 in the
  total; the query is detached, so keys learn only through it.
- The backbone and the action head stay frozen; only keys and modulators train.

Ours: a batch is applied grouped by selected modulator (one matrix product per modulator in use, not
per sample): `PoolModulatedLinear`. peft's LoRA cannot do this in training (its mixed-adapter batches
are inference only) nor express the ``c_fc``-output residual, so the pool is its own module here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KeyedPool(nn.Module):
    """What L2M's pool and L2P's prompt pool share (L2M ``prompt/l2m.py``, ``prompt/l2p.py``): ``size``
    keys of ``hidden`` numbers (init uniform(-1, 1)), selection counts, and the count penalty.

    `scores` of a (B, h) query are its cosine similarities with the keys (query and keys detached), or
    in training from the second task on ``((cos + 1) / 2) x inv_freq`` (`start_task`); `count` adds a
    training pass's selections.
    """

    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.size = size
        self.keys = nn.Parameter(torch.empty(size, hidden).uniform_(-1.0, 1.0))
        self.register_buffer("counts", torch.zeros(size))
        self.register_buffer("inv_freq", torch.ones(size))
        self.penalize = False

    def start_task(self, index: int) -> None:
        """A new task begins (stage ``index``): from the second on, training selection is penalised by the
        normalised inverse selection frequency so far, ``inv = 1 / (freq + 1e-6)`` over the share ``freq`` of
        the selections each key got, then ``inv / sum(inv)`` (ml-jku/L2M ``src/algos/prompt/base_prompt.py:87-101``:
        its running mean of per-batch shares is this share for equal batches): a key never selected
        outweighs a used one by ~1e6 x its share."""
        self.penalize = index > 0
        if self.penalize:
            inv = 1.0 / (self.counts / self.counts.sum().clamp(min=1.0) + 1e-6)
            self.inv_freq = inv / inv.sum()

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """(B, h) -> (B, size) selection scores (class docstring)."""
        cos = F.cosine_similarity(query.detach()[:, None, :], self.keys.detach()[None], dim=-1)
        return (cos + 1) / 2 * self.inv_freq if (self.training and self.penalize) else cos

    def count(self, chosen: torch.Tensor) -> None:
        """Add the selections ``chosen`` (any shape of indices) to the counts, in training only."""
        if self.training:
            self.counts += torch.bincount(chosen.flatten(), minlength=self.size).to(self.counts)


def oracle_groups(size: int, num_tasks: int) -> list[range]:
    """L2M's task mask: the pool's ``size`` modulators split into consecutive groups of
    ``size // num_tasks``, group i for task i; a remainder forms one more, smaller group (the split of
    ml-jku/L2M ``src/algos/prompt/l2p.py:96-101``, ``torch.arange(size).split(size // num_tasks)``).
    E.g. 30 and 10 -> 10 groups of 3; 10 and 3 -> [0-2], [3-5], [6-8], [9].

    Raises:
        ValueError: num_tasks < 1 or > size (a task would get no modulator)."""
    if not 1 <= num_tasks <= size:
        raise ValueError(f"task-id oracle: {num_tasks} tasks need 1 to {size} (continual.pool.size) modulators")
    g = size // num_tasks
    return [range(start, min(start + g, size)) for start in range(0, size, g)]


def l2m_init_bound(hidden: int, inner: int, rank: int, n_layer: int | None = None) -> float:
    """The bound b of L2M's modulator A matrices, uniform(-b, b): torch's kaiming-uniform (a = sqrt(5),
    so b = 1 / sqrt(fan_in)) run on L2M's whole parameter tensor, whose fan-in spans every layer and
    modulated part instead of one matrix.

    - L2M's pool (``n_layer`` given; ml-jku/L2M ``src/algos/prompt/l2m.py:109-111``): ``lora_a`` of shape
      (size, n_layer, length, h, r), length = (2h + inner) / h (q, v, and the c_fc output's 4h as 4 rows
      of h): fan-in n_layer x (2h + inner) x r; at paper scale 6 x 6 x 768 x 8 = 221,184, b = 0.00213.
    - L2M's single LoRA (``n_layer`` None; ``src/algos/prompt/lora.py:47-55``): an Embedding weight
      (n_layer, length x r x h): fan-in (2h + inner) x r; 36,864 at paper scale, b = 0.0052.

    Per matrix (nn.Linear's rule) it would be 1 / sqrt(h), 0.036 at paper scale.
    """
    fan_in = (2 * hidden + inner) * rank * (1 if n_layer is None else n_layer)
    return nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3.0 / fan_in)


class ModulationPool(KeyedPool):
    """Keys and per-layer low-rank modulators (module docstring).

    Args:
        hidden: the trunk's hidden size h. inner: its MLP width (GPT-2: 4h). n_layer: blocks.
        size: modulators in the pool (L2M: 30). rank, alpha: LoRA rank and alpha (L2M: 8, 16).
        single: initialise A as L2M's single LoRA (``lora.py``) instead of its pool (`l2m_init_bound`).
        task_groups: L2M's ``num_tasks``: a task index given to `select` restricts the keys to that task's
            group of modulators (`oracle_groups`); None: the task index is the modulator itself (one LoRA).

    Raises:
        ValueError: size, rank or n_layer < 1; task_groups outside [1, size].
    """

    def __init__(self, hidden: int, inner: int, n_layer: int, size: int = 30, rank: int = 8, alpha: float = 16.0,
                 single: bool = False, task_groups: int | None = None):
        if size < 1 or rank < 1 or n_layer < 1:
            raise ValueError(f"continual.pool: size, rank and n_layer must be >= 1, got {size}, {rank}, {n_layer}")
        super().__init__(size, hidden)
        self.groups = None if task_groups is None else oracle_groups(size, task_groups)
        self.rank, self.scaling = rank, alpha / rank
        bound = l2m_init_bound(hidden, inner, rank, None if single else n_layer)

        def pair(n_in, n_out):
            a = nn.Parameter(torch.empty(size, n_layer, n_in, rank).uniform_(-bound, bound))
            return a, nn.Parameter(torch.zeros(size, n_layer, rank, n_out))

        self.q_a, self.q_b = pair(hidden, hidden)
        self.v_a, self.v_b = pair(hidden, hidden)
        self.ff_a, self.ff_b = pair(inner, inner)
        self.selected: torch.Tensor | None = None   # (B,) modulator per sample for the next trunk pass
        self._order = self._inverse = None
        self._groups: list[tuple[int, int]] = []

    def select(self, query: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Choose a modulator per sample and make it the active one: ``query`` (B, h) -> (B,) long.

        ``task`` (B,) long task indices: with ``task_groups``, the keys select within each sample's task
        group (L2M's oracle: the scores outside it set to -inf, ``l2p.py:125-126``); without, the index is
        the modulator. Raises ValueError for a task index with no group (or modulator)."""
        if task is not None:
            n = self.size if self.groups is None else len(self.groups)
            if int(task.max()) >= n:
                raise ValueError(f"task-id oracle: task index {int(task.max())} but the pool has {n} "
                                 f"{'modulators' if self.groups is None else 'task groups'}")
            if self.groups is None:
                chosen = task.long()
            else:
                owner = torch.repeat_interleave(torch.arange(len(self.groups), device=task.device),
                                                torch.tensor([len(g) for g in self.groups], device=task.device))
                allowed = owner[None, :] == task.long()[:, None]                 # (B, size)
                chosen = self.scores(query).masked_fill(~allowed, float("-inf")).argmax(-1)
        else:
            chosen = self.scores(query).argmax(-1)
        self.count(chosen)
        self.selected = chosen
        # samples sorted by modulator once per pass: each layer gathers, multiplies per group, scatters back
        self._order = torch.argsort(chosen, stable=True)
        self._inverse = torch.argsort(self._order)
        used, counts = torch.unique_consecutive(chosen[self._order], return_counts=True)
        self._groups = list(zip(used.tolist(), counts.tolist()))
        return chosen

    def key_loss(self, query: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """``- mean cos(keys[chosen], query.detach())``: pulls the selected keys toward their queries."""
        return -F.cosine_similarity(self.keys[chosen], query.detach(), dim=-1).mean()

    def delta(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, layer: int) -> torch.Tensor:
        """``scaling x A_m B_m`` for each sample's selected modulator m, grouped by m (one gather, one
        product pair per modulator in use, one scatter): x (B, T, n_in) -> (B, T, n_out)."""
        if self.selected is None:
            raise RuntimeError("ModulationPool: no modulator selected for this pass (call select first)")
        if len(self._groups) == 1:
            m = self._groups[0][0]
            return (x @ a[m, layer]) @ b[m, layer] * self.scaling
        parts = torch.split(x[self._order], [n for _, n in self._groups])
        out = torch.cat([(p @ a[m, layer]) @ b[m, layer] for (m, _), p in zip(self._groups, parts)])
        return out[self._inverse] * self.scaling

    def modulator_parameters(self, m: int) -> int:
        """Parameters of one modulator (all layers; its key not counted)."""
        return sum(p[m].numel() for p in (self.q_a, self.q_b, self.v_a, self.v_b, self.ff_a, self.ff_b))


class PoolModulatedLinear(nn.Module):
    """GPT-2's ``c_attn`` or ``c_fc`` (a ``Conv1D``) plus the pool's modulation of its output.

    ``kind`` "attn": adds ``x A B`` to the query (first h) and value (last h) parts of the fused
    q|k|v output; "ff": adds ``y A B`` to the output ``y`` itself (L2M's residual before the activation).
    """

    def __init__(self, base: nn.Module, pool: ModulationPool, layer: int, kind: str):
        super().__init__()
        if kind not in ("attn", "ff"):
            raise ValueError(f"kind must be 'attn' or 'ff', got {kind!r}")
        self.base, self.layer, self.kind = base, layer, kind
        self._pool = [pool]   # not a submodule: the pool's parameters belong to the pool once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        pool = self._pool[0]
        if self.kind == "ff":
            return y + pool.delta(y, pool.ff_a, pool.ff_b, self.layer)
        h = x.shape[-1]
        if y.shape[-1] != 3 * h:
            raise ValueError(f"c_attn output of width {y.shape[-1]}, expected 3 x {h} (GPT-2's fused q|k|v)")
        q = pool.delta(x, pool.q_a, pool.q_b, self.layer)
        v = pool.delta(x, pool.v_a, pool.v_b, self.layer)
        return y + torch.cat([q, torch.zeros_like(q), v], dim=-1)


def attach_pool(trunk: nn.Module, pool: ModulationPool) -> None:
    """Wrap every GPT-2 block's ``attn.c_attn`` and ``mlp.c_fc`` of ``trunk`` (a ``GPT2Model``) with
    `PoolModulatedLinear`.

    Raises:
        ValueError: not a GPT-2 trunk (no ``h`` blocks with ``c_attn`` / ``c_fc``), or a layer count
            other than the pool's.
    """
    blocks = getattr(trunk, "h", None)
    if blocks is None or not all(hasattr(b, "attn") and hasattr(b.attn, "c_attn") and hasattr(b.mlp, "c_fc")
                                 for b in blocks):
        raise ValueError(f"{type(trunk).__name__}: L2M's modulation pool needs a GPT-2 trunk (blocks h[i] with "
                         "attn.c_attn and mlp.c_fc)")
    if len(blocks) != pool.q_a.shape[1]:
        raise ValueError(f"the trunk has {len(blocks)} blocks but the pool {pool.q_a.shape[1]} layers")
    for i, block in enumerate(blocks):
        block.attn.c_attn = PoolModulatedLinear(block.attn.c_attn, pool, i, "attn")
        block.mlp.c_fc = PoolModulatedLinear(block.mlp.c_fc, pool, i, "ff")
