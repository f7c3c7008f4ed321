"""What the live agent shows on every console of the machine.

The operator at the server (screen, or serial console) reads here where the agent
listens, which disks it serves and the secret's fingerprint, and, only when the agent
made the secret itself, the secret to type on the conversion host. A secret the agent
was given is never shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.inventory.model import Inventory
from agent.protocol import Address

ACTIVE_CONSOLES = Path("/sys/class/tty/console/active")
WIDTH = 72


@dataclass(frozen=True)
class Status:
    version: str
    inventory: Inventory
    listen: Address
    addresses: dict[str, list[str]]  # NIC -> global addresses
    exported: list[str]
    fingerprint: str
    secret_source: str  # "job medium", "QEMU fw_cfg", "kernel command line", "generated"
    shown_secret: str | None  # only a generated one
    server: Address | None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def render(status: Status) -> str:
    inv = status.inventory
    machine = " ".join(v for v in (inv.machine.vendor, inv.machine.product) if v) or "unknown"
    lines = [
        "=" * WIDTH,
        f" p2v agent {status.version} is ready",
        f" machine   {machine}, serial {inv.machine.serial or 'unknown'}",
    ]
    macs = {nic.name: nic.mac for nic in inv.nics}
    hosts = []
    for nic, addrs in sorted(status.addresses.items()):
        for addr in addrs:
            host = addr.split("/")[0]
            hosts.append(host)
            lines.append(
                f" address   {host} port {status.listen.port}  ({nic} {macs.get(nic, '')})"
            )
    if not hosts:
        lines.append(" address   none yet (no DHCP answer; set ip= on the kernel command line)")
    for name in status.exported:
        disk = inv.disk(name)
        detail = f"{_size(disk.size_bytes)} {disk.model or ''} {disk.serial or ''}" if disk else ""
        lines.append(f" disk      {name}  {detail.strip()}")
    if not status.exported:
        lines.append(" disk      none to serve")
    for disk in inv.disks:
        if disk.live_medium:
            lines.append(f" not served {disk.name} (this agent's own boot medium)")
    lines.append(f" secret    {status.secret_source}, fingerprint {status.fingerprint}")
    if status.shown_secret:
        grouped = "-".join(status.shown_secret[i : i + 4] for i in range(0, 32, 4))
        lines.append(f"           {grouped}   <- type this on the conversion host")
    if status.server:
        lines.append(f" announce  to the conversion host at {status.server}")
    host = hosts[0] if hosts else "ADDRESS"
    port = "" if status.listen.port == 8443 else f":{status.listen.port}"
    lines += [
        " on the conversion host, with the secret in a file F:",
        f"   p2v inventory --agent {host}{port} --secret-file F",
        "=" * WIDTH,
    ]
    return "\n".join(lines) + "\n"


class Consoles:
    """Every console the kernel writes to (screen and serial), or stdout elsewhere."""

    def __init__(self, active: Path = ACTIVE_CONSOLES) -> None:
        try:
            names = active.read_text().split()
        except OSError:
            names = []
        self.devices = [f"/dev/{name}" for name in names]

    def say(self, message: str) -> None:
        self.write(f"p2v-agent: {message}\n")

    def write(self, text: str) -> None:
        data = text.encode()  # the console's tty turns \n into \r\n
        if not self.devices:
            os.write(1, data)
        for device in self.devices:
            try:
                fd = os.open(device, os.O_WRONLY | os.O_NOCTTY)
            except OSError:
                continue
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
