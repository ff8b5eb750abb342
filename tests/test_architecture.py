"""The package's import graph, read from the source with `ast`: layers, no circles, jobs apart from the library.

Every `import` in beam_ml/, pipelines/, transforms/ and templates/ counts,
at module level and inside functions. docs/ARCHITECTURE.md describes the
layers and the lists below; a change to one is a change to the other.

    python -m tests.test_architecture      # prints the graph's numbers
"""
from __future__ import annotations

import ast
import dataclasses
import os
import sys
from typing import Iterator, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("beam_ml", "pipelines", "transforms", "templates")

# Lowest first. A module belongs to the layer of its longest matching prefix; it may import
# from its own layer and the ones below (no circles), never from a higher one unless UPWARD lists it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # errors, file systems, counters, how much a command prints, the command-line wrapper: no beam_ml imports
    # but these.
    ("core", ("beam_ml", "beam_ml.errors", "beam_ml.fs", "beam_ml.metrics", "beam_ml.logs", "beam_ml.cli",
              "beam_ml.redaction")),
    # what a dataset and a model are: the spec, records (and their wire formats), exported models on disk,
    # scoring one row.
    ("model", ("beam_ml.spec", "beam_ml.records", "beam_ml.formats", "beam_ml.model_store", "beam_ml.serving")),
    # connectors: CSV, TFRecord, Kafka, BigQuery. Explicit arguments, never PipelineOptions.
    ("io", ("beam_ml.io",)),
    # Beam steps and the logic of each capability, wired by nobody in here.
    ("library", ("beam_ml.clean", "beam_ml.ingest", "beam_ml.inference", "beam_ml.training", "beam_ml.preprocess",
                 "beam_ml.evaluation", "beam_ml.export", "beam_ml.tuning", "beam_ml.datasets", "beam_ml.producer",
                 "beam_ml.runner", "beam_ml.testing", "beam_ml.server", "beam_ml.monitoring", "beam_ml.features",
                 "transforms")),
    # the flags: their table (beam_ml.flags, no Beam) and the PipelineOptions subclasses: read by jobs and entries.
    ("options", ("beam_ml.options", "beam_ml.flags")),
    # whole pipelines: flags -> arguments, plan -> build -> write -> run -> counts.
    ("jobs", ("beam_ml.jobs",)),
    # `python -m pipelines.X` and the Dataflow Flex Template launcher: parse flags, call a job.
    ("entry", ("pipelines", "templates")),
)

# Imports from a lower layer to a higher one, each with why it is right.
UPWARD: dict[tuple[str, str], str] = {
    ("beam_ml.spec", "beam_ml.io.dialect"):
        "spec inference detects a CSV file's dialect as the reader does (one CSV grammar, not two)",
    ("beam_ml.spec", "beam_ml.io.csv_lines"):
        "spec inference splits sample lines with the reader's own line splitter",
    ("beam_ml.spec", "beam_ml.io.files"):
        "spec inference opens its sample through the reader's file layer (any Beam filesystem, compression)",
}

# First-party modules a function may import (instead of the file's top): each is heavy to import
# and kept off the cheap paths (--help, flag checks, workers that never train) on purpose.
DEFERRED: dict[str, str] = {
    "beam_ml.preprocess": "tf.Transform + TensorFlow (seconds): train's planning and --help stay light",
    "beam_ml.export": "TensorFlow: the report, evaluation and trials load it only when a model is exported",
    "beam_ml.evaluation": "scikit-learn and TensorFlow signatures: only the training graph needs them",
    "beam_ml.training.trainer": "Keras + TensorFlow: built inside the trial DoFns, on the workers",
    "beam_ml.training.data": "TensorFlow datasets: inside the trial DoFns",
    "beam_ml.training.models": "Keras: inside the trial DoFns",
    "transforms.preprocessing": "tf.Transform + TensorFlow: inside the trial DoFns",
    "beam_ml.server.client": "beam_ml.server's package imports aiohttp and the inference stack (~1 s): "
                             "pipelines.predict scoring in-process does without it",
    "beam_ml.training.report": "matplotlib (about a second): the report is drawn after training, not at --help",
    "beam_ml.jobs.train": "Beam, the cleaning and Kafka stacks (2-6 s): pipelines.train imports it once its flags "
                          "parse clean (beam_ml.flags), not for --help or a typo",
    "beam_ml.options": "Beam (1.5-4 s): pipelines.train checks its flags with beam_ml.flags first",
}


@dataclasses.dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool


def _modules(root: str) -> dict[str, str]:
    """Dotted module name -> file path, for every .py file of PACKAGES."""
    out = {}
    for package in PACKAGES:
        for d, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _resolve(name: str, modules: dict[str, str]) -> Optional[str]:
    """The module a dotted import names (`from a.b import c`: a.b.c if a module, else a.b)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: str = ROOT) -> tuple[dict[str, str], list[Import]]:
    """(modules, every first-party import among them), parsed with ast."""
    modules = _modules(root)
    found = []
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")

        def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parts = name.split(".")[: None if is_package else -1]
                        parts = parts[: len(parts) - (child.level - 1)]
                        base = ".".join(parts + ([base] if base else []))
                    targets = [f"{base}.{a.name}" for a in child.names]
                else:
                    yield from visit(child, inner)
                    continue
                for t in targets:
                    target = _resolve(t, modules)
                    if target and target != name:
                        yield Import(name, target, child.lineno, in_function)

        found.extend(visit(tree, False))
    return modules, found


def layer_of(module: str) -> Optional[int]:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    return index


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one circle through them."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(_circle(sorted(component), edges))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def _circle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path from the component's first module back to itself, inside the component."""
    members, start = set(component), component[0]
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(edges.get(path[-1], ())):
            if w == start:
                return path + [start]
            if w in members and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return component


