"""Which refusals of the API server the operator retries: an RBAC denial for a grace period (the
authorizer's cache after a restart, a Role applied after the operator), an admission's at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fmbench_k8s.operator.actions import Denials, RejectedError

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
# The API server's answers, verbatim in shape (the user and namespace are the test cluster's).
RBAC = (
    'deployments.apps is forbidden: User "system:serviceaccount:t-1:fmbench-operator" cannot create resource '
    '"deployments" in API group "apps" in the namespace "t-1": RBAC: [clusterrole.rbac.authorization.k8s.io '
    '"fmbench-operator-t-1" not found]'
)
QUOTA = 'deployments.apps "b-g5-server" is forbidden: exceeded quota: none, requested: count/deployments.apps=1'
POD_SECURITY = 'pods "x" is forbidden: violates PodSecurity "restricted:latest": privileged'
INVALID = 'Deployment.apps "x" is invalid: spec.template.spec.containers[0].image: Required value'


@pytest.mark.parametrize(("message", "denied"), [(RBAC, True), (QUOTA, False), (POD_SECURITY, False), (INVALID, False)])
def test_only_an_rbac_denial_is_one_that_may_pass(message: str, denied: bool) -> None:
    err = RejectedError("Deployment", "b-g5-server", message)
    assert err.denied is denied
    assert str(err) == f"the API server refused Deployment b-g5-server: {message}"


def test_denials_last_from_the_first_until_creates_go_through() -> None:
    denials = Denials(timedelta(seconds=60))
    assert denials.note("a", NOW) == timedelta(0)
    assert denials.note("b", NOW + timedelta(seconds=30)) == timedelta(0), "each Benchmark has its own"
    assert denials.note("a", NOW + timedelta(seconds=59)) < denials.grace
    assert denials.note("a", NOW + timedelta(seconds=60)) == denials.grace  # from here the run fails
    denials.clear("a")
    assert denials.note("a", NOW + timedelta(seconds=90)) == timedelta(0), "a new denial, a new grace"
    assert denials.note("b", NOW + timedelta(seconds=90)) == timedelta(seconds=60)
