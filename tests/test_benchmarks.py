"""The benchmark scripts run against the package as it is, and record their results one way."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_script_imports_what_it_names(path, load_benchmark):
    assert callable(load_benchmark(path.stem).main)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_script_writes_results_through_common(path):
    source = path.read_text()
    assert "from common import" in source and "write_results(" in source, path.name
    for own_write in ("RESULTS.open", "RESULTS.write_text", "def write_results", "def machine_name"):
        assert own_write not in source, f"{path.name} writes RESULTS.md itself ({own_write})"


def test_results_are_appended_with_the_machine_and_a_heading(tmp_path, monkeypatch, load_benchmark):
    common = load_benchmark("common")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    common.write_results("sampling time", "cpu", "a note", "| a |\n|---|\n| 1 |\n")
    common.write_results("scaling", "cpu", "", "| b |\n")
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results")
    assert text.count("\n## ") == 2 and "## sampling time · " in text and "a note\n\n| a |" in text
    assert common.machine_name("cpu") in text
