"""The layout claims of the README, proven on the source (tests/layout.py reads it with `ast`):
small modules and functions, no import cycle, a notebook core without IPython, a sandbox that
imports nothing above it, layers that import only downward. Then the checker itself, fed small
synthetic packages that break each claim, so that it cannot pass by seeing nothing."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

import layout

REPO = Path(__file__).resolve().parent.parent
MODULE_LINES, FUNCTION_LINES = 500, 60
# The route table: one short decorated handler a call of API.md, read as a list; each handler
# inside it is still held to FUNCTION_LINES.
EXEMPT = {"joblet_agent.api.app.create_app"}
IPYTHON = {"IPython", "ipywidgets", "traitlets", "ipykernel"}
ABOVE_THE_SANDBOX = ("api", "sessions", "builds", "jobs", "cluster", "network", "cli")

AGENT = "joblet_agent"
SHARED = ("models", "config", "auth", "audit", "paths", "errors", "client_config", "fs", "hub", "hubconfig", "policy",
          "inotify", "fdlimit", "quotas", "eventfile", "poll")


def package(name: str) -> tuple[str, str]:
    return name, f"{name}.*"


LAYERS = layout.Layers(
    groups={
        "cli": (f"{AGENT}.entry", f"{AGENT}.cli"),  # the console script and the composition root
        "node": package(f"{AGENT}.node"),  # the node side of a cluster: the node's composition root
        "api": package(f"{AGENT}.api"),
        "sessions": package(f"{AGENT}.sessions"),
        "builds": package(f"{AGENT}.builds"),
        "jobs": package(f"{AGENT}.jobs"),
        "cluster": package(f"{AGENT}.cluster"),
        "network": package(f"{AGENT}.network"),
        "sandbox": package(f"{AGENT}.sandbox"),
        "shared": (AGENT, *(f"{AGENT}.{name}" for name in SHARED)),
        "contract": (f"{AGENT}.contract",),
        "notebook": ("joblet_nb", "joblet_nb.execute"),
        "ipython": package("joblet_nb.ipython"),
        "core": package("joblet_nb.core"),
    },
    stacks=(
        (("cli", "node"), ("api",), ("sessions", "builds"), ("jobs",), ("cluster", "network"), ("sandbox",),
         ("shared",), ("contract",)),
        (("notebook",), ("ipython",), ("core",)),
    ),
    # The agent may use the IPython-free client core, the client the API's vocabulary (standard
    # library only, as the client installs without the agent's dependencies); nothing else crosses.
    shared=frozenset({"core", "contract"}),
)


def packages() -> dict[str, Path]:
    """Import name -> folder, as pyproject.toml maps them (the check cannot drift from packaging)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {name: REPO / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


@pytest.fixture(scope="module")
def product() -> tuple[dict[str, layout.Module], list[layout.Import]]:
    modules = layout.load(packages())
    return modules, layout.imports(modules)


def lines(found: list[str]) -> str:
    return "\n" + "\n".join(found)


# ---- the product ---------------------------------------------------------------------------------


def test_modules_are_at_most_500_lines(product):
    modules, _ = product
    assert not (found := layout.long_modules(modules, MODULE_LINES)), lines(found)


def test_c_files_are_at_most_500_lines_too():
    """jnb-init's and jnb-holder's C files (and their headers) are held to the modules' bound."""
    sources = sorted((REPO / "agent" / "sandbox").glob("*.[ch]"))
    assert len(sources) >= 4, sources
    found = [f"{path.relative_to(REPO)}: {count} lines (at most {MODULE_LINES})"
             for path in sources if (count := len(path.read_text().splitlines())) > MODULE_LINES]
    assert not found, lines(found)


def test_functions_are_at_most_60_lines_but_the_route_table(product):
    modules, _ = product
    assert not (found := layout.long_functions(modules, FUNCTION_LINES, EXEMPT)), lines(found)


def test_the_exemption_names_a_function_that_exists(product):
    modules, _ = product
    assert EXEMPT <= layout.function_names(modules)


def test_no_import_cycles(product):
    _, found = product
    assert not (loops := layout.cycles(layout.graph(found))), lines(loops)


def test_the_notebook_core_imports_no_ipython(product):
    modules, found = product
    assert not (chains := layout.reaches(modules, found, "joblet_nb.core", IPYTHON.__contains__)), lines(chains)


def test_what_the_notebook_side_takes_from_the_agent_needs_only_the_standard_library(product):
    modules, found = product
    taken = {imp.target for imp in found if imp.internal and imp.source.name.startswith("joblet_nb")
             and imp.target.startswith(AGENT)}
    assert taken <= set(LAYERS.groups["contract"]), taken
    chains = [chain for name in sorted(taken)
              for chain in layout.reaches(modules, found, name, lambda top: top not in sys.stdlib_module_names)]
    assert not chains, lines(chains)


def test_the_sandbox_imports_nothing_above_it(product):
    _, found = product
    upward = layout.upward_imports(found, LAYERS, f"{AGENT}.sandbox")
    assert not upward, lines(upward)
    assert all(group in LAYERS.groups for group in ABOVE_THE_SANDBOX)
    assert all(LAYERS.place(group)[1] < LAYERS.place("sandbox")[1] for group in ABOVE_THE_SANDBOX)


def test_layers_import_only_downward(product):
    _, found = product
    assert not (upward := layout.upward_imports(found, LAYERS)), lines(upward)


def test_every_module_has_a_layer(product):
    modules, _ = product
    assert not (found := layout.unplaced(modules, LAYERS)), lines(found)


# ---- the checker, on synthetic packages ------------------------------------------------------------


def tree(root: Path, files: dict[str, str]) -> dict[str, layout.Module]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return layout.load({"pkg": root / "pkg"})


def test_checker_finds_a_cycle_through_a_function_level_relative_import(tmp_path):
    modules = tree(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n",
                              "pkg/b.py": "def later():\n    from .a import thing\n",
                              "pkg/c.py": "from pkg import a\n"})
    assert layout.cycles(layout.graph(layout.imports(modules))) == ["pkg.a -> pkg.b -> pkg.a"]


