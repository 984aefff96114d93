"""Every notebook's exercises check themselves, and the reference solutions pass those checks.

Each notebook is executed twice in smoke mode: with its reference answers from notebooks/solutions/
put into its `# Exercise NN.K` cells (every check must say right), and as stored (no check may).
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minisora.exercises import RIGHT, UNANSWERED

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HEADER = re.compile(r"^# Exercise (\d\d\.\d+)\b.*$", re.MULTILINE)
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def exercise_cells(notebook) -> dict[str, nbformat.NotebookNode]:
    """Answer cells by exercise id: code cells whose first line is `# Exercise NN.K ...`."""
    cells = {}
    for cell in notebook.cells:
        match = HEADER.match(cell.source) if cell.cell_type == "code" else None
        if match:
            assert match.group(1) not in cells, f"exercise {match.group(1)} has two answer cells"
            cells[match.group(1)] = cell
    return cells


def solutions(path: Path) -> dict[str, str]:
    """The solution file's sections by exercise id; each section keeps its header line."""
    text = path.read_text()
    starts = [(m.start(), m.group(1)) for m in HEADER.finditer(text)]
    return {ident: text[start:end].strip() + "\n"
            for (start, ident), (end, _) in zip(starts, starts[1:] + [(len(text), None)])}


def check_lines(notebook) -> dict[str, str]:
    """What each exercise's check printed, by exercise id (the last line printed for each)."""
    said = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                for ident, verdict in re.findall(r"^Exercise (\d\d\.\d+): (.*)$", output["text"], re.MULTILINE):
                    said[ident] = verdict
    return said


def execute(notebook):
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


@pytest.mark.parametrize("path", ALL, ids=[p.stem[:2] for p in ALL])
def test_every_notebook_has_two_exercises_with_solutions(path):
    exercises = exercise_cells(nbformat.read(path, as_version=4))
    assert len(exercises) >= 2, f"{path.name} has {len(exercises)} self-checking exercises; a lesson needs 2+"
    assert all(ident.startswith(path.name[:2] + ".") for ident in exercises), sorted(exercises)
    answers = solutions(NOTEBOOKS / "solutions" / f"{path.stem}.py")
    assert sorted(answers) == sorted(exercises), "solutions and exercises must match one to one"


@pytest.mark.parametrize("path", ALL, ids=[p.stem[:2] for p in ALL])
def test_solutions_pass_their_checks_and_placeholders_do_not(path):
    stored = nbformat.read(path, as_version=4)
    solved = nbformat.read(path, as_version=4)
    answers = solutions(NOTEBOOKS / "solutions" / f"{path.stem}.py")
    for ident, cell in exercise_cells(solved).items():
        cell.source = answers[ident]

    said_solved = check_lines(execute(solved))
    assert set(said_solved) == set(answers), f"checks that printed nothing: {set(answers) - set(said_solved)}"
    assert all(v == RIGHT for v in said_solved.values()), said_solved

    said_stored = check_lines(execute(stored))
    assert set(said_stored) == set(answers)
    assert all(v.startswith(UNANSWERED) for v in said_stored.values()), said_stored
