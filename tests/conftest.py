"""Shared test set-up: provenance keys go to a temporary folder, never the user's ~/.config/minisora; a loader
for the scripts in benchmarks/."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True, scope="session")
def _provenance_keys(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MINISORA_PROVENANCE_DIR", str(tmp_path_factory.mktemp("provenance-keys")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark("prompt_menu") -> the module of benchmarks/prompt_menu.py (benchmarks/ is not a package).

    Loading runs the module level only: main() waits under `if __name__ == "__main__"`. The scripts put
    benchmarks/ on sys.path themselves, for their neighbour common.py.
    """
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
