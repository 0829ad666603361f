"""Failure diagnosis from pod and Job status (the shapes the API server returns)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fmbench_k8s.operator.observe import diagnose_pods, job_state

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _pod(status: dict[str, Any], name: str = "srv-1") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def _unschedulable(message: str, age_s: float) -> dict[str, Any]:
    since = (NOW - timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": since}  # fmt: skip
    return _pod({"phase": "Pending", "conditions": [cond]})


def _waiting(reason: str, message: str = "") -> dict[str, Any]:
    return _pod(
        {"containerStatuses": [{"name": "server", "state": {"waiting": {"reason": reason, "message": message}}}]}
    )


def test_unschedulable_for_accelerators_after_the_grace_period() -> None:
    pod = _unschedulable("0/5 nodes are available: 5 Insufficient nvidia.com/gpu.", age_s=61)
    reason, message = diagnose_pods([pod], NOW, unschedulable_grace_s=60) or ("", "")
    assert reason == "InsufficientAccelerators" and "Insufficient nvidia.com/gpu" in message and "srv-1" in message
    neuron = _unschedulable("0/5 nodes are available: 5 Insufficient aws.amazon.com/neuron.", age_s=61)
    assert (diagnose_pods([neuron], NOW, 60) or ("",))[0] == "InsufficientAccelerators"
    cpu = _unschedulable("0/5 nodes are available: 5 Insufficient cpu.", age_s=61)
    assert (diagnose_pods([cpu], NOW, 60) or ("",))[0] == "Unschedulable"


def test_a_pending_pod_gets_time_for_a_node_to_be_added() -> None:
    pod = _unschedulable("0/5 nodes are available: 5 Insufficient nvidia.com/gpu.", age_s=10)
    assert diagnose_pods([pod], NOW, unschedulable_grace_s=60) is None


def test_image_and_crash_problems_fail_at_once() -> None:
    for reason in ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError"):
        got = diagnose_pods([_waiting(reason, "details")], NOW, 60)
        assert got is not None and got[0] == reason and "details" in got[1]


def test_oom_killed_names_the_fix() -> None:
    pod = _pod({"containerStatuses": [{"name": "server", "state": {"running": {}},
                                       "lastState": {"terminated": {"reason": "OOMKilled"}}}]})  # fmt: skip
    got = diagnose_pods([pod], NOW, 60)
    assert got is not None and got[0] == "OOMKilled" and "larger instance" in got[1]


def test_healthy_pods_have_no_problem() -> None:
    pod = _pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "server", "state": {"running": {}}}]})  # fmt: skip
    assert diagnose_pods([pod], NOW, 60) is None


def test_job_states_and_the_termination_message() -> None:
    assert job_state(None, []) is None
    assert job_state({"status": {"active": 1}}, []).active  # type: ignore[union-attr]
    done_pod = _pod({"containerStatuses": [{"state": {"terminated": {"message": '{"runId": "r"}'}}}]})
    done = job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, [done_pod])
    assert done is not None and done.succeeded and done.message == '{"runId": "r"}'
    failed = job_state(
        {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit"}]}},
        [_pod({"containerStatuses": [{"state": {"terminated": {"message": "endpoint unreachable"}}}]})],
    )  # fmt: skip
    assert failed is not None and failed.failed
    assert failed.message == "BackoffLimitExceeded; Job has reached the specified backoff limit; endpoint unreachable"


def test_a_replica_failure_is_the_deployments_problem() -> None:
    from fmbench_k8s.operator.observe import diagnose_deployment

    dep = {
        "metadata": {"name": "b-v-server"},
        "status": {
            "conditions": [
                {"type": "Available", "status": "False"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": 'pods "b-v-server-1" is forbidden: exceeded quota: no-gpus'},
            ]
        },
    }  # fmt: skip
    assert diagnose_deployment(dep) == (
        "FailedCreate",
        'deployment b-v-server: pods "b-v-server-1" is forbidden: exceeded quota: no-gpus',
    )
    assert diagnose_deployment({"status": {"conditions": [{"type": "ReplicaFailure", "status": "False"}]}}) is None
    assert diagnose_deployment(None) is None


def test_a_job_whose_pods_are_refused_has_failed_with_the_refusal() -> None:
    job = {"metadata": {"name": "b-v-lg-master"}, "status": {}}
    refusal = 'pods "b-v-lg-master-x" is forbidden: exceeded quota: small, requested: requests.cpu=500m'
    state = job_state(job, [], refusal)
    assert state is not None and state.failed and state.refused
    assert state.message == f"FailedCreate: {refusal}"
    running = job_state(job, [{"status": {"phase": "Running"}}], refusal)  # a pod exists: the old event is moot
    assert running is not None and running.active and not running.refused
