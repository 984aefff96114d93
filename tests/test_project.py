"""The repository keeps its promises: the README's commands exist, CI runs them, notebooks are clean."""

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


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