def summary(root: str = ROOT) -> dict[str, int]:
    modules, found = imports(root)
    edges: dict[str, set[str]] = {}
    for i in found:
        edges.setdefault(i.importer, set()).add(i.target)
    upward = {(i.importer, i.target) for i in found
              if layer_of(i.importer) is not None and layer_of(i.target) is not None
              and layer_of(i.target) > layer_of(i.importer)}
    return {"modules": len(modules), "edges": sum(len(v) for v in edges.values()),
            "circles": len(cycles(edges)), "upward imports": len(upward),
            "function-level first-party imports": sum(i.in_function for i in found)}


@pytest.fixture(scope="module")
def graph():
    return imports()


def test_every_module_has_a_layer(graph):
    modules, _ = graph
    missing = sorted(m for m in modules if layer_of(m) is None)
    assert not missing, f"modules in no layer (add them to LAYERS and docs/ARCHITECTURE.md): {missing}"


def test_no_import_circles(graph):
    _, found = graph
    edges: dict[str, set[str]] = {}
    for i in found:
        edges.setdefault(i.importer, set()).add(i.target)
    circles = cycles(edges)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_library_module_imports_a_job(graph):
    _, found = graph
    jobs = layer_of("beam_ml.jobs")
    bad = sorted(f"{i.importer}:{i.line} imports {i.target}" for i in found
                 if i.target.startswith("beam_ml.jobs") and layer_of(i.importer) < jobs)
    assert not bad, "jobs are wired by pipelines/ and other jobs only: " + "; ".join(bad)


def test_imports_from_a_lower_layer_to_a_higher_one_are_listed_with_a_reason(graph):
    _, found = graph
    upward = {}
    for i in found:
        if layer_of(i.target) > layer_of(i.importer):
            upward.setdefault((i.importer, i.target), i.line)
    unlisted = sorted(f"{a}:{line} -> {b} ({LAYERS[layer_of(a)][0]} -> {LAYERS[layer_of(b)][0]})"
                      for (a, b), line in upward.items() if (a, b) not in UPWARD)
    assert not unlisted, "imports up the layers, not in UPWARD: " + "; ".join(unlisted)
    stale = sorted(f"{a} -> {b}" for a, b in UPWARD if (a, b) not in upward)
    assert not stale, "UPWARD lists imports that no longer exist: " + "; ".join(stale)
    assert all(reason.strip() for reason in UPWARD.values())


def test_first_party_imports_inside_functions_are_the_deferred_heavy_modules_only(graph):
    _, found = graph
    bad = sorted(f"{i.importer}:{i.line} imports {i.target}" for i in found
                 if i.in_function and not any(i.target == d or i.target.startswith(d + ".") for d in DEFERRED))
    assert not bad, ("imports belong at the top of the file; a heavy module deferred on purpose goes in "
                     "DEFERRED with its reason: " + "; ".join(bad))


def test_options_and_io_stay_apart(graph):
    """Jobs translate flags into arguments: options.py knows no connector, no connector reads options."""
    _, found = graph
    bad = sorted(f"{i.importer}:{i.line} imports {i.target}" for i in found
                 if (i.importer == "beam_ml.options" and i.target.startswith("beam_ml.io"))
                 or (i.importer.startswith("beam_ml.io") and i.target == "beam_ml.options"))
    assert not bad, "; ".join(bad)


def test_the_checks_see_a_circle_an_upward_import_and_a_function_level_import(tmp_path):
    """The graph builder on a tiny tree: what the checks above rely on it to find, it finds."""
    pkg = tmp_path / "beam_ml"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("from . import a\n")
    (pkg / "io" / "a.py").write_text("def f():\n    from beam_ml.jobs import x\n")
    (pkg / "jobs").mkdir()
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "jobs" / "x.py").write_text("import beam_ml.io\nfrom beam_ml.io.a import f\n")
    modules, found = imports(str(tmp_path))
    assert set(modules) == {"beam_ml", "beam_ml.io", "beam_ml.io.a", "beam_ml.jobs", "beam_ml.jobs.x"}
    assert Import("beam_ml.io", "beam_ml.io.a", 1, False) in found
    assert Import("beam_ml.io.a", "beam_ml.jobs.x", 2, True) in found
    edges: dict[str, set[str]] = {}
    for i in found:
        edges.setdefault(i.importer, set()).add(i.target)
    assert cycles(edges) == [["beam_ml.io", "beam_ml.io.a", "beam_ml.jobs.x", "beam_ml.io"]]
    assert summary(str(tmp_path)) == {"modules": 5, "edges": 4, "circles": 1, "upward imports": 1,
                                      "function-level first-party imports": 1}


if __name__ == "__main__":
    for key, value in summary(sys.argv[1] if len(sys.argv) > 1 else ROOT).items():
        print(f"{key}: {value}")
