"""Shared test set-up: provenance keys go to a temporary folder, never the user's ~/.config/minisora."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _provenance_keys(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MINISORA_PROVENANCE_DIR", str(tmp_path_factory.mktemp("provenance-keys")))
    yield
    mp.undo()
