"""Where runs are written: a local directory or an S3 prefix, behind one small interface.

Layout (docs/architecture.md): ``<root>/<namespace>/<benchmark>/<runId>/...``; callers pass keys
relative to the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


class Storage(Protocol):
    def write_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` at ``key``; returns the object's URI."""

    def read_bytes(self, key: str) -> bytes: ...

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, relative to this storage's root, sorted."""

    def uri(self, key: str = "") -> str: ...

    def child(self, key: str) -> Storage:
        """The same storage rooted at ``key``."""


@dataclass(frozen=True)
class LocalStorage:
    root: Path

    def write_bytes(self, key: str, data: bytes) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file
        return str(path)

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
        )

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def child(self, key: str) -> LocalStorage:
        return LocalStorage(self.root / key)


@dataclass(frozen=True)
class S3Storage:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    _client: Any = field(default=None, compare=False, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Adaptive retries ride out throttling and short outages without losing an upload.
            config = Config(retries={"max_attempts": 10, "mode": "adaptive"}, max_pool_connections=32)
            client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
            object.__setattr__(self, "_client", client)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix.rstrip('/')}/{key}".lstrip("/") if self.prefix else key

    def write_bytes(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.uri(key)

    def read_bytes(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return body

    def list_keys(self, prefix: str = "") -> list[str]:
        root = self._key("")
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][len(root) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def child(self, key: str) -> S3Storage:
        return S3Storage(self.bucket, self._key(key), self.endpoint_url, self.region, self._client)


def open_storage(uri: str, endpoint_url: str | None = None, region: str | None = None) -> Storage:
    """``s3://bucket/prefix`` or a local path. ``endpoint_url`` defaults to $AWS_ENDPOINT_URL_S3."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ValueError(f"invalid S3 URI {uri!r}: use s3://BUCKET/PREFIX")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return S3Storage(parsed.netloc, parsed.path.lstrip("/"), endpoint, region)
    if "://" in uri:
        raise ValueError(f"unsupported output {uri!r}: use a local directory or s3://BUCKET/PREFIX")
    return LocalStorage(Path(uri))
