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

import xml.etree.ElementTree as ET
from pathlib import Path

from p2v import accel
from p2v.backup.define import put_disks

DEFAULT_DRILL_TIMEOUT = 600.0


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
