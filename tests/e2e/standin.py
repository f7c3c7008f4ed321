"""A stand-in physical server: a QEMU machine whose hardware the test sets, booted
from the agent ISO, with the agent's port forwarded to 127.0.0.1.

Every value the inventory should report is chosen here, so a test compares the
agent's answer with the truth rather than with another probe of the same machine.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from p2v import accel, firmware, qemu
from tests.conftest import free_port

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


ANNOUNCE_ADDRESS = "10.0.2.100"  # where the guest finds the host's `p2v agents`


@dataclass(frozen=True)
class Network:
    """How the host reaches the agent, and the agent the host."""

    guest: str = ":8443"  # the agent's [ADDR]:PORT inside, forwarded from 127.0.0.1
    host_port: int | None = None  # the forwarded port on 127.0.0.1 (default: a free one)
    announce_port: int | None = None  # host port of `p2v agents`, at ANNOUNCE_ADDRESS:8444


def direct_boot(iso: Path, workdir: Path, kernel_args: str) -> list[str]:
    """Boot the ISO's kernel and initramfs parts with our own command line, as if the
    operator had typed the options in the boot menu."""
    files = workdir / "iso-boot"
    files.mkdir()
    for name in ("vmlinuz", "root.img", "agent.img"):
        subprocess.run(
            ["xorriso", "-osirrox", "on", "-indev", iso, "-extract", f"/boot/{name}",
             files / name], check=True, capture_output=True,
        )  # fmt: skip
    initrd = files / "initrd"
    with open(initrd, "wb") as out:
        for part in ("root.img", "agent.img"):
            out.write((files / part).read_bytes())
    append = f"console=tty0 console=ttyS0,115200n8 {kernel_args}"
    return ["-kernel", str(files / "vmlinuz"), "-initrd", str(initrd), "-append", append]


def qemu_command(
    hw: Hardware, iso: Path, boot: str, workdir: Path, port: int, net: Network = Network()
) -> list[str]:
    """`boot`: "bios-cd" (the ISO as a CD), "uefi-usb" (written to a USB stick, as a
    sysadmin would), "uefi-secure-cd" (OVMF enforcing Secure Boot), or kernel options
    after "options:" (the ISO's kernel booted directly with them)."""
    machine = "q35,smm=on" if boot == "uefi-secure-cd" else "q35"
    cmd = [
        qemu.find_program(qemu.SYSTEM_EMULATOR), *accel.detect().qemu_args,
        # "max" under TCG emulates AES-NI: the agent's TLS is then AES-GCM, several times
        # faster in an emulated guest than ChaCha20 in emulated SIMD.
        "-machine", machine, "-cpu", "max", "-m", str(hw.memory_mib),
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
        forward = ""
        if i == 0:
            forward = f",hostfwd=tcp:127.0.0.1:{port}-{net.guest}"
            if net.announce_port:
                # A command per connection (socat), where a chardev would be one stream.
                relay = f"cmd:socat - TCP:127.0.0.1:{net.announce_port}"
                forward += f",guestfwd=tcp:{ANNOUNCE_ADDRESS}:8444-{relay}"
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
    first = "" if boot.startswith("options:") else ",bootindex=0"  # -kernel boots first
    if boot == "uefi-usb":
        cmd += [
            "-drive", medium, "-device", "qemu-xhci,id=xhci",
            "-device", f"usb-storage,bus=xhci.0,drive=medium{first}",
        ]  # fmt: skip
    else:
        cmd += ["-drive", medium + ",media=cdrom",
                "-device", f"ide-cd,drive=medium,bus=ide.{sata}{first}"]  # fmt: skip
    if boot.startswith("options:"):
        cmd += direct_boot(iso, workdir, boot.removeprefix("options:"))
    elif boot.startswith("uefi"):
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
    hw: Hardware,
    iso: Path,
    boot: str,
    workdir: Path,
    secret: str | None,
    net: Network = Network(),
    timeout: float = 300,
) -> Iterator[Running]:
    """The stand-in, booted until its agent says it is ready (or the test fails)."""
    if secret is not None:
        (workdir / "secret").write_text(secret + "\n")
    port = net.host_port or free_port()
    log = workdir / "console.log"
    log.touch()
    cmd = qemu_command(hw, iso, boot, workdir, port, net)
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
