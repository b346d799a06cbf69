"""archsearch's own model sources as one importable file, so that an exported model runs without archsearch installed.

`bundle_source(root)` finds the modules `root` imports (relative imports and `archsearch.*` ones, also those inside
functions, and every module beside a package's `__init__`, for registries that import their members by name), and
writes them into one Python file: a dict of module sources and an import hook that serves them as the package
`archsearch_bundle_<hash of the sources>`. The sources are archsearch's, unchanged (one source of truth); only the
top-level `__init__` is left out, since it imports the search stack (Ray, Optuna) a model does not need.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

ROOT_PACKAGE = "archsearch"
PACKAGE_DIR = Path(__file__).resolve().parent

# the import hook; PACKAGE and SOURCES are defined above it in the generated file
_LOADER = '''

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves SOURCES as the package PACKAGE."""

    def find_spec(self, fullname, path=None, target=None):
        name = _relative(fullname)
        if name is None or name not in SOURCES:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=name in PACKAGES)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = _relative(module.__name__)
        filename = f"<{PACKAGE}>/{name.replace('.', '/') or '__init__'}.py"
        linecache.cache[filename] = (len(SOURCES[name]), None, SOURCES[name].splitlines(True), filename)
        exec(compile(SOURCES[name], filename, "exec"), module.__dict__)


def _relative(fullname):
    if fullname == PACKAGE:
        return ""
    return fullname[len(PACKAGE) + 1:] if fullname.startswith(PACKAGE + ".") else None


def load(module):
    """The bundled module `module` (a dotted name inside archsearch, e.g. "hf")."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
    return importlib.import_module(f"{PACKAGE}.{module}")
'''


def module_path(name: str) -> Path | None:
    """The file of module `name` (dotted, inside archsearch), or None when there is none."""
    parts = name.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported(name: str, path: Path) -> set[str]:
    """The archsearch modules that module `name` (at `path`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == ROOT_PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == ROOT_PACKAGE:
                base = node.module
            else:
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}") is not None}
    return {m for m in found if module_path(m) is not None}


def module_closure(root: str) -> dict[str, Path]:
    """Every archsearch module that importing `root` may import, with its file (the packages on the way included)."""
    todo, seen = [root], {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name)
        seen[name] = path
        if name == ROOT_PACKAGE:  # its __init__ is not bundled (see the module's docstring)
            continue
        parents = [".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 1)]
        todo += parents + sorted(_imported(name, path))
        if path.name == "__init__.py":  # registries import their members by name (importlib): bring them all
            todo += [f"{name}.{p.stem}" for p in sorted(path.parent.glob("*.py")) if p.name != "__init__.py"]
    return dict(sorted(seen.items()))


def bundle_source(root: str = "archsearch.hf") -> str:
    """The text of the bundle file: the closure of `root`, importable with `load("hf")` (for root archsearch.hf)."""
    modules = module_closure(root)
    sources = {"": '"""archsearch\'s model code, bundled (the search stack is not)."""\n'}
    packages = {""}
    for name, path in modules.items():
        relative = name.removeprefix(ROOT_PACKAGE).removeprefix(".")
        if not relative:
            continue
        sources[relative] = path.read_text()
        if path.name == "__init__.py":
            packages.add(relative)
    digest = hashlib.sha256(repr(sorted(sources.items())).encode()).hexdigest()[:12]
    lines = [
        f'"""archsearch\'s model code ({len(sources) - 1} modules), generated by archsearch.bundle: edit archsearch, '
        'not this file.\n\n`load("hf")` imports the bundled `archsearch.hf`; the sources below are archsearch\'s, '
        'unchanged."""',
        "",
        "import importlib.abc",
        "import importlib.util",
        "import linecache",
        "import sys",
        "",
        f"PACKAGE = {f'archsearch_bundle_{digest}'!r}",
        f"PACKAGES = {sorted(packages)!r}",
        "SOURCES = {",
        *(f"    {name!r}: {text!r}," for name, text in sources.items()),
        "}",
    ]
    return "\n".join(lines) + _LOADER
