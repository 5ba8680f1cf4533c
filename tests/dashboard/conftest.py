from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.fixture_store import build_fixture


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small fixture store of ``fixture_store`` (read-only for the tests)."""
    return build_fixture(tmp_path_factory.mktemp("store"))
