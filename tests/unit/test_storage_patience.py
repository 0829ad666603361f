"""Waiting out storage outages: which errors are retried, with what backoff, for how long."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from fmbench_k8s.storage import LocalStorage, Patient, is_transient, patience_from_env, patient, retrying


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://s3"),
        ConnectTimeoutError(endpoint_url="http://s3"),
        ReadTimeoutError(endpoint_url="http://s3"),
        _client_error(503, "SlowDown"),
        _client_error(500, "InternalError"),
        _client_error(400, "RequestTimeout"),
    ],
)
def test_outages_throttling_and_server_errors_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc", [_client_error(403, "AccessDenied"), _client_error(404, "NoSuchBucket"), OSError(28, "No space")]
)
def test_what_waiting_cannot_cure_is_not(exc: Exception) -> None:
    assert not is_transient(exc)


class Flaky:
    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_backoff_doubles_to_a_cap_and_the_call_succeeds_when_storage_returns() -> None:
    slept: list[float] = []
    call = Flaky(7, EndpointConnectionError(endpoint_url="http://s3"))
    assert retrying(call, "writing x", patience_s=3600, sleep=slept.append) == "ok"
    assert slept == [1, 2, 4, 8, 16, 30, 30] and call.calls == 8


def test_a_permanent_error_fails_at_once() -> None:
    call = Flaky(1, _client_error(403, "AccessDenied"))
    with pytest.raises(ClientError, match="AccessDenied"):
        retrying(call, "writing x", patience_s=3600, sleep=lambda s: None)
    assert call.calls == 1


def test_patience_runs_out() -> None:
    call = Flaky(100, EndpointConnectionError(endpoint_url="http://s3"))
    with pytest.raises(EndpointConnectionError):
        retrying(call, "writing x", patience_s=0.5, sleep=lambda s: None)
    assert call.calls == 1  # the first backoff (1 s) already exceeds the patience


def test_local_storage_is_not_wrapped_and_s3_is(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path)
    assert patient(local) is local
    from fmbench_k8s.storage import S3Storage

    wrapped = patient(S3Storage("b", "p"), 60)
    assert isinstance(wrapped, Patient) and wrapped.patience_s == 60
    assert wrapped.child("run").uri("x") == "s3://b/p/run/x"


def test_patience_from_the_environment() -> None:
    assert patience_from_env({}) == 900
    assert patience_from_env({"FMBENCH_STORAGE_PATIENCE_SECONDS": "60"}) == 60
    with pytest.raises(ValueError, match="FMBENCH_STORAGE_PATIENCE_SECONDS: 'soon'"):
        patience_from_env({"FMBENCH_STORAGE_PATIENCE_SECONDS": "soon"})
