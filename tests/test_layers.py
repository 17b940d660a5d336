"""Layers that point one way (issue 29): the import graph of ``lamo_ray`` has no cycle, and a lower
layer imports a higher one at most `UPWARD_BUDGET` times.

The graph: every module under ``lamo_ray/`` (a package's ``__init__.py`` is the package), parsed with
`ast`; an edge for every ``import lamo_ray...`` / ``from lamo_ray... import`` (relative imports
resolved), at module level or inside a function, to the module it loads (``from pkg import mod``: the
submodule ``pkg.mod``; ``from pkg import name``: ``pkg``) and to that module's enclosing packages, whose
``__init__`` runs first. Left out: the importer's own enclosing packages (already being imported when
it runs, so importing them is not a cycle) and imports under ``if TYPE_CHECKING:`` (they never run).
``importlib.import_module`` of a name held in a string is not seen (the one there is,
`lamo_ray.domains.l2m`, loads a domain's ``l2m_data`` module, inside ``lamo_ray.domains``).

The layer map (`LAYERS`, lowest first; a module's layer is its longest matching prefix):

0. config and domains: ``config`` (the trial schema and the sweep engine), ``domains`` (with
   ``domains.tasks``: the continual domains' task names and rules), ``data``, ``envs``, ``episodes``,
   ``intervals``;
1. models: ``backbones`` (with ``packaged``: the offline backbones and fetching them, split out of it in
   issue 29), ``language``, ``model`` (with ``trunk``, ``lora`` and ``embeddings``, split out
   of it in issue 29), ``heads``, ``mddt``, ``optim``, ``distributed`` (data-parallel helpers), ``checkpoint``, and
   ``pools``: the model parts continual fine-tuning attaches, ``pools.modulation`` (L2M's modulators)
   and ``pools.prompts`` (L2P's prompt pool), which lived in ``continual/`` before issue 29;
2. runtime: ``train``, ``learner`` (the one optimiser step of every trial kind), ``evaluate``, ``rollout_pool``, ``online``, ``continual`` (its ``__init__``,
   runner, trial, evaluation, metrics, and ``continual.pool`` / ``continual.prompts``, which now only
   re-export ``pools``), ``tracking``, ``outbox``;
3. sweep and report: ``sweep``, ``preflight``, ``report``, ``inputs``, ``collect``.

Imports from a lower layer to a higher one: 4 before issue 29 (``config`` -> ``continual``, for the
task rules now in ``domains.tasks``; ``model`` -> ``online`` and ``online.stochastic``, for the
tanh-Gaussian head now in ``heads``; ``mddt`` -> ``continual``, the ``continual/__init__`` that ran
before ``continual.pool`` and ``continual.prompts`` loaded), 0 after: the pools moved to ``pools``.

Cycles between modules: none, before issue 29 and after. Two coarser views, not asserted:

- counting a submodule's imports of its own package too (which this graph leaves out), each domain
  package with a collector is a loop within itself: ``domains.<name>`` calls its ``collect`` (and
  ``atari``'s ``dqn_replay``, ``dmcontrol``'s ``l2m_data``, ``kitchen``'s ``demonstrator``) lazily,
  and they import the package's constants from its ``__init__``;
- with every top-level package taken as one node, ``data`` -> ``envs`` -> ``domains`` -> ``data``
  (``data.loading`` asks the domains registry and ``envs``; domains build datasets from
  ``data.trajectories`` / ``data.frames`` / ``data.l2m_npz``) remains. Before issue 29 ``mddt`` <->
  ``continual`` was one too (``mddt`` imported the pools from ``continual/``; ``continual.trial`` builds
  the MDDT), and a third one ran through ``config``, ``continual``, ``model``, ``online``, ``mddt``,
  ``evaluate``, ``checkpoint`` and ``tracking`` (``config`` -> ``continual`` and ``model`` -> ``online``
  closed it).

Module length: at most `MAX_LINES` (600) lines each. Before issue 29 ``model`` (720) and ``backbones``
(623) were longer; they were split by concern (``model`` -> ``trunk``, ``lora``, ``embeddings``;
``backbones`` -> ``packaged``), re-exporting every moved name. `OVER_LENGTH` lists the modules still
longer, each at its length when the check came in: one may shrink, not grow, and leaves the list when
it is back under the limit (none now: ``sweep``, at 604, moved its printing to ``sweep_output``).
"""

