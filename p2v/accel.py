"""Which accelerator QEMU, libguestfs and libvirt guests should use: KVM only if it works.

`/dev/kvm` existing proves little: on some hosts (nested virtualisation without
hardware support) it opens, and a guest in it crawls or hangs. So the probe boots a
tiny guest (SeaBIOS POST plus a boot sector that writes to QEMU's isa-debug-exit
port) under KVM with a deadline of a few seconds, and under TCG for comparison.
The answer is kept per boot of the host, so the cost is paid once.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from p2v import qemu
from p2v.paths import state_dir

SCHEMA_VERSION = 1
KVM = "kvm"
TCG = "tcg"

# A working KVM runs the probe in well under a second; TCG in about 0.2 s.
KVM_DEADLINE_S = 3.0
TCG_DEADLINE_S = 20.0

# isa-debug-exit turns a byte v written to its port into QEMU exit status (v << 1) | 1.
_EXIT_PORT = 0xF4
_EXIT_VALUE = 0x2A
_EXIT_STATUS = (_EXIT_VALUE << 1) | 1

# Boot sector: mov al, 0x2a; out 0xf4, al; hlt; jmp $-1  (then the 0x55AA signature).
_BOOT_CODE = bytes([0xB0, _EXIT_VALUE, 0xE6, _EXIT_PORT, 0xF4, 0xEB, 0xFD])


@dataclass(frozen=True)
class ProbeRun:
    """One run of the probe guest under one accelerator."""

    accel: str
    ok: bool
    seconds: float
    detail: str


@dataclass(frozen=True)
class AccelDecision:
    accel: str  # "kvm" or "tcg"
    reason: str
    kvm: ProbeRun | None
    tcg: ProbeRun | None
    boot_id: str = ""
    qemu_id: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def libvirt_domain_type(self) -> str:
        return "kvm" if self.accel == KVM else "qemu"

    @property
    def qemu_args(self) -> list[str]:
        return ["-accel", "kvm"] if self.accel == KVM else ["-accel", "tcg,thread=multi"]

    @property
    def guestfs_backend_settings(self) -> list[str]:
        return [] if self.accel == KVM else ["force_tcg"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AccelDecision:
        data = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError("accelerator record of another schema version")
        runs = {k: ProbeRun(**data[k]) if data.get(k) else None for k in (KVM, TCG)}
        return cls(**{**data, **runs})


def decide(kvm_usable: str | None, kvm: ProbeRun | None, tcg: ProbeRun | None) -> AccelDecision:
    """Pure decision from the probe results.

    kvm_usable is None when /dev/kvm can be opened, else why it cannot.
    """
    if kvm_usable is not None:
        return AccelDecision(TCG, f"{kvm_usable}; using TCG (software emulation)", kvm, tcg)
    assert kvm is not None
    if not kvm.ok:
        return AccelDecision(
            TCG, f"/dev/kvm opens but the probe guest {kvm.detail}; using TCG", kvm, tcg
        )
    if tcg is not None and tcg.ok and kvm.seconds > max(1.0, 2 * tcg.seconds):
        return AccelDecision(
            TCG,
            f"the probe guest took {kvm.seconds:.2f} s under KVM but {tcg.seconds:.2f} s "
            "under TCG: KVM is not really accelerated here; using TCG",
            kvm,
            tcg,
        )
    return AccelDecision(KVM, f"the probe guest ran under KVM in {kvm.seconds:.2f} s", kvm, tcg)


def _kvm_device_problem() -> str | None:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return "/dev/kvm does not exist"
    except OSError as error:
        return f"/dev/kvm cannot be opened ({error.strerror})"
    os.close(fd)
    return None


def _write_probe_disk(path: Path) -> None:
    sector = bytearray(512)
    sector[: len(_BOOT_CODE)] = _BOOT_CODE
    sector[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(sector))


def run_probe(accel: str, deadline: float, workdir: Path) -> ProbeRun:
    """Boot the probe guest under `accel`; ok when it reached the exit port in time."""
    disk = workdir / "probe.img"
    if not disk.exists():
        _write_probe_disk(disk)
    cmd = [
        qemu.find_program(qemu.SYSTEM_EMULATOR),
        "-machine", "pc", "-accel", accel, "-m", "32",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "none",
        "-drive", f"file={disk},format=raw,if=ide,snapshot=on",
        "-device", f"isa-debug-exit,iobase={_EXIT_PORT:#x},iosize=1",
    ]  # fmt: skip
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline)
    except subprocess.TimeoutExpired:
        return ProbeRun(accel, False, deadline, f"did not finish within {deadline:.0f} s")
    seconds = time.monotonic() - start
    if done.returncode == _EXIT_STATUS:
        return ProbeRun(accel, True, seconds, "ran")
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return ProbeRun(accel, False, seconds, f"failed (exit {done.returncode}: {last})")


def probe() -> AccelDecision:
    """Run the probe now (a few seconds at most)."""
    with tempfile.TemporaryDirectory(prefix="p2v-accel-") as tmp:
        workdir = Path(tmp)
        tcg = run_probe(TCG, TCG_DEADLINE_S, workdir)
        problem = _kvm_device_problem()
        kvm = None if problem else run_probe(KVM, KVM_DEADLINE_S, workdir)
    return decide(problem, kvm, tcg)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _qemu_id() -> str:
    path = qemu.find_program(qemu.SYSTEM_EMULATOR)
    st = os.stat(path)
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


def forced() -> AccelDecision | None:
    """The accelerator P2V_ACCEL names, if it names one."""
    forced = os.environ.get("P2V_ACCEL", "").strip().lower()
    if forced in (KVM, TCG):
        return AccelDecision(forced, f"forced by P2V_ACCEL={forced}", None, None)
    return None


def detect(refresh: bool = False) -> AccelDecision:
    """The accelerator to use: P2V_ACCEL if set, else the probe, remembered per host boot."""
    chosen = forced()
    if chosen is not None:
        return chosen
    cache = state_dir() / "accel.json"
    boot_id, qemu_id = _boot_id(), _qemu_id()
    if not refresh and cache.exists():
        try:
            cached = AccelDecision.from_json(cache.read_text())
        except (ValueError, TypeError, KeyError):
            cached = None
        if cached and cached.boot_id == boot_id and cached.qemu_id == qemu_id:
            return cached
    decision = probe()
    decision = replace(decision, boot_id=boot_id, qemu_id=qemu_id)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(decision.to_json())
    tmp.replace(cache)
    return decision
