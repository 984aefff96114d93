"""The course's plumbing: one setup cell and badge everywhere, the lesson preset, exercise checks."""

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

from minisora import config
from minisora.exercises import RIGHT, UNANSWERED, WRONG, answer, check

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("notebook_setup", ROOT / "tools" / "notebook_setup.py")
notebook_setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(notebook_setup)


def test_every_notebook_has_the_generated_setup_cell_and_badge(capsys):
    assert notebook_setup.main(["--check"]) == 0, capsys.readouterr().out


def test_every_link_to_the_repository_is_the_one_in_pyproject():
    url = notebook_setup.repository_url()
    owner_and_name = url.split("github.com/", 1)[1]
    texts = [ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    for path in texts:
        for found in re.findall(r"github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[/\"')\s])", path.read_text()):
            assert found == owner_and_name, f"{path.name} links to {found}, pyproject says {owner_and_name}"
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        setup = next(c for c in notebook.cells if c.cell_type == "code").source
        assert f'REPO_URL = "{url}"' in setup
        assert f"colab.research.google.com/github/{owner_and_name}/blob/main/notebooks/{path.name})" in \
            notebook.cells[0].source, f"{path.name}'s first cell lacks its own Colab badge"


def test_setup_cell_retries_a_failed_install_and_installs_ninja():
    source = notebook_setup.setup_cell_source("https://github.com/someone/fork")
    compile(source, "setup", "exec")  # valid Python
    assert 'REPO_URL = "https://github.com/someone/fork"' in source
    assert "for attempt in (1, 2)" in source and '"ninja"' in source
    # the "installed" mark is written only after pip succeeded, so a rerun after a failure installs again
    assert source.index("pip") < source.index('.colab-installed").touch()')


def test_lesson_preset_is_tiny_on_cpu_and_in_smoke_mode_and_can_be_overridden(monkeypatch):
    monkeypatch.setenv("MINISORA_SMOKE", "1")
    monkeypatch.delenv("MINISORA_PRESET", raising=False)
    assert config.lesson_preset() == "tiny"
    monkeypatch.setenv("MINISORA_PRESET", "colab")
    assert config.lesson_preset() == "colab"
    monkeypatch.setenv("MINISORA_PRESET", "huge")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        config.lesson_preset()


def test_check_says_right_wrong_or_unanswered(capsys):
    def placeholder():
        answer(...)

    def wrong():
        if answer(3) != 4:  # an explicit raise: pytest rewrites `assert` messages in test modules
            raise AssertionError("count again")

    def crashes():
        raise KeyError("frames")

    for test in (lambda: answer(4), placeholder, wrong, crashes):
        assert check("02.1", test) is None  # a check cell shows its one line, not a return value
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Exercise 02.1: {RIGHT}"
    assert lines[1].startswith(f"Exercise 02.1: {UNANSWERED}")
    assert lines[2] == f"Exercise 02.1: {WRONG}. count again"
    assert lines[3].startswith(f"Exercise 02.1: {WRONG}. Your code raised KeyError")
