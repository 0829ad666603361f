"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.fixtures import cluster, namespace, real_node
from tests.s3 import CREDENTIALS, UNSET, MotoS3, moto_s3

__all__ = ["cluster", "namespace", "real_node", "s3_endpoint", "s3_server"]

# `make test` runs two pytest-xdist workers (--dist loadgroup). A session fixture is made once per
# worker, so the tests that share one, the control plane with its real node or the reference
# engine, go to one worker as a group; the other tests spread over both workers as they free up.
_GROUPS = {"cluster": ("cluster", "real_node", "namespace"), "engine": ("vllm",)}
_GROUP_DIRS = {"cluster": "cluster", "chart": "cluster", "engines": "engine"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        group = _GROUP_DIRS.get(tier)
        if group is None:
            fixtures = set(getattr(item, "fixturenames", ()))
            group = next((g for g, names in _GROUPS.items() if fixtures & set(names)), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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
