"""Everything under tests/cluster is a cluster test (the ``cluster`` fixture lives in
tests/cluster/fixtures.py and is shared by every directory through tests/conftest.py, so one
control plane serves the whole session)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)
