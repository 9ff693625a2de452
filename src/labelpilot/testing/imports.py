"""The import-graph checker: no import cycles, imports only downward, no unexplained local imports.

Run ``python -m labelpilot.testing.imports`` (exit 1 with a listing when something is wrong, 0 when clean);
``tests/test_architecture.py`` runs :func:`check` in-process. Every module of the ``labelpilot`` package is
parsed with :mod:`ast` and nothing is imported, so the check is fast, works without the optional extras
(torch, rapidocr, spaCy) and cannot be fooled by import side effects.

The graph has one node per module (``labelpilot.server.app``; a package is its ``__init__``) and one edge per
import statement of a labelpilot module, at module level or inside a function: relative imports are resolved
against the importing module, and ``from labelpilot.pkg import name`` points at the submodule
``labelpilot.pkg.name`` when there is one (else at ``labelpilot.pkg``). Imports under ``if TYPE_CHECKING:``
are left out: they never run, so they can neither close a circle nor cost start-up time. An import of
``labelpilot.a.b`` does not add edges to its parent packages (Python runs their ``__init__`` first, but that
is the package structure, not a dependency the importing module chose). Modules loaded by name at run time
(``importlib.import_module``, the ``module:Class`` strings of the model-family table and entry points) are
not edges either: they are plug-in points, and today each stays inside its own layer (``loop/__init__``'s
PEP 562 names, ``models/base``'s families).

Three findings are reported:

1. **Cycles**: strongly connected components with more than one module. They are found with a small
   iterative Tarjan rather than networkx: networkx is in the venv only as a dependency of torch (the optional
   ``vision`` extra), and the checker must run on the base install without it.
2. **Upward imports**: an import from a module into a module of a higher layer of :data:`LAYERS`. Imports
   within one layer are allowed in any direction that does not close a cycle.
3. **Unmarked local imports**: a function-local import of a labelpilot module without a ``# lazy: <reason>``
   comment on its line (any line of a multi-line import) or on the line above. Such imports are allowed only
   for real start-up cost (the ``labelpilot`` CLI must answer ``--version`` quickly, so its commands import
   their modules when they run), never to dodge a cycle. Local imports of third-party packages are not
   checked: deferring torch, onnxruntime, spaCy, rapidocr, jieba or sklearn is the usual reason for them.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "labelpilot"

#: The layers, lowest first: a module may import modules of its own layer or of a lower one. A module
#: belongs to the layer of the longest prefix listed (``labelpilot.models.vision.nets`` → ``labelpilot.models``).
#: Derived from the imports as they are and from docs/DESIGN.md; every module must be covered.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("labelpilot", "labelpilot.errors", "labelpilot.config", "labelpilot.ids", "labelpilot.sqlitedb",
              "labelpilot.plugins",
              "labelpilot.pgdb", "labelpilot.dbseam",
              "labelpilot.data.types", "labelpilot.geometry")),
    ("schema", ("labelpilot.schema",)),
    ("data", ("labelpilot.data", "labelpilot.files", "labelpilot.metrics", "labelpilot.split")),
    ("io", ("labelpilot.netpolicy", "labelpilot.lsclient", "labelpilot.media", "labelpilot.imaging",
            "labelpilot.orientation", "labelpilot.ocr", "labelpilot.encoders")),
    ("strategies", ("labelpilot.strategies",)),
    ("models", ("labelpilot.models", "labelpilot.keywords")),
    ("registry", ("labelpilot.registry",)),
    ("training", ("labelpilot.training",)),
    ("loop", ("labelpilot.loop", "labelpilot.audit")),
    ("jobs", ("labelpilot.jobs",)),
    ("batch", ("labelpilot.batch", "labelpilot.evaluate", "labelpilot.retrieval", "labelpilot.quantize")),
    ("server", ("labelpilot.server",)),
    ("bench", ("labelpilot.prelabel", "labelpilot.testing")),
    ("cli", ("labelpilot.cli", "labelpilot.retrieval.cli", "labelpilot.audit.command", "labelpilot.studio")),
)

LAZY_MARK = re.compile(r"#\s*lazy:\s*\S")


@dataclass(frozen=True)
class Edge:
    """One import statement of a labelpilot module by another."""

    source: str
    target: str
    path: Path
    line: int
    local: bool  # inside a function (or lambda)
    marked: bool  # ``# lazy: <reason>`` on the line or the line above

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Report:
    """What :func:`check` found; empty lists mean the package is clean."""

    modules: list[str]
    edges: list[Edge]
    cycles: list[list[str]] = field(default_factory=list)
    upward: list[Edge] = field(default_factory=list)
    unmarked_local: list[Edge] = field(default_factory=list)
    unlayered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.cycles or self.upward or self.unmarked_local or self.unlayered)

    def format(self) -> str:
        """A human-readable listing, one finding a line."""
        local = [e for e in self.edges if e.local]
        lines = [
            f"{len(self.modules)} modules, {len(self.edges)} imports of labelpilot modules "
            f"({len(local)} function-local, {sum(e.marked for e in local)} marked lazy)"
        ]
        if self.unlayered:
            lines.append(f"modules in no layer of LAYERS ({len(self.unlayered)}):")
            lines += [f"  {m}" for m in self.unlayered]
        if self.cycles:
            lines.append(f"import cycles ({len(self.cycles)}):")
            for comp in self.cycles:
                lines.append("  " + " <-> ".join(comp))
                members = set(comp)
                for e in self.edges:
                    if e.source in members and e.target in members:
                        lines.append(f"    {e.where()}: {e.source} -> {e.target}{' (local)' if e.local else ''}")
        if self.upward:
            lines.append(f"imports from a lower layer into a higher one ({len(self.upward)}):")
            for e in self.upward:
                lines.append(f"  {e.where()}: {e.source} [{layer_name(e.source)}] -> {e.target} "
                             f"[{layer_name(e.target)}]")
        if self.unmarked_local:
            lines.append(f"function-local imports of labelpilot modules without '# lazy: <reason>' "
                         f"({len(self.unmarked_local)}):")
            lines += [f"  {e.where()}: {e.source} -> {e.target}" for e in self.unmarked_local]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def package_root() -> Path:
    """The folder of the ``labelpilot`` package, found without running its ``__init__``."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {PACKAGE!r} not found on sys.path")
    return Path(next(iter(spec.submodule_search_locations)))


