"""`p2v doctor`: is this host ready? One check per component, each with the fix."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from p2v import accel, appliance, qemu
from p2v.errors import P2VError
from p2v.host import virt
from p2v.paths import state_dir

MIN_FREE_BYTES = 2 << 30


@dataclass(frozen=True)
class Check:
    component: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_qemu() -> Check:
    try:
        major, minor, micro = qemu.version()
        for program in ("qemu-img", "qemu-nbd"):
            qemu.find_program(program)
    except P2VError as error:
        return Check("qemu", False, str(error), "run `make setup`")
    text = f"{major}.{minor}.{micro}"
    if (major, minor) < qemu.MINIMUM_VERSION:
        return Check(
            "qemu",
            False,
            f"QEMU {text} is too old (live migration under TCG corrupts memory)",
            "install qemu-system-x86 and qemu-utils from bookworm-backports (`make setup`)",
        )
    return Check("qemu", True, f"QEMU {text} with qemu-img and qemu-nbd")


def check_accelerator(decision: accel.AccelDecision) -> Check:
    tcg_ok = decision.tcg is None or decision.tcg.ok
    detail = f"{decision.accel}: {decision.reason}"
    if not tcg_ok:
        return Check("accelerator", False, detail, "QEMU cannot run a guest at all; reinstall it")
    return Check("accelerator", True, detail)


def check_libguestfs(decision: accel.AccelDecision) -> Check:
    try:
        handle = appliance.new_handle(decision)
    except P2VError as error:
        return Check("libguestfs", False, str(error), "run `make setup`")
    start = time.monotonic()
    try:
        handle.add_drive_scratch(1 << 20)
        handle.launch()
        version = handle.version()
        handle.shutdown()
    except RuntimeError as error:
        return Check(
            "libguestfs",
            False,
            f"the appliance does not launch: {error}",
            "run `libguestfs-test-tool` to see why; it needs a kernel in /boot "
            "(linux-image-amd64) readable by this user",
        )
    finally:
        handle.close()
    seconds = time.monotonic() - start
    settings = ",".join(decision.guestfs_backend_settings) or "kvm"
    return Check(
        "libguestfs",
        True,
        f"{version['major']}.{version['minor']}.{version['release']}: appliance launched in "
        f"{seconds:.1f} s (backend direct, {settings})",
    )


# What the toolkit asks of libvirt, and the version that first does it.
LIBVIRT_FEATURES = [
    ("volume uploads and downloads with holes", (3, 4, 0)),
    ("incremental backups through checkpoints", (7, 2, 0)),
    ("reverting external snapshots with memory", (9, 9, 0)),
]


def check_libvirt(uri: str, decision: accel.AccelDecision) -> Check:
    try:
        conn = virt.connect(uri)
    except P2VError as error:
        fix = (
            "run `make setup` (libvirt-daemon-system, libvirt-daemon-driver-qemu)"
            if uri in virt.LOCAL_URIS
            else "check the URI, and that libvirtd runs there and lets this user in"
        )
        return Check("libvirt", False, str(error), fix)
    try:
        types = virt.domain_types(conn)
        version = virt.version_string(conn)
        running = virt.version(conn)
        lacking = [what for what, needs in LIBVIRT_FEATURES if running < needs]
    finally:
        conn.close()
    if lacking:
        return Check(
            "libvirt",
            False,
            f"{uri} runs libvirt {version}, which cannot: {'; '.join(lacking)}",
            "install libvirt 11 from bookworm-backports (`make setup`)",
        )
    wanted = decision.libvirt_domain_type
    if wanted not in types:
        return Check(
            "libvirt",
            False,
            f"{uri} (libvirt {version}) offers domain types {sorted(types)}, not {wanted!r}",
            "install libvirt-daemon-driver-qemu",
        )
    allows = ", ".join(what for what, _ in LIBVIRT_FEATURES)
    return Check(
        "libvirt", True, f"{uri} answers (libvirt {version}); domain type {wanted}; {allows}"
    )


def check_libnbd() -> Check:
    try:
        import nbd
    except ImportError:
        return Check(
            "libnbd", False, "the libnbd Python binding is missing", "install python3-libnbd"
        )
    return Check("libnbd", True, f"libnbd {nbd.NBD().get_version()}")


def check_nbdkit() -> Check:
    path = shutil.which("nbdkit")
    if path is None:
        return Check("nbdkit", False, "nbdkit is missing", "install nbdkit")
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    return Check("nbdkit", True, out)


def check_state_dir() -> Check:
    path = state_dir()
    free = shutil.disk_usage(path).free
    detail = f"{path}: {free / (1 << 30):.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return Check(
            "state directory", False, detail, "free space there, or point P2V_HOME somewhere larger"
        )
    return Check("state directory", True, detail)


def run_checks(uri: str, with_appliance: bool = True) -> list[Check]:
    checks = [check_qemu()]
    if not checks[0].ok:
        return checks
    decision = accel.detect()
    steps: list[Callable[[], Check]] = [
        lambda: check_accelerator(decision),
        lambda: check_libvirt(uri, decision),
        check_libnbd,
        check_nbdkit,
        check_state_dir,
    ]
    if with_appliance:
        steps.insert(1, lambda: check_libguestfs(decision))
    # The appliance launch dominates (tens of seconds under TCG): run the checks side
    # by side, report them in order.
    with ThreadPoolExecutor(max_workers=len(steps)) as pool:
        checks.extend(pool.map(lambda step: step(), steps))
    return checks
