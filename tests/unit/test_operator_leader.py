"""Leader election's decision rule (the Lease round trips are in tests/cluster/test_operator.py)."""

from __future__ import annotations

from fmbench_k8s.operator.leader import ElectionConfig, LeaseRecord, decide

T0, T1 = "2026-12-01T00:00:00.000000Z", "2026-12-01T00:00:09.000000Z"


def test_a_missing_lease_is_taken() -> None:
    assert decide(None, 0.0, "a", T0, 15) == LeaseRecord("a", 15, T0, T0, 0)


def test_the_holder_renews_keeping_its_acquire_time() -> None:
    held = LeaseRecord("a", 15, T0, T0, 3)
    assert decide(held, 100.0, "a", T1, 15) == LeaseRecord("a", 15, T0, T1, 3)


def test_a_standby_waits_while_the_record_changed_within_its_duration() -> None:
    held = LeaseRecord("a", 15, T0, T0, 3)
    assert decide(held, 0.0, "b", T1, 15) is None
    assert decide(held, 14.9, "b", T1, 15) is None


def test_a_standby_takes_over_an_unrenewed_lease_counting_the_transition() -> None:
    held = LeaseRecord("a", 15, T0, T0, 3)
    assert decide(held, 15.0, "b", T1, 15) == LeaseRecord("b", 15, T1, T1, 4)


def test_expiry_is_judged_by_the_holders_duration_not_the_standbys() -> None:
    held = LeaseRecord("a", 60, T0, T0, 0)
    assert decide(held, 30.0, "b", T1, 15) is None


def test_a_released_lease_is_taken_at_once() -> None:
    released = LeaseRecord("", 1, T0, T0, 5)
    assert decide(released, 0.0, "b", T1, 15) == LeaseRecord("b", 15, T1, T1, 6)


def test_the_holder_stops_before_a_standby_may_start() -> None:
    cfg = ElectionConfig("ns")
    assert cfg.retry_period_s < cfg.renew_deadline_s < cfg.lease_duration_s
    assert (cfg.renew_deadline_s, cfg.retry_period_s) == (10, 2)  # client-go's defaults