def test_checker_finds_a_cycle_under_type_checking_and_a_self_import(tmp_path):
    modules = tree(tmp_path, {"pkg/__init__.py": "", "pkg/sub/__init__.py": "from .. import sub\n",
                              "pkg/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from .sub.y import Y\n",
                              "pkg/sub/y.py": "import pkg.x\n"})
    assert layout.cycles(layout.graph(layout.imports(modules))) == ["pkg.sub -> pkg.sub",
                                                                     "pkg.sub.y -> pkg.x -> pkg.sub.y"]


def test_checker_finds_upward_sibling_and_cross_stack_imports_and_unplaced_modules(tmp_path):
    modules = tree(tmp_path, {"pkg/__init__.py": "", "pkg/top.py": "from .low import f\n",
                              "pkg/low/__init__.py": "", "pkg/low/f.py": "def g():\n    from ..top import h\n",
                              "pkg/left.py": "from . import right\n", "pkg/right.py": "",
                              "pkg/ui.py": "import pkg.low.f\nfrom pkg.top import x\n", "pkg/stray.py": ""})
    layers = layout.Layers(groups={"top": ("pkg.top",), "left": ("pkg.left",), "right": ("pkg.right",),
                                   "low": ("pkg", "pkg.low", "pkg.low.*"), "ui": ("pkg.ui",)},
                           stacks=((("top",), ("left", "right"), ("low",)), (("ui",),)), shared=frozenset({"low"}))
    found = layout.upward_imports(layout.imports(modules), layers)
    assert [f.split(" ", 1)[1] for f in found] == ["pkg.left (left) imports pkg.right (right)",
                                                    "pkg.low.f (low) imports pkg.top (top)",
                                                    "pkg.ui (ui) imports pkg.top (top)"]
    assert layout.upward_imports(layout.imports(modules), layers, "pkg.top") == []
    assert [f.split(": ", 1)[1] for f in layout.unplaced(modules, layers)] == ["pkg.stray belongs to no layer"]


def test_checker_follows_imports_to_a_forbidden_package(tmp_path):
    modules = tree(tmp_path, {"pkg/__init__.py": "", "pkg/core/__init__.py": "",
                              "pkg/core/client.py": "from ..util import helper\n",
                              "pkg/util.py": "def helper():\n    import IPython.display\n",
                              "pkg/ui.py": "import ipywidgets\n"})
    found = layout.reaches(modules, layout.imports(modules), "pkg.core", IPYTHON.__contains__)
    assert [f.split(" ", 1)[1] for f in found] == ["pkg.core.client -> pkg.util imports IPython"]
    assert found[0].startswith(f"{tmp_path / 'pkg' / 'util.py'}:2 ")


def test_checker_finds_long_functions_and_modules_but_not_the_exempt_one(tmp_path):
    def body(indent: int) -> str:
        return "".join(f"{' ' * indent}x{i} = {i}\n" for i in range(60))

    modules = tree(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": (
        f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body(8)}\n\n"
        f"def table():\n{body(4)}\n    async def inner():\n{body(8)}")})
    found = layout.long_functions(modules, 60, {"pkg.m.table"})
    assert [f.split(" ", 1)[1] for f in found] == ["pkg.m.C.long: 61 lines (at most 60)",
                                                    "pkg.m.table.inner: 61 lines (at most 60)"]
    module = modules["pkg.m"]
    assert layout.long_modules(modules, 100) == [f"{module.path}: {module.lines} lines (at most 100)"]
    assert module.lines > 100 and layout.long_modules(modules, module.lines) == []
