"""The repository keeps its promises: the README's commands exist, CI runs them, notebooks are clean."""

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (requires-python allows it): the same parser from PyPI, in the dev extra
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# Standard-library modules newer than the oldest Python that pyproject.toml's requires-python allows.
NEWER_STDLIB = {"tomllib": (3, 11), "annotationlib": (3, 14), "compression": (3, 14)}


def test_readme_commands_are_the_makefile_targets_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^make (\w+)$", readme, flags=re.M)
    assert commands[:2] == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "</dev/null" in ci


def test_package_does_not_pin_an_exact_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_deps = [d for d in project["dependencies"] if d.startswith("torch")]
    assert torch_deps and "==" not in torch_deps[0]


def test_environment_yml_uses_conda_forge_and_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert any(".[dev]" in line for line in pip)


def test_notebooks_are_committed_without_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        assert "widgets" not in notebook.get("metadata", {}), f"{path.name} holds widget state"
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, \
                    f"{path.name} holds outputs: run `make strip-notebooks`"


def unguarded_imports(node: ast.AST):
    """Top-level names of the modules `node` imports, except under an `if` or `try` (version or
    ImportError guards) and relative imports."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.If, ast.Try)):
            continue
        if isinstance(child, ast.Import):
            yield from (alias.name.split(".")[0] for alias in child.names)
        elif isinstance(child, ast.ImportFrom) and child.level == 0:
            yield child.module.split(".")[0]
        else:
            yield from unguarded_imports(child)


def test_the_tests_need_only_the_oldest_python_allowed_and_declared_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    oldest = tuple(int(n) for n in re.search(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups())
    declared = {re.match(r"[A-Za-z0-9_.-]+", req).group().lower().replace("_", "-")
                for req in project["dependencies"] + project["optional-dependencies"]["dev"]}
    distributions = importlib.metadata.packages_distributions()
    for path in sorted((ROOT / "tests").glob("*.py")):
        for name in set(unguarded_imports(ast.parse(path.read_text()))) - {"minisora", "__future__"}:
            if name in sys.stdlib_module_names:
                assert NEWER_STDLIB.get(name, oldest) <= oldest, \
                    f"{path.name} imports {name}, which Python {oldest[0]}.{oldest[1]} does not have"
            else:
                provided_by = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
                assert provided_by & declared, f"{path.name} imports {name}: declare {provided_by} in pyproject.toml"
