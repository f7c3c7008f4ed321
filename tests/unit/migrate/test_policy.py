"""The convergence policy on made-up passes: what it expects, when it escalates,
in which order, and that it never aborts or steers once post-copy has begun."""

from __future__ import annotations

from p2v.migrate.policy import Limits, Policy, Sample, predict

MiB = 1 << 20
LINK = 600 * MiB  # bytes/s


def passes(policy: Policy, remaining: list[int], bandwidth: int = LINK) -> list[str]:
    """Feed one sample per pass (the first being the bulk pass); the actions taken."""
    taken = []
    for number, left in enumerate(remaining, 1):
        for action in policy.observe(Sample(number * 0.2, number, left, bandwidth)):
            taken.append(f"{action.kind}{'' if action.value is None else ' ' + str(action.value)}")
    return taken


def test_a_guest_whose_passes_shrink_is_left_alone() -> None:
    policy = Policy(Limits())
    assert passes(policy, [400 * MiB, 60 * MiB, 20 * MiB, 5 * MiB]) == []
    assert policy.downtime_ms == 50 and policy.escalations == []


def test_stalled_passes_climb_the_ladder_in_order_then_post_copy() -> None:
    policy = Policy(Limits(max_downtime_ms=300))
    # 50 MiB left each pass: 83 ms at the link's rate. The downtime rises to what a
    # post-copy switch costs the guest, no further: post-copy takes over.
    taken = passes(policy, [400 * MiB] + [50 * MiB] * 7)
    assert taken == ["downtime 100", "postcopy"]
    assert [e["what"] for e in policy.escalations] == ["downtime", "post-copy"]
    assert policy.postcopy


def test_without_post_copy_stalled_passes_raise_the_downtime_to_the_maximum() -> None:
    policy = Policy(Limits(max_downtime_ms=300, postcopy=False))
    taken = passes(policy, [400 * MiB] + [100 * MiB] * 7)
    assert taken == ["downtime 100", "downtime 200", "downtime 300"]


def test_a_dirty_set_no_downtime_could_cover_goes_to_post_copy_without_longer_pauses() -> None:
    policy = Policy(Limits(max_downtime_ms=300))
    taken = passes(policy, [400 * MiB] + [300 * MiB] * 5)  # 500 ms at the link's rate
    assert taken == ["postcopy"]
    assert policy.downtime_ms == 50
    assert policy.escalations[0]["what"] == "downtime not raised"


def test_without_post_copy_the_downtime_still_rises_to_the_maximum_and_stays() -> None:
    policy = Policy(Limits(max_downtime_ms=300, postcopy=False))
    taken = passes(policy, [400 * MiB] + [300 * MiB] * 8)
    assert taken == ["downtime 100", "downtime 200", "downtime 300"]


def test_auto_converge_is_recorded_when_qemu_starts_throttling() -> None:
    policy = Policy(Limits())
    policy.observe(Sample(0.1, 1, 400 * MiB, LINK))
    policy.observe(Sample(0.5, 2, 100 * MiB, LINK, throttle=20))
    policy.observe(Sample(0.7, 3, 90 * MiB, LINK, throttle=30))
    throttled = [e for e in policy.escalations if e["what"] == "auto-converge"]
    assert throttled == [{"at": 0.5, "what": "auto-converge", "value": 20}]
    assert policy.throttle == 30


def test_no_escalation_means_the_maximum_downtime_from_the_start_and_nothing_more() -> None:
    policy = Policy(Limits(max_downtime_ms=300, escalate=False))
    assert policy.downtime_ms == 300
    assert passes(policy, [400 * MiB] + [300 * MiB] * 8) == []


def test_timeout_aborts_pre_copy_but_never_post_copy() -> None:
    policy = Policy(Limits(timeout_s=5))
    assert policy.observe(Sample(4.0, 1, 400 * MiB, LINK)) == []
    [abort] = policy.observe(Sample(5.1, 1, 300 * MiB, LINK))
    assert abort.kind == "abort" and "--timeout 5" in abort.reason
    assert policy.observe(Sample(5.2, 2, 300 * MiB, LINK)) == []  # asked once
    late = Policy(Limits(timeout_s=5), postcopy=True)
    assert late.observe(Sample(9.0, 9, 100 * MiB, LINK)) == []


def test_prediction_of_a_quiet_guest_converges_quickly() -> None:
    guess = predict(256 * MiB, 0, 2_000_000, LINK, Limits())
    assert guess.converges and guess.seconds < 1 and guess.downtime_ms <= 50
    assert guess.bandwidth_measured


def test_prediction_of_a_guest_outrunning_the_link_says_what_will_be_done() -> None:
    guess = predict(384 * MiB, 0, 900 * MiB, LINK, Limits())
    assert not guess.converges
    assert "post-copy" in guess.plan and "(100 ms)" in guess.plan
    off = predict(384 * MiB, 0, 900 * MiB, LINK, Limits(postcopy=False, auto_converge=False))
    assert "post-copy is off" in off.plan and "--timeout" in off.plan


def test_prediction_without_a_measured_link_assumes_one_gigabit() -> None:
    guess = predict(256 * MiB, 0, 0, None, Limits())
    assert not guess.bandwidth_measured and guess.bandwidth == 125_000_000
    assert 2 < guess.seconds < 2.3  # 256 MiB at 125 MB/s
