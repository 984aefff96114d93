"""The package reads in one direction: one concept per module, each short, no import cycle, and following
one prompt (model.generate) or one video (model.extend) never climbs back into a module it left: on every
call stack of the run, each minisora module appears once (the ways to sample above, the model's parts
below; MiniSora's mode methods are those functions themselves, not a frame of pipeline.py)."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minisora
from minisora import MiniSora
from minisora.world import render

PACKAGE = Path(minisora.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "csrc" not in p.parts)
FAST = {"steps": 1, "guidance": 3.0, "progress": False}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, deferred: bool = True) -> set[str]:
    """The minisora modules `path` imports: anywhere in it (deferred=True: an import inside a function
    counts), or at module level only (deferred=False)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    known, names = {module_name(p) for p in MODULES}, set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if deferred else tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .flow import x`, `from . import flow`
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:  # a submodule (`from . import flow`) or a name of `base`
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name in known and name != module_name(path)} - {"minisora"}


def test_one_concept_per_module_each_readable_in_one_sitting():
    long = {module_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
    assert not [p.name for p in MODULES if "PromptingMixin" in p.read_text()]


# The one deferred cycle: the world hands scenes where one object hits another to minisora.interactions
# (placement, captions), which builds on the world's vocabulary; world imports it inside those functions.
DEFERRED_CYCLES = {("minisora.world", "minisora.interactions")}


@pytest.mark.parametrize("deferred", [False, True])
def test_the_import_graph_has_no_cycle(deferred):
    graph = {module_name(p): imported_modules(p, deferred) for p in MODULES
             if p.name != "__init__.py" or p.parent != PACKAGE}
    if deferred:
        for a, b in DEFERRED_CYCLES:
            graph[a].discard(b)
    done, path = set(), []

    def visit(name):
        if name in path:
            pytest.fail(f"import cycle: {' -> '.join(path[path.index(name):] + [name])}")
        if name in done:
            return
        path.append(name)
        for other in sorted(graph.get(name, ())):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def climbs_back(run) -> list[list[str]]:
    """Run `run()` and return every call stack (minisora modules, consecutive repeats merged) in which a
    module appears twice: a call that left it and came back into it."""
    stack, found = [], []

    def profile(frame, event, arg):
        if event == "call":
            name = frame.f_globals.get("__name__", "")
            stack.append(name if name.startswith("minisora") else None)
            modules = [m for m in stack if m is not None]
            merged = [m for i, m in enumerate(modules) if i == 0 or m != modules[i - 1]]
            if len(set(merged)) < len(merged) and merged not in found:
                found.append(merged)
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return found


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniSora.from_preset("tiny").eval()


def test_following_a_prompt_never_climbs_back_into_a_module(model):
    assert climbs_back(lambda: model.generate("a red circle moves to the right", height=16, width=16, **FAST)) == []


def test_following_a_video_never_climbs_back_into_a_module(model):
    video = render("a red circle moves to the right", num_frames=9, height=16, width=16).video
    out = []
    assert climbs_back(lambda: out.append(model.extend(video, "a red circle", new_frames=4, **FAST))) == []
    assert np.array_equal(out[0][:9], video)
