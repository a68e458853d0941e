"""The engine's dependencies point one way: no import cycle among moda_core's modules, counting
imports inside functions too (read from the source with ast, not from what happens to be loaded); moda_core imports
nothing of the dashboard; the dashboard's pages import only value types and constants from moda_core, and get
their data through dashboard/engine.py."""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "moda_core"


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module → the moda_core modules it imports anywhere in its source (``from a import b`` counts as
    ``a.b`` when that is a module, else as ``a``)."""
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "moda_core.tvdata" in graph["moda_core.data"]  # data imports tvdata inside a function


def test_moda_core_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(set(module_names()) - {"moda_core.__main__"}))  # that one runs the CLI
def test_every_module_imports_and_says_what_it_is_for(name):
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), f"{name} has no module docstring"


@pytest.mark.parametrize("name", sorted(module_names()))
def test_moda_core_imports_nothing_of_the_dashboard(name):
    path = module_names()[name]
    outside = {top for module, _ in imports_of(path) if (top := module.split(".")[0]) in ("dashboard", "streamlit")}
    assert not outside, f"{name} imports {', '.join(sorted(outside))}"


def test_main_module_says_what_it_is_for():
    assert ast.get_docstring(ast.parse((PACKAGE / "__main__.py").read_text()))


# ----- the dashboard's pages get their data through dashboard/engine.py ---------------------------------------

VIEWS = PACKAGE.parent / "dashboard" / "views"
# what a page may import from moda_core itself: value types and constants, never a function that computes or reads
# (that goes through dashboard/engine.py, cached where it is pure)
VIEW_IMPORTS = {
    "moda_core.comparison": {"CompareFileError"},
    "moda_core.decompose": {"DEFAULT_TAU", "TAU_RANGE"},
    "moda_core.errors": {"ModaError"},
    "moda_core.methods": {"METHODS"},
    "moda_core.probe": {"PROBE_IMAGES"},
    "moda_core.replace": {"STRATEGIES"},
    "moda_core.run_config": {"MAX_SEED"},
    "moda_core.store.names": {"RunRef"},
    "moda_core.store.summary": {"RunStatus", "RunSummary"},
    "moda_core.train": {"TrainConfig"},
}


def imports_of(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every absolute import in a file, anywhere in it (``import a.b``: the module itself, name
    "*")."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "*") for alias in node.names]
    return found


def moda_core_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import from moda_core in a file, anywhere in it."""
    return [(module, name) for module, name in imports_of(path) if module.split(".")[0] == "moda_core"]


def test_the_view_import_check_sees_functions_and_modules(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("from moda_core import runs as run_store\nimport moda_core.studies\n"
                    "from moda_core.errors import ModaError\n\n\ndef f():\n"
                    "    from moda_core.studies import default_pairs\n")
    assert sorted(moda_core_imports(page)) == [("moda_core", "runs"), ("moda_core.errors", "ModaError"),
                                               ("moda_core.studies", "*"), ("moda_core.studies", "default_pairs")]


@pytest.mark.parametrize("page", sorted(p.name for p in VIEWS.glob("*.py")))
def test_pages_import_only_value_types_and_constants_from_moda_core(page):
    unlisted = [f"{module}.{name}" for module, name in moda_core_imports(VIEWS / page)
                if name not in VIEW_IMPORTS.get(module, set())]
    assert not unlisted, (f"dashboard/views/{page} imports {', '.join(unlisted)} from moda_core: get the data "
                          "through dashboard/engine.py (or, for a value type or constant, add it to VIEW_IMPORTS)")


@pytest.mark.parametrize(("module", "name"), sorted((m, n) for m, names in VIEW_IMPORTS.items() for n in names))
def test_what_pages_may_import_is_a_value_type_or_a_constant(module, name):
    value = getattr(importlib.import_module(module), name)
    assert isinstance(value, type) or not (callable(value) or inspect.ismodule(value)), f"{module}.{name}"


def test_no_engine_module_is_over_400_lines():
    """One owner per concern: a moda_core module that grows past 400 lines does more than one job (split it)."""
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 400}
    assert not long, f"moda_core modules over 400 lines: {long}"
