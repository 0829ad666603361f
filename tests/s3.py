"""A real S3 API over HTTP for tests: moto in server mode on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import boto3
from moto.server import ThreadedMotoServer

from fmbench_k8s.local.processes import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class MotoS3:
    """moto's S3 on a fixed loopback port that a test can take down and bring back: the objects
    live in moto's in-process backend, so they survive the outage as they would in S3."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host  # the real node's pods reach the host end of its link, not loopback
        self.port = free_port()
        self.endpoint = f"http://{host}:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def up(self) -> None:
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:  # the server thread reports ready before its socket always answers
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def down(self) -> None:
        """Stop answering: connections are refused until ``up()``."""
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextlib.contextmanager
def moto_s3(*buckets: str, host: str = "127.0.0.1") -> Iterator[MotoS3]:
    """Start moto, create ``buckets``, yield the server (``.endpoint`` is its URL). Credentials must
    be set by the caller (see CREDENTIALS); subprocesses get them through the environment."""
    server = MotoS3(host)
    server.up()
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    try:
        yield server
    finally:
        server.down()


def credentials_env() -> dict[str, str]:
    """os.environ with the test credentials and no real AWS endpoint/profile settings."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, **CREDENTIALS}