from test_imports import MODULES, PACKAGE, imports_of   # one import-graph reader for both rules

#: (layer, module prefixes), lowest first; a module is in the layer of its longest matching prefix
LAYERS = [
    ("config and domains", ("lamo_ray.config", "lamo_ray.domains", "lamo_ray.data", "lamo_ray.envs",
                            "lamo_ray.episodes", "lamo_ray.intervals")),
    ("models", ("lamo_ray.backbones", "lamo_ray.packaged", "lamo_ray.language", "lamo_ray.model", "lamo_ray.trunk",
                "lamo_ray.lora", "lamo_ray.embeddings", "lamo_ray.heads", "lamo_ray.mddt", "lamo_ray.optim",
                "lamo_ray.distributed", "lamo_ray.checkpoint", "lamo_ray.pools")),
    ("runtime", ("lamo_ray.train", "lamo_ray.learner", "lamo_ray.sessions", "lamo_ray.naming", "lamo_ray.evaluate", "lamo_ray.rollout_pool", "lamo_ray.online",
                 "lamo_ray.continual", "lamo_ray.tracking", "lamo_ray.outbox")),
    ("sweep and report", ("lamo_ray.sweep", "lamo_ray.tune_runtime", "lamo_ray.rehearse", "lamo_ray.rehearsal_run", "lamo_ray.time_limit", "lamo_ray.sweep_output", "lamo_ray.preflight", "lamo_ray.report", "lamo_ray.inputs",
                          "lamo_ray.collect")),
]
#: imports from a lower layer to a higher one, measured after issue 29's moves (4 before them)
UPWARD_BUDGET = 0
#: the most lines a module under lamo_ray/ may have
MAX_LINES = 600
#: modules over `MAX_LINES` when the check came in (issue 29), with the length they may not exceed
OVER_LENGTH: dict[str, int] = {}


def import_graph() -> dict[str, set[str]]:
    return {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): each is a set of modules
    that import each other, directly or through the others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of ``module``'s longest matching prefix (the empty root package: 0)."""
    if module == "lamo_ray":
        return 0
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "lamo_ray.domains" in graph["lamo_ray.envs"]          # the scan sees module-level imports ...
    assert "lamo_ray.domains.tasks" in graph["lamo_ray.config.trial"]  # ... and function-level ones
    found = cycles(graph)
    assert not found, "import cycles (each line: modules that import one another, directly or through each " \
                      "other):\n" + "\n".join(", ".join(c) for c in found)


def test_every_module_has_a_layer():
    unmapped = [m for m in MODULES if layer_of(m) is None]
    assert not unmapped, f"modules in no layer of LAYERS (add them where they belong): {unmapped}"


def test_lower_layers_rarely_import_higher_ones():
    upward = upward_imports(import_graph())
    listed = "\n".join(f"  {a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})" for a, b in upward)
    assert len(upward) <= UPWARD_BUDGET, f"{len(upward)} imports from a lower layer to a higher one " \
                                         f"(budget {UPWARD_BUDGET}):\n{listed}"


def line_counts() -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}


def test_no_module_is_over_600_lines():
    counts = line_counts()
    over = {m: n for m, n in counts.items() if n > OVER_LENGTH.get(m, MAX_LINES)}
    assert not over, f"modules over {MAX_LINES} lines (split them by concern):\n" + \
        "\n".join(f"  {MODULES[m].relative_to(PACKAGE.parent)}: {n} lines"
                  + (f" (allowed {OVER_LENGTH[m]} until it is split)" if m in OVER_LENGTH else "")
                  for m, n in sorted(over.items(), key=lambda kv: -kv[1]))
    back_under = sorted(m for m in OVER_LENGTH if counts.get(m, 0) <= MAX_LINES)
    assert not back_under, f"now at most {MAX_LINES} lines: remove them from OVER_LENGTH: {back_under}"


def test_the_cycle_finder_finds_cycles_and_layers_resolve():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("lamo_ray.pools.modulation") == 1 and layer_of("lamo_ray.continual.runner") == 2
    assert layer_of("lamo_ray.continual.pool") == 2   # the re-export left in the runtime package
    assert layer_of("lamo_ray.config.sweep") == 0 and layer_of("lamo_ray.sweep") == 3
