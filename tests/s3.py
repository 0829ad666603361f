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


@contextlib.contextmanager
def moto_s3(*buckets: str) -> Iterator[str]:
    """Start moto, create ``buckets``, yield the endpoint URL. Credentials must be set by the caller
    (see CREDENTIALS); subprocesses get them through the environment."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    deadline = time.monotonic() + 30
    while True:  # the server thread reports ready before its socket always answers
        try:
            client.list_buckets()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    try:
        yield endpoint
    finally:
        server.stop()


def credentials_env() -> dict[str, str]:
    """os.environ with the test credentials and no real AWS endpoint/profile settings."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, **CREDENTIALS}
