from p2v.accel import KVM, TCG, AccelDecision, ProbeRun, decide


def run(accel: str, ok: bool, seconds: float, detail: str = "ran") -> ProbeRun:
    return ProbeRun(accel, ok, seconds, detail)


def test_no_kvm_device_means_tcg_and_says_why() -> None:
    d = decide("/dev/kvm does not exist", None, run(TCG, True, 0.2))
    assert d.accel == TCG
    assert "/dev/kvm does not exist" in d.reason
    assert d.libvirt_domain_type == "qemu"
    assert d.guestfs_backend_settings == ["force_tcg"]


def test_kvm_probe_timing_out_means_tcg() -> None:
    d = decide(None, run(KVM, False, 3.0, "did not finish within 3 s"), run(TCG, True, 0.2))
    assert d.accel == TCG
    assert "did not finish within 3 s" in d.reason


def test_kvm_much_slower_than_tcg_is_not_trusted() -> None:
    # /dev/kvm that works but crawls (nested virtualisation without hardware help).
    d = decide(None, run(KVM, True, 2.5), run(TCG, True, 0.2))
    assert d.accel == TCG
    assert "not really accelerated" in d.reason


def test_working_kvm_is_used() -> None:
    d = decide(None, run(KVM, True, 0.1), run(TCG, True, 0.2))
    assert d.accel == KVM
    assert d.qemu_args == ["-accel", "kvm"]
    assert d.libvirt_domain_type == "kvm"
    assert d.guestfs_backend_settings == []


def test_decision_round_trips_through_json() -> None:
    d = decide(None, run(KVM, False, 3.0, "did not finish"), run(TCG, True, 0.2))
    assert AccelDecision.from_json(d.to_json()) == d
