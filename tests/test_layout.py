"""The layout, checked from the sources (nothing is imported): the import graph of codecs/ and
pipeline/, module sizes, and the package list.

The arrows allowed between packages are written once, in each package's ``__init__.py``
docstring, as a line ``May import: ...`` (the README's Layout section draws the same arrows).
This test reads those lines. Their grammar: names separated by commas or "and", each
``madpipe.codecs``, ``madpipe.pipeline.X``, ``pipeline.X`` or ``.X`` (beside this package, in its
parent), a module or a package; or ``anything``; or ``any library subpackage`` (all but the CLI);
or ``nothing ...``. Words in parentheses, a trailing "only", and what follows a ";" or the end
of the sentence are comments. A package may always import itself and its own subpackages.
Every import counts (those inside functions too) except the cycle check, which follows only what
runs when a module is imported (not function bodies, not ``if TYPE_CHECKING:`` blocks).
"""
from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"codecs": "madpipe.codecs", "pipeline": "madpipe.pipeline"}  # as pyproject's package-dir maps them
CLI = "madpipe.pipeline.cli"

MAX_LINES = 450
# Modules over MAX_LINES when this test was written, being split: new ones may not join, these may
# not grow, and one that shrinks to MAX_LINES or less leaves the list.
OVERSIZE: dict[str, int] = {}

# Library modules allowed to import the CLI, for now.

@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (or package), in this tree
    line: int
    at_import: bool  # runs when the source module is imported (not in a function, not TYPE_CHECKING)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


