"""The rooms of harness/ stay layered: read from the source (AST), every import -- inside
functions too, and the package `__init__` files Python runs on the way -- goes to the same layer
or a lower one, and no set of modules imports itself round in a cycle.

The layers, lowest first (a module may import its own layer and those below it):
    ground        harness.ground: errors, home, jsonl, digest, stats, names, the reference rules
    providers, finetune   which take from harness only its ground
    assets        the offline models (the metrics load their embedders from it)
    runs          harness.runs: the one reader of lm-eval outputs, model identity, run labels,
                  the marker a study run leaves in its results
    evaluate      harness.evaluate: documents, metrics, contamination (not its command)
    tasks         the lm-eval task's own code
    study         harness.study: the study file (spec, registry), jobs, executors, claims
    review, judge, leaderboard   the report stages, each reading those before it
    commands      every `feyntune` command module, and the study runner (it starts them all)
    demo, cli
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "finetune", "providers", "tasks")
COMMANDS = ("harness.evaluate.command", "harness.study.reproduce", "harness.study.command",
            "harness.study.runner", "harness.review.command", "harness.judge.command",
            "harness.leaderboard.command")
# (module or package prefix, layer); the longest matching prefix wins.
LAYERS = (
    ("harness.ground", 0), ("providers", 1), ("finetune", 1), ("harness.assets", 2),
    ("harness.runs", 3), ("harness.evaluate", 4), ("tasks", 5), ("harness.study", 6),
    ("harness.review", 7), ("harness.judge", 8),
    ("harness.leaderboard", 9), *((name, 10) for name in COMMANDS), ("harness.demo", 11),
    ("harness.cli", 12),
)
# What providers/ and finetune/ may take from harness/.
GROUND = "harness.ground"


def modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted name -> file, for every module and package __init__ of the project."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` makes Python run: each imported module and every package
    __init__ above it; `from P import x` counts P.x when x is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    runs = set()
    for target in targets:
        parts = target.split(".")
        runs.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
                    if p in known and p != name)
    return runs


def graph(root: Path = REPO) -> tuple[dict[str, Path], dict[str, set[str]]]:
    known = modules(root)
    return known, {name: imported(name, path, known) for name, path in known.items()}


def layer(name: str) -> int | None:
    """A module's layer; None for package __init__ files outside LAYERS (they import nothing)."""
    best = None
    for prefix, rank in LAYERS:
        if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[0])):
            best = (prefix, rank)
    return best[1] if best else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_no_import_cycle():
    known, edges = graph()
    knots = cycles(edges)
    assert not knots, "import cycles:\n" + "\n".join(
        "  " + " <-> ".join(_rel(known[m]) for m in knot) for knot in knots)


def test_no_upward_import():
    known, edges = graph()
    upward = []
    for name, targets in edges.items():
        mine = layer(name)
        for target in sorted(targets):
            theirs = layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"  {_rel(known[name])} (layer {mine}) imports {target} "
                              f"({_rel(known[target])}, layer {theirs})")
    assert not upward, "imports into a higher layer:\n" + "\n".join(upward)


def test_every_module_has_a_layer_and_package_inits_hold_a_docstring_only():
    known = modules()
    unplaced = [_rel(known[n]) for n in known if layer(n) is None and known[n].name != "__init__.py"]
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"
    # Python runs a package's __init__ for every module inside it: it holds a docstring only.
    busy = [_rel(path) for path in known.values() if path.name == "__init__.py" and any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        for node in ast.parse(path.read_text(encoding="utf-8")).body)]
    assert not busy, f"package __init__ files with code (it belongs in a module of its own): {busy}"


def test_providers_and_finetune_take_only_the_ground_from_harness():
    """(`harness` itself is run on the way to harness.ground; it holds a docstring only.)"""
    known, edges = graph()
    reaching = [f"  {_rel(known[name])} imports {target}"
                for name, targets in sorted(edges.items()) if name.split(".")[0] in ("providers", "finetune")
                for target in sorted(targets)
                if target.split(".")[0] == "harness" and target != "harness"
                and not (target == GROUND or target.startswith(GROUND + "."))]
    assert not reaching, "providers/ and finetune/ reach past harness.ground:\n" + "\n".join(reaching)


def test_every_project_import_names_a_module_that_exists():
    """An import of an old path (harness.errors, harness.study before the rooms) fails here,
    naming the file, even inside a function that no test runs."""
    known = modules()
    missing = []
    for name, path in sorted(known.items()):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                wanted = [".".join(base + ([node.module] if node.module else []))]
            else:
                continue
            missing += [f"  {_rel(path)}:{node.lineno} imports {module}" for module in wanted
                        if module.split(".")[0] in PACKAGES and module not in known]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_the_checks_catch_a_knot_and_an_upward_import(tmp_path):
    """The graph reader on a tiny tree: a cycle through a package __init__ and a function-level
    import, and a ground module importing a command."""
    (tmp_path / "harness" / "ground").mkdir(parents=True)
    (tmp_path / "harness" / "leaderboard").mkdir()
    for pkg in ("harness", "harness/ground"):
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "harness" / "leaderboard" / "__init__.py").write_text(
        "def run():\n    from harness.leaderboard import rows\n")
    (tmp_path / "harness" / "leaderboard" / "rows.py").write_text("import harness.leaderboard\n")
    (tmp_path / "harness" / "ground" / "stats.py").write_text(
        "def f():\n    from harness.leaderboard.rows import x\n")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    _, edges = graph(tmp_path)
    assert cycles(edges) == [["harness.leaderboard", "harness.leaderboard.rows"]]
    assert "harness.leaderboard.rows" in edges["harness.ground.stats"]
    assert layer("harness.ground.stats") < layer("harness.leaderboard.rows")
