"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.fixtures import cluster, namespace, real_node
from tests.s3 import CREDENTIALS, UNSET, MotoS3, moto_s3

__all__ = ["cluster", "namespace", "real_node", "s3_endpoint", "s3_server"]

# `make test` runs two pytest-xdist workers. A session fixture is made once per worker, so the
# tiers that share one (the control plane with its real node: tests/cluster and tests/chart; the
# reference engine: tests/engines) each run on one worker, and the other tests' modules spread
# over both as the workers free up. (pytest 9.2 keeps xdist's own xdist_group from working: it
# renames the node id attribute that the group suffix is written to.)
_SHARED = {"tests/cluster/": "cluster", "tests/chart/": "cluster", "tests/engines/": "engine"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class BySharedFixture(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            shared = next((g for prefix, g in _SHARED.items() if nodeid.startswith(prefix)), None)
            return shared or nodeid.split("::", 1)[0]

    return BySharedFixture(config, log)


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    """A moto S3 server with a bucket ``results``; AWS credentials point at it for this test."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    with moto_s3("results") as server:
        yield server


@pytest.fixture
def s3_endpoint(s3_server: MotoS3) -> str:
    """The URL of ``s3_server``."""
    return s3_server.endpoint
