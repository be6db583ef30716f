"""The house rules of the layout, read from the source (no imports run, so this takes a second).

- common/ imports nothing of ours; asr/ and tts/ import only common/ (and themselves);
- rag/ never imports web/ or app; nothing but app.py imports web/ (bench/ and tests/ aside);
- no circle of imports between files, counting imports inside functions and the backend tables that
  name a module as a string ("pkg.module:Class"), which are imports taken later;
- no folder holds more than 12 files of code.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "asr", "tts", "rag", "web")
ALLOWED = {                      # a package -> the packages of ours it may import
    "common": {"common"},
    "asr": {"common", "asr"},
    "tts": {"common", "tts"},
    "rag": {"common", "asr", "tts", "rag"},
    "web": {"common", "asr", "tts", "rag", "web"},
}
MAX_FILES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found["app"] = ROOT / "app.py"
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that `name` (a module, or a module's attribute) is, or None if not ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules)


def imports_in(source: str, here: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Every module of ours this source imports: at the top, inside functions, or by a backend table."""
    tree = ast.parse(source)
    package = here if is_package else here.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
            names.update(submodules or {base})      # `from pkg import module` imports that module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            target, _, attr = node.value.partition(":")      # "asr.faster_whisper_backend:Class"
            if attr.isidentifier() and target.split(".")[0] in PACKAGES:
                names.add(target)
    found = {resolve(n, modules) for n in names}
    return {m for m in found if m and m != here}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_packages_import_only_downward(graph):
    wrong = []
    for module, deps in sorted(graph.items()):
        top = module.split(".")[0]
        for dep in sorted(deps):
            if top in ALLOWED and dep.split(".")[0] not in ALLOWED[top]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles(graph):
    assert cycles(graph) == []


def test_cycle_finder_sees_a_circle():
    # the check above must be able to fail: a -> b -> c -> a is one circle, d hangs off it
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_reader_sees_every_kind_of_import():
    source = ("import rag.config\nfrom . import base\n"
              "def later():\n    from rag.answer import prompt\n"
              "BACKENDS = {'x': 'rag.pipeline:Pipeline'}\n")
    found = imports_in(source, "asr.probe", False, our_modules())
    assert found == {"rag.config", "asr.base", "rag.answer.prompt", "rag.pipeline"}


def test_no_crowded_folders():
    crowded = {}
    for folder in [ROOT / p for p in PACKAGES] + [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
                                                    if p.is_dir() and p.name != "__pycache__"]:
        count = len([f for f in folder.glob("*.py") if f.name != "__init__.py"])
        if count > MAX_FILES:
            crowded[str(folder.relative_to(ROOT))] = count
    assert crowded == {}
