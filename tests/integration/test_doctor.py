"""`p2v doctor` against this host's real QEMU, libguestfs, libvirt and libnbd."""

import json
import subprocess
import sys

from tests.conftest import require_programs


def test_doctor_json_reports_every_component_and_the_accelerator() -> None:
    require_programs("qemu-system-x86_64", "qemu-img", "qemu-nbd", "nbdkit")
    done = subprocess.run(
        [sys.executable, "-m", "p2v.cli", "doctor", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    components = {check["component"]: check for check in report["checks"]}
    assert set(components) == {
        "qemu", "accelerator", "libguestfs", "libvirt", "libnbd", "nbdkit", "state directory",
    }  # fmt: skip
    failed = {name: check for name, check in components.items() if not check["ok"]}
    assert not failed, failed
    assert done.returncode == 0
    assert report["ok"] is True
    assert report["accelerator"]["accel"] in ("kvm", "tcg")
    assert report["accelerator"]["reason"]
    assert components["libguestfs"]["detail"].startswith("1.")
    # libvirt 11 (bookworm-backports): what the VM operations need of it.
    assert "libvirt 11." in components["libvirt"]["detail"]
    assert "reverting external snapshots with memory" in components["libvirt"]["detail"]


def test_doctor_fails_with_the_fix_when_the_libvirt_uri_does_not_answer() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "p2v.cli", "doctor", "--no-appliance",
         "--connect", "test+unix:///nonexistent/libvirt-sock"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    libvirt_line = next(line for line in lines if " libvirt " in line)
    assert libvirt_line.startswith("FAIL")
    assert "does not answer" in libvirt_line
    assert any(line.strip().startswith("fix:") for line in lines)
