"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.fixtures import cluster, namespace, real_node
from tests.s3 import CREDENTIALS, UNSET, MotoS3, moto_s3

__all__ = ["cluster", "namespace", "real_node", "s3_endpoint", "s3_server"]


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
