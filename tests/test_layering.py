"""The import structure: layers run one way, no import circle, r1jax imports at module top.

Reads the source (ast), imports nothing. LAYERS is the README's layout, bottom first: a module may
import from its own layer and the layers below it. A module belongs to the layer of its longest
listed prefix (r1jax.parallel.sharding sits above the model although r1jax.parallel.rules sits
below it). A failure names the importing module, its line and the layers involved.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

LAYERS = [  # bottom first
    ("config", ["r1jax.config", "r1jax.plugins", "r1jax.runlog"]),
    ("data", ["r1jax.data"]),
    ("mesh", ["r1jax.parallel", "r1jax.parallel.rules", "r1jax.parallel.mesh", "r1jax.parallel._flax_compat",
              "r1jax.parallel.distributed", "r1jax.parallel.handoff"]),
    ("kernels", ["pallas_kernels"]),
    ("model", ["r1jax.model", "r1jax.backends"]),
    ("train", ["r1jax.train", "r1jax.parallel.sharding", "r1jax.parallel.placement"]),
    ("checkpoint", ["r1jax.checkpoint"]),
    ("generation", ["r1jax.generation"]),
    ("rewards", ["r1jax.rewards"]),
    ("eval", ["r1jax.eval"]),
    ("runs", ["r1jax.launch", "r1jax.sft", "r1jax.rl"]),
    ("pipelines", ["r1jax.toy", "r1jax.cli", "r1jax"]),
]


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in ("r1jax", "pallas_kernels"):
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: pathlib.Path):
    """(imported module, line, at top level) for each r1jax / pallas_kernels import of the module."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from pkg import name` imports pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            r = _resolve(t)
            if r and r != name:
                yield r, node.lineno, id(node) in top


def _layer(name: str) -> int:
    best, where = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, where = len(p), i
    assert where is not None, f"{name} is in no layer of tests/test_layering.py LAYERS: add it"
    return where


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_layers_run_one_way():
    bad = []
    for name, path in MODULES.items():
        for dep, line, _ in _imports(name, path):
            if _layer(dep) > _layer(name):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name} ({LAYERS[_layer(name)][0]}) imports {dep} "
                           f"({LAYERS[_layer(dep)][0]}, a layer above)")
    assert not bad, "imports upward:\n" + "\n".join(sorted(bad))


def test_no_import_circle():
    graph = {name: {dep for dep, _, _ in _imports(name, path)} for name, path in MODULES.items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_r1jax_imports_at_module_top():
    """A module's head shows what it depends on: no r1jax import inside a function."""
    inner = [f"{path.relative_to(ROOT)}:{line}: imports {dep} inside a function"
             for name, path in MODULES.items() for dep, line, top in _imports(name, path)
             if not top and dep.startswith("r1jax")]
    assert not inner, "\n".join(sorted(inner))


def test_the_checker_sees_a_violation(tmp_path):
    """The layer of a module and the import walk on a planted upward import (the test can fail)."""
    assert _layer("r1jax.data.prompts") < _layer("r1jax.rewards.extract") < _layer("r1jax.eval.runner")
    assert _layer("r1jax.parallel.rules") < _layer("r1jax.model.moe") < _layer("r1jax.parallel.sharding")
    p = tmp_path / "m.py"
    p.write_text("from r1jax.eval import runner\n\ndef f():\n    from r1jax.rewards.extract import extract_answer\n")
    found = sorted(_imports("r1jax.data.m", p))
    assert found == [("r1jax.eval.runner", 1, True), ("r1jax.rewards.extract", 4, False)]


def test_moved_modules_still_import_with_a_warning():
    """r1jax.rl.rewards / r1jax.rl.reward_model (before the layering) import the new modules themselves
    (one reward registry), warning once."""
    import importlib
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    from r1jax.rl import rewards\n"
        "    import r1jax.rl.rewards.registry as old_registry\n"
        "    from r1jax.rl.reward_model import RewardModel\n"
        "import r1jax.rewards, r1jax.rewards.registry, r1jax.rewards.reward_model\n"
        "assert rewards is r1jax.rewards and old_registry is r1jax.rewards.registry\n"
        "assert RewardModel is r1jax.rewards.reward_model.RewardModel\n"
        "moved = sorted(str(x.message).split()[0] for x in w if issubclass(x.category, DeprecationWarning))\n"
        "print(moved)\n"
        "assert moved == ['r1jax.rl.reward_model', 'r1jax.rl.rewards', 'r1jax.rl.rewards.registry'], moved\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    spec = importlib.import_module("r1jax.plugins").load_callable("r1jax.rl.rewards.format:format_reward", "reward")
    assert spec is importlib.import_module("r1jax.rewards.format").format_reward