def discover(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Module name → file for every ``.py`` file under ``root`` (the package folder)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        if any(not p.isidentifier() for p in parts):
            continue
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that can run, with whether it sits inside a function."""

    def walk(node: ast.AST, local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, local
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    yield from walk(ast.Module(body=[sub], type_ignores=[]), local)
            else:
                inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                yield from walk(child, inner)

    yield from walk(tree, False)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The labelpilot modules one import statement loads (as named in ``known``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
    if node.level:
        base_parts = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return []
    out: list[str] = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return list(dict.fromkeys(out))


def _nearest_known(name: str, known: set[str]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def build_graph(modules: dict[str, Path], relative_to: Path | None = None) -> list[Edge]:
    """Every import edge between the given modules (see the module docstring for what counts)."""
    known = set(modules)
    edges: list[Edge] = []
    for name, path in modules.items():
        source_text = path.read_text(encoding="utf-8")
        lines = source_text.splitlines()
        tree = ast.parse(source_text, filename=str(path))
        shown = path.relative_to(relative_to) if relative_to else path
        for node, local in _imports(tree):
            first = node.lineno
            last = node.end_lineno or first
            span = lines[max(first - 2, 0) : last]
            marked = any(LAZY_MARK.search(line) for line in span)
            for target in _targets(node, name, path.name == "__init__.py", known):
                resolved = _nearest_known(target, known)
                if resolved is None or resolved == name:
                    continue
                edges.append(Edge(name, resolved, shown, first, local, marked))
    return edges


def strongly_connected(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative, so deep graphs do not hit the recursion limit)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for start in sorted(succ):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(set(succ[start]))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(set(succ[child])))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                comps.append(sorted(comp))
    return comps


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest prefix that covers ``module`` (None: in no layer)."""
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            covers = module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def layer_name(module: str) -> str:
    rank = layer_of(module)
    return "?" if rank is None else LAYERS[rank][0]


def check(root: Path | None = None) -> Report:
    """Build the graph of the package at ``root`` (default: the installed ``labelpilot``) and check it."""
    root = root or package_root()
    modules = discover(root)
    edges = build_graph(modules, relative_to=root.parent)
    report = Report(modules=sorted(modules), edges=edges)
    report.unlayered = [m for m in report.modules if layer_of(m) is None]
    report.cycles = [c for c in strongly_connected(modules, ((e.source, e.target) for e in edges)) if len(c) > 1]
    report.cycles.sort()
    for e in edges:
        src, dst = layer_of(e.source), layer_of(e.target)
        if src is not None and dst is not None and dst > src:
            report.upward.append(e)
        if e.local and not e.marked:
            report.unmarked_local.append(e)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labelpilot.testing.imports", description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, help="the package folder (default: labelpilot as found on sys.path)")
    ap.add_argument("--edges", action="store_true", help="also list every import edge")
    args = ap.parse_args(argv)
    report = check(args.root)
    if args.edges:
        for e in sorted(report.edges, key=lambda e: (e.source, e.line)):
            flag = " local" + (" lazy" if e.marked else "") if e.local else ""
            print(f"{e.source} [{layer_name(e.source)}] -> {e.target} [{layer_name(e.target)}]{flag}  {e.where()}")
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
