"""The accelerator probe against the real QEMU of this host."""

import pytest

from p2v import accel
from tests.conftest import require_programs


def test_tcg_probe_guest_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require_programs("qemu-system-x86_64")
    result = accel.run_probe(accel.TCG, accel.TCG_DEADLINE_S, tmp_path)
    assert result.ok, result.detail


def test_detect_answers_within_seconds_and_remembers(monkeypatch: pytest.MonkeyPatch) -> None:
    require_programs("qemu-system-x86_64")
    monkeypatch.delenv("P2V_ACCEL", raising=False)
    first = accel.detect(refresh=True)
    assert first.accel in (accel.KVM, accel.TCG)
    assert first.reason
    # The probe never waits on a hanging KVM guest past its deadline.
    if first.kvm is not None:
        assert first.kvm.seconds <= accel.KVM_DEADLINE_S + 0.5

    def no_second_probe() -> accel.AccelDecision:
        raise AssertionError("the probe ran again instead of using the record")

    monkeypatch.setattr(accel, "probe", no_second_probe)
    assert accel.detect() == first


def test_p2v_accel_overrides_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2V_ACCEL", "tcg")
    decision = accel.detect()
    assert decision.accel == accel.TCG
    assert "P2V_ACCEL" in decision.reason
