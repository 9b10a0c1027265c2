"""The product's layout, checked from its source with `ast` (nothing is imported or run).

Used by test_layout.py on the real tree and on small synthetic packages. Every check returns the
violations as lines a reader can act on (`file:line what`); an empty list means the claim holds.

Imports count wherever they stand: at module level, inside functions, under `if TYPE_CHECKING:`
(a back-reference for types is still a dependency a reader has to untangle). Relative imports are
resolved; `from pkg import name` points at the submodule `pkg.name` when there is one. The parent
packages Python runs on the way (`a/__init__.py` for `a.b`) are not edges: they are not what a
module asked for.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Import:
    """One import statement's target: a module of the tree (`internal`) or a top-level outside name."""

    source: Module
    target: str
    line: int
    internal: bool

    def where(self) -> str:
        return f"{self.source.path}:{self.line}"


def load(packages: Mapping[str, Path]) -> dict[str, Module]:
    """Every module of the packages, by import name (`{"joblet_agent": Path("agent")}` maps a folder
    to the name it is imported as)."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))
            text = path.read_text()
            modules[name] = Module(name, path, ast.parse(text, str(path)), len(text.splitlines()))
    return modules


def imports(modules: Mapping[str, Module]) -> list[Import]:
    """Every import of every module, resolved; one per target and line."""
    found: dict[tuple[str, str, int], Import] = {}
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                resolved = [_resolve(module, alias.name, None, node.lineno, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node.module, node.level)
                resolved = [_resolve(module, base, alias.name, node.lineno, modules) for alias in node.names]
            else:
                continue
            found.update(((module.name, imp.target, imp.line), imp) for imp in resolved)
    return list(found.values())


def _absolute(module: Module, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    package = module.name.split(".")
    if not module.is_package:
        package = package[:-1]
    package = package[:len(package) - (level - 1)]
    return ".".join([*package, name] if name else package)


def _resolve(module: Module, base: str, member: str | None, line: int, modules: Mapping[str, Module]) -> Import:
    if member and f"{base}.{member}" in modules:
        return Import(module, f"{base}.{member}", line, True)
    parts = base.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return Import(module, ".".join(parts[:end]), line, True)
    return Import(module, parts[0], line, False)


# ---- sizes -------------------------------------------------------------------------------------


def long_modules(modules: Mapping[str, Module], limit: int) -> list[str]:
    return [f"{m.path}: {m.lines} lines (at most {limit})" for m in modules.values() if m.lines > limit]


def long_functions(modules: Mapping[str, Module], limit: int, exempt: Iterable[str] = ()) -> list[str]:
    """Functions and methods (nested ones too) longer than `limit` lines, `def` line to last line;
    `exempt` names functions by `module.qualified.name`."""
    found = []
    for module in modules.values():
        for qualname, node in _functions(module.tree, module.name):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit and qualname not in exempt:
                found.append(f"{module.path}:{node.lineno} {qualname}: {length} lines (at most {limit})")
    return found


def function_names(modules: Mapping[str, Module]) -> set[str]:
    return {qualname for module in modules.values() for qualname, _ in _functions(module.tree, module.name)}


def _functions(node: ast.AST, prefix: str) -> Iterable[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for child in ast.iter_child_nodes(node):
        name = f"{prefix}.{child.name}" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
            else prefix
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield name, child
        yield from _functions(child, name)


# ---- the import graph --------------------------------------------------------------------------


def graph(found: Iterable[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in found:
        edges.setdefault(imp.source.name, set())
        if imp.internal:
            edges[imp.source.name].add(imp.target)
    return edges


def cycles(edges: Mapping[str, set[str]]) -> list[str]:
    """Each import cycle once, as `a -> b -> a` (one shortest loop per strongly connected group)."""
    found = []
    for group in _strongly_connected(edges):
        start = min(group)
        if len(group) > 1 or start in edges.get(start, ()):
            found.append(" -> ".join(_loop(edges, start, group)))
    return sorted(found)


def _strongly_connected(edges: Mapping[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, without recursion (a deep package must not hit Python's limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def _loop(edges: Mapping[str, set[str]], start: str, group: set[str]) -> list[str]:
    """A shortest path from `start` back to itself inside `group` (breadth first)."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for child in sorted(edges.get(node, ())):
            if child == start:
                return paths[node] + [start]
            if child in group and child not in paths:
                paths[child] = paths[node] + [child]
                todo.append(child)
    raise AssertionError(f"{start} is in no loop")


def reaches(modules: Mapping[str, Module], found: Iterable[Import], prefix: str,
            forbidden: Callable[[str], bool]) -> list[str]:
    """Modules under `prefix` that import an outside package `forbidden` says yes to, directly or
    through any module of the tree they import; each with the chain that gets there."""
    every = list(found)
    edges = graph(every)
    outside = [imp for imp in every if not imp.internal and forbidden(imp.target)]
    violations = []
    for start in sorted(name for name in modules if _under(name, prefix)):
        chains = {start: [start]}
        todo = [start]
        while todo:
            node = todo.pop(0)
            for imp in outside:
                if imp.source.name == node:
                    violations.append(f"{imp.where()} {' -> '.join(chains[node])} imports {imp.target}")
            for child in sorted(edges.get(node, ())):
                if child not in chains:
                    chains[child] = chains[node] + [child]
                    todo.append(child)
    return violations


# ---- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layers:
    """Who may import whom. `groups` names sets of modules by fnmatch patterns (`pkg.sub` and
    `pkg.sub.*` for a subpackage; a module belongs to the group of its longest matching pattern);
    each stack lists its ranks top down, a rank holding groups that do not import each other; a
    group imports its own modules and groups of lower ranks of its stack only, and from other
    stacks only the groups in `shared`."""

    groups: Mapping[str, tuple[str, ...]]
    stacks: tuple[tuple[tuple[str, ...], ...], ...]
    shared: frozenset[str] = frozenset()

    def group_of(self, module: str) -> str | None:
        matches = [(len(pattern), group) for group, patterns in self.groups.items() for pattern in patterns
                   if fnmatch.fnmatchcase(module, pattern)]
        return max(matches)[1] if matches else None

    def place(self, group: str) -> tuple[int, int]:
        """(stack, rank) of a group; rank 0 is the top."""
        for s, stack in enumerate(self.stacks):
            for r, rank in enumerate(stack):
                if group in rank:
                    return s, r
        raise KeyError(f"group {group} is in no stack")

    def allows(self, importer: str, target: str) -> bool:
        if importer == target:
            return True
        (s1, r1), (s2, r2) = self.place(importer), self.place(target)
        return r2 > r1 if s1 == s2 else target in self.shared


def unplaced(modules: Mapping[str, Module], layers: Layers) -> list[str]:
    """Modules no group claims: a new subpackage must be given its place, or it escapes the check."""
    return [f"{m.path}: {m.name} belongs to no layer" for m in modules.values() if layers.group_of(m.name) is None]


def upward_imports(found: Iterable[Import], layers: Layers, importer_prefix: str = "") -> list[str]:
    """Imports between groups that the layers do not allow (from modules under `importer_prefix`)."""
    violations = []
    for imp in found:
        if not imp.internal or not _under(imp.source.name, importer_prefix):
            continue
        have, want = layers.group_of(imp.source.name), layers.group_of(imp.target)
        if have and want and not layers.allows(have, want):
            violations.append(f"{imp.where()} {imp.source.name} ({have}) imports {imp.target} ({want})")
    return violations


def _under(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".")