@cache
def modules() -> dict[str, Module]:
    out = {}
    for folder, dotted in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((dotted, *(parts[:-1] if is_package else parts)))
            out[name] = Module(name, path, is_package)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The madpipe modules an import statement names (the longest name that is one)."""
    known = modules()

    def longest(name: str) -> str:
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        return name

    if isinstance(node, ast.Import):
        return [longest(a.name) for a in node.names if a.name.startswith("madpipe.")]
    base = node.module or ""
    if node.level:
        package = module.package.split(".")
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    if not base.startswith("madpipe."):
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else longest(base) for a in node.names]


def _imports_of(module: Module) -> list[Import]:
    out = []

    def visit(node: ast.AST, at_import: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.extend(Import(module.name, target, node.lineno, at_import) for target in _resolve(module, node))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            at_import = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, at_import)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, at_import)

    visit(ast.parse(module.path.read_text(), str(module.path)), True)
    return out


@cache
def imports() -> list[Import]:
    return [imp for module in modules().values() for imp in _imports_of(module)]


def _where(imp: Import) -> str:
    return f"{modules()[imp.source].path.relative_to(ROOT)}:{imp.line}"


def test_every_madpipe_import_names_a_module_of_this_tree():
    missing = [f"{_where(i)} imports {i.target}" for i in imports() if i.target not in modules()]
    assert not missing, "\n".join(missing)


# -- (a) no circles -------------------------------------------------------------------------------

def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected group of modules (Tarjan, then BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, ()):
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(edges.get(v, ())):
                if w == start:
                    cycles.append(paths[v] + [start])
                    queue = []
                    break
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return cycles


def test_cycles_are_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(_cycles(edges)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_modules():
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        if imp.at_import and imp.target in modules() and imp.target != imp.source:
            edges[imp.source].add(imp.target)
    cycles = _cycles(edges)
    assert not cycles, "import circles (module-level imports):\n" + "\n".join(" -> ".join(c) for c in cycles)


# -- (b) the CLI is imported by no library module -------------------------------------------------

def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_no_library_module_imports_the_cli():
    found = {i.source: i for i in imports() if _in(i.target, CLI) and not _in(i.source, CLI)}
    wrong = [f"{_where(i)} imports {i.target}" for _, i in sorted(found.items())]
    assert not wrong, "library modules importing the CLI:\n" + "\n".join(wrong)


# -- (c) package arrows as the __init__ docstrings allow -------------------------------------------

MAY_IMPORT = re.compile(r"^May import:(.*?)(?:;|\.(?=\s|\Z)|\n\s*\n|\Z)", re.M | re.S)
NAME = re.compile(r"^(?:madpipe\.codecs|madpipe\.pipeline(?:\.\w+)+|pipeline(?:\.\w+)+|\.\w+)$")


def parse_may_import(package: str, docstring: str, known: set[str]) -> tuple[set[str] | None, list[str]]:
    """(allowed names, problems) from a package docstring's "May import:" line; None allows all.

    ``known`` holds the module and package names the allowed names must be among.
    """
    found = MAY_IMPORT.search(docstring)
    if not found:
        return set(), ["no 'May import:' line"]
    text = re.sub(r"\([^)]*\)", " ", found.group(1))
    allowed: set[str] = set()
    problems = []
    for item in re.split(r",|\band\b", text):
        item = re.sub(r"\s+only$", "", item.strip())
        if not item:
            continue
        if item == "anything":
            return None, problems
        if item == "any library subpackage":
            allowed |= {name for name in known if not _in(name, CLI) and name.count(".") == 2} | {"madpipe.codecs"}
        elif item.startswith("nothing"):
            continue
        elif NAME.match(item):
            name = ("madpipe." + item if item.startswith("pipeline.") else
                    package.rpartition(".")[0] + item if item.startswith(".") else item)
            if name in known:
                allowed.add(name)
            else:
                problems.append(f"{item!r} names no module or package")
        else:
            problems.append(f"cannot read {item!r}")
    return allowed, problems


def test_may_import_lines_are_read_as_written():
    known = {"madpipe.codecs", "madpipe.pipeline.kernels", "madpipe.pipeline.fuzz", "madpipe.pipeline.fuzz.findings",
             "madpipe.pipeline.fuzz.mutate", CLI}
    doc = "Fuzz targets.\nMay import: madpipe.codecs, pipeline.kernels (to run them) and .findings only.\nMore."
    assert parse_may_import("madpipe.pipeline.fuzz.targets", doc, known) == (
        {"madpipe.codecs", "madpipe.pipeline.kernels", "madpipe.pipeline.fuzz.findings"}, [])
    assert parse_may_import("madpipe.pipeline.cli", "May import: anything; nothing imports it.", known) == (None, [])
    assert parse_may_import("madpipe.pipeline.bench", "May import: any library subpackage (not pipeline.cli).",
                            known) == ({"madpipe.codecs", "madpipe.pipeline.kernels", "madpipe.pipeline.fuzz"}, [])
    assert parse_may_import("madpipe.pipeline.kernels", "May import: nothing in madpipe.", known) == (set(), [])
    assert parse_may_import("madpipe.pipeline.x", "May import: the ones it needs.", known)[1] == [
        "cannot read 'the ones it needs'"]
    assert parse_may_import("madpipe.pipeline.x", "May import: pipeline.nope", known)[1] == [
        "'pipeline.nope' names no module or package"]
    assert parse_may_import("madpipe.pipeline.x", "Does things.", known) == (set(), ["no 'May import:' line"])


def _packages() -> dict[str, Module]:
    return {m.name: m for m in modules().values() if m.is_package}


def test_every_pipeline_subpackage_says_what_it_may_import():
    known = set(modules())
    problems = []
    for name, package in sorted(_packages().items()):
        docstring = ast.get_docstring(ast.parse(package.path.read_text())) or ""
        if name.startswith("madpipe.pipeline."):  # the roots, codecs/ and pipeline/, need not say
            problems += [f"{package.path.relative_to(ROOT)}: {p}" for p in parse_may_import(name, docstring, known)[1]]
    assert not problems, "\n".join(problems)


def test_package_arrows_are_the_ones_the_docstrings_allow():
    known = set(modules())
    allowed = {}
    for name, package in _packages().items():
        allowed[name] = parse_may_import(name, ast.get_docstring(ast.parse(package.path.read_text())) or "", known)[0]
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for imp in imports():
        source, target = modules()[imp.source].package, imp.target
        if imp.target not in modules() or _in(target, source):  # itself and its own subpackages
            continue
        may = allowed[source]
        if may is not None and not any(_in(target, name) for name in may):
            arrows[(source, modules()[target].package)].append(f"{_where(imp)} imports {target}")
    assert not arrows, "arrows no 'May import:' line allows:\n" + "\n".join(
        f"{a} -> {b}: {'; '.join(where)}" for (a, b), where in sorted(arrows.items()))


# -- (d) small modules ----------------------------------------------------------------------------

def _lines() -> dict[str, int]:
    return {name: len(m.path.read_text().splitlines()) for name, m in modules().items()}


def test_no_module_over_the_line_limit_that_was_not_already():
    over = [f"{name}: {n} lines (limit {MAX_LINES}{f', was {OVERSIZE[name]}' if name in OVERSIZE else ''})"
            for name, n in sorted(_lines().items()) if n > max(MAX_LINES, OVERSIZE.get(name, 0))]
    assert not over, "modules over the limit (split them):\n" + "\n".join(over)


def test_the_oversize_list_only_holds_modules_still_over():
    lines = _lines()
    stale = [f"{name}: {lines.get(name, 'gone')}" for name in sorted(OVERSIZE) if lines.get(name, 0) <= MAX_LINES]
    assert not stale, "take these out of OVERSIZE, they are within the limit now:\n" + "\n".join(stale)


# -- (e) packages ---------------------------------------------------------------------------------

def test_every_folder_is_a_listed_package_with_a_docstring():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {}
    for folder, dotted in FOLDERS.items():
        for path in [ROOT / folder, *sorted((ROOT / folder).rglob("*"))]:
            if path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py")):
                folders[".".join((dotted, *path.relative_to(ROOT / folder).parts))] = path
    assert sorted(set(folders) - listed) == [], "folders missing from pyproject's packages list"
    assert sorted(listed - set(folders)) == [], "pyproject lists packages that have no folder"
    no_doc = [str(path.relative_to(ROOT)) for path in folders.values()
              if not (path / "__init__.py").exists() or not ast.get_docstring(ast.parse((path / "__init__.py").read_text()))]
    assert not no_doc, f"packages without an __init__.py docstring: {no_doc}"
