"""Where runs are written: a local directory or an S3 prefix, behind one small interface.

Layout (docs/architecture.md): ``<root>/<namespace>/<benchmark>/<runId>/...``; callers pass keys
relative to the run directory.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

log = logging.getLogger("fmbench.storage")
T = TypeVar("T")
# How long a run waits out an S3 outage before giving up (FMBENCH_STORAGE_PATIENCE_SECONDS).
DEFAULT_PATIENCE_S = 900.0
MAX_BACKOFF_S = 30.0


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

            # botocore rides out throttling and blips within a few seconds; longer outages are
            # waited out by Patient (below), whose caller decides whether it may block that long.
            config = Config(
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=32,
            )
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
    path = Path(uri)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{uri} is a file; give a directory (it is created if missing) or s3://BUCKET/PREFIX")
    return LocalStorage(path)


def storage_problem(exc: BaseException) -> str | None:
    """One line for an S3 error that a user fixes (credentials, bucket, access, endpoint), or None
    when ``exc`` is not a storage error."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return (
            "S3: no AWS credentials found; set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(a cluster's pods get them from IRSA or Pod Identity), or write to a local directory"
        )
    if isinstance(exc, EndpointConnectionError):
        where = exc.kwargs.get("endpoint_url", "the endpoint")
        return f"S3: cannot reach {where}; check the network or AWS_ENDPOINT_URL_S3"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"S3: {error.get('Code', 'error')}: {error.get('Message', str(exc))} ({exc.operation_name})"
    if isinstance(exc, BotoCoreError):
        return f"S3: {exc}"
    return None


def is_transient(exc: BaseException) -> bool:
    """An error that waiting may cure: S3 unreachable, timing out, throttling or failing (5xx).

    Access denied, a missing bucket or key, or a local disk error are not: they fail at once."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "Throttling")
    return False


def retrying(call: Callable[[], T], what: str, patience_s: float, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried with exponential backoff (1 s doubling to 30 s) on transient errors
    until ``patience_s`` has passed; then (or on any other error) its error is raised."""
    deadline = time.monotonic() + patience_s
    delay = 1.0
    while True:
        try:
            return call()
        except Exception as exc:
            left = deadline - time.monotonic()
            if not is_transient(exc) or left < delay:
                raise
            log.warning("%s: %s; retrying in %.0f s (giving up in %.0f s)", what, exc, delay, left)
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


def patience_from_env(env: dict[str, str] | None = None) -> float:
    value = (os.environ if env is None else env).get("FMBENCH_STORAGE_PATIENCE_SECONDS", "")
    try:
        return float(value) if value else DEFAULT_PATIENCE_S
    except ValueError:
        raise ValueError(f"FMBENCH_STORAGE_PATIENCE_SECONDS: {value!r} is not a number of seconds") from None


@dataclass(frozen=True)
class Patient:
    """A storage whose every call waits out transient outages (see ``retrying``) for up to
    ``patience_s``: for work that must not be lost and may block, like a run's final records,
    its stages files and the report."""

    inner: Storage
    patience_s: float

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return retrying(call, what, self.patience_s)

    def write_bytes(self, key: str, data: bytes) -> str:
        return self._call(f"writing {self.inner.uri(key)}", lambda: self.inner.write_bytes(key, data))

    def read_bytes(self, key: str) -> bytes:
        return self._call(f"reading {self.inner.uri(key)}", lambda: self.inner.read_bytes(key))

    def list_keys(self, prefix: str = "") -> list[str]:
        return self._call(f"listing {self.inner.uri(prefix)}", lambda: self.inner.list_keys(prefix))

    def uri(self, key: str = "") -> str:
        return self.inner.uri(key)

    def child(self, key: str) -> Patient:
        return Patient(self.inner.child(key), self.patience_s)


def patient(storage: Storage, patience_s: float | None = None) -> Storage:
    """``storage`` made Patient; a local directory as it is (waiting cures no local error)."""
    if isinstance(storage, LocalStorage | Patient):
        return storage
    return Patient(storage, patience_from_env() if patience_s is None else patience_s)
