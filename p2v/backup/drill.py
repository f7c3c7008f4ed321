"""A restore drill (`p2v restore DIR --check`): the point restored to a scratch place,
the VM booted from it headless under a name of its own, its serial console read
until it has come up, then everything removed again. It proves more than a digest:
that what was backed up boots.

The drill's VM is the backed-up definition with what would clash or leak taken out:
no UUID, its NICs on QEMU's user-mode network (isolated: the original's MAC
addresses meet no real network), no graphics or host devices, no CD-ROM media, the
serial console written to a file, a fresh UEFI variable store, and the accelerator
this host has.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2v import accel
from p2v.backup.define import put_disks
from p2v.backup.restore import restore
from p2v.host import bootcheck, virt
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT
from p2v.transfer.progress import Reporter

Say = Callable[[str], None]
DEFAULT_DRILL_TIMEOUT = 600.0


def drill(
    directory: Path,
    at: str | None,
    uri: str,
    timeout: float,
    say: Say,
    reporter: Reporter | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """Restore and boot the point `at` on this machine's libvirt `uri`: the result,
    `booted` saying whether it came up."""
    if uri not in virt.LOCAL_URIS:
        raise_remote(uri)
    with tempfile.TemporaryDirectory(prefix="p2v-drill-") as scratch:
        os.chmod(scratch, 0o711)  # QEMU may run as another user
        done = restore(directory, at, scratch, say, reporter, into_directory=True)
        log = Path(scratch) / "console.log"
        paths = {t: d["path"] for t, d in done["disks"].items()}
        xml = drill_xml(done["domain_xml"], paths, str(log), Path(scratch) / "VARS.fd")
        say(f"booting {done['backup']} headless (up to {timeout:.0f} s)")
        with virt.connection(uri, connect_timeout) as conn:
            check = bootcheck.verify_boot(conn, xml, log, timeout)
    say(("came up: " if check.booted else "did not come up: ") + check.line)
    return {"backup": done["backup"], "booted": check.booted, "line": check.line,
            "seconds": round(check.seconds, 1)}  # fmt: skip


def raise_remote(uri: str) -> None:
    from p2v.errors import InputError

    raise InputError(f"a restore drill boots on this machine (qemu:///session or "
                     f"qemu:///system), where the backup is restored, not on {uri}")  # fmt: skip


def drill_xml(xml: str, disks: dict[str, str], console_log: str, nvram: Path) -> str:
    root = ET.fromstring(xml)
    root.set("type", (accel.forced() or accel.detect()).libvirt_domain_type)
    if root.get("type") == "qemu":
        for cpu in root.findall("cpu"):  # host-passthrough and the like need KVM
            root.remove(cpu)
    for node in root.findall("uuid"):
        root.remove(node)
    os_node = root.find("os")
    if os_node is not None:
        for old in os_node.findall("nvram"):
            os_node.remove(old)
        if os_node.find("loader") is not None or os_node.get("firmware") == "efi":
            ET.SubElement(os_node, "nvram").text = str(nvram)  # made from its template
    devices = root.find("devices")
    assert devices is not None, "a domain has devices"
    for node in devices.findall("emulator"):
        devices.remove(node)  # this host's own
    for tag in ("graphics", "hostdev", "serial", "console", "redirdev", "smartcard"):
        for node in devices.findall(tag):
            devices.remove(node)
    put_disks(devices, disks)
    for nic in devices.findall("interface"):
        nic.attrib = {"type": "user"}
        for child in list(nic):
            if child.tag not in ("mac", "model"):
                nic.remove(child)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=console_log)
    ET.SubElement(serial, "target", port="0")
    return ET.tostring(root, encoding="unicode")
