"""A stand-in physical server: a QEMU machine whose hardware the test sets, booted
from the agent ISO, with the agent's port forwarded to 127.0.0.1.

Every value the inventory should report is chosen here, so a test compares the
agent's answer with the truth rather than with another probe of the same machine.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from p2v import accel, firmware, qemu

READY = "p2v agent"
READY_LINE = "is ready"
MiB = 1 << 20


@dataclass(frozen=True)
class Drive:
    image: Path
    bus: str  # "sata" or "nvme"
    serial: str


@dataclass(frozen=True)
class Hardware:
    sockets: int = 2
    memory_mib: int = 1536
    vendor: str = "P2V Test Systems"
    product: str = "Stand-in Server 1"
    serial: str = "P2V-SN-20261126"
    uuid: str = "6d1f3a4e-9b2c-4d5e-8f70-112233445566"
    macs: tuple[str, ...] = ("52:54:00:50:32:01", "52:54:00:50:32:02")
    drives: tuple[Drive, ...] = field(default_factory=tuple)


@dataclass
class Running:
    port: int
    console_log: Path

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_command(
    hw: Hardware, iso: Path, boot: str, workdir: Path, port: int, kernel_args: str = ""
) -> list[str]:
    """`boot`: "bios-cd" (the ISO as a CD), "uefi-usb" (written to a USB stick, as a
    sysadmin would) or "uefi-secure-cd" (OVMF enforcing Secure Boot)."""
    machine = "q35,smm=on" if boot == "uefi-secure-cd" else "q35"
    cmd = [
        qemu.find_program(qemu.SYSTEM_EMULATOR), *accel.detect().qemu_args,
        "-machine", machine, "-m", str(hw.memory_mib),
        "-smp", f"{hw.sockets},sockets={hw.sockets},cores=1,threads=1",
        "-smbios", f"type=1,manufacturer={hw.vendor},product={hw.product},"
                   f"serial={hw.serial},uuid={hw.uuid}",
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-serial", f"file:{workdir / 'console.log'}",
    ]  # fmt: skip
    if (workdir / "secret").exists():
        cmd += ["-fw_cfg", f"name=opt/p2v/secret,file={workdir / 'secret'}"]
    for i, mac in enumerate(hw.macs):
        # Each NIC on its own network, as on a server; the first carries the agent's port.
        forward = f",hostfwd=tcp:127.0.0.1:{port}-:8443" if i == 0 else ""
        cmd += [
            "-netdev", f"user,id=net{i},net=10.0.{2 + i}.0/24,restrict=on{forward}",
            "-device", f"e1000,netdev=net{i},mac={mac}",
        ]  # fmt: skip
    sata = 0
    for i, drive in enumerate(hw.drives):
        fmt = "qcow2" if drive.image.suffix == ".qcow2" else "raw"
        # snapshot=on: whatever happened, the image on the host is never written.
        cmd += ["-drive", f"file={drive.image},format={fmt},if=none,id=d{i},snapshot=on"]
        if drive.bus == "sata":
            cmd += ["-device", f"ide-hd,drive=d{i},bus=ide.{sata},serial={drive.serial}"]
            sata += 1
        else:
            cmd += ["-device", f"nvme,drive=d{i},serial={drive.serial}"]
    medium = f"file={iso},format=raw,if=none,id=medium,readonly=on"
    if boot == "uefi-usb":
        cmd += [
            "-drive", medium, "-device", "qemu-xhci,id=xhci",
            "-device", "usb-storage,bus=xhci.0,drive=medium,bootindex=0",
        ]  # fmt: skip
    else:
        cmd += ["-drive", medium + ",media=cdrom",
                "-device", f"ide-cd,drive=medium,bus=ide.{sata},bootindex=0"]  # fmt: skip
    if boot.startswith("uefi"):
        code, template = (
            firmware.ovmf_secure_boot() if boot == "uefi-secure-cd" else firmware.ovmf()
        )
        shutil.copy(template, workdir / "vars.fd")
        cmd += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={workdir / 'vars.fd'}",
        ]  # fmt: skip
        if boot == "uefi-secure-cd":
            cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return cmd


@contextlib.contextmanager
def booted(
    hw: Hardware, iso: Path, boot: str, workdir: Path, secret: str | None, timeout: float = 300
) -> Iterator[Running]:
    """The stand-in, booted until its agent says it is ready (or the test fails)."""
    if secret is not None:
        (workdir / "secret").write_text(secret + "\n")
    port = free_port()
    log = workdir / "console.log"
    log.touch()
    cmd = qemu_command(hw, iso, boot, workdir, port)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        start = time.monotonic()
        while READY_LINE not in (text := log.read_text(errors="replace")):
            if "cannot start:" in text:
                raise AssertionError(f"the agent could not start:\n{_tail(log)}")
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"QEMU exited {proc.returncode}: {out}\n{_tail(log)}")
            if time.monotonic() - start > timeout:
                raise AssertionError(f"no agent after {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(1)
        yield Running(port, log)
    finally:
        proc.kill()
        proc.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
