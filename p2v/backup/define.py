"""The definition `p2v restore DIR --define NAME` gives the VM it brings back: the
backed-up one under NAME, its disks on the restored volumes, its MAC addresses and
(where the host has no domain with it) its UUID; its UEFI variables start afresh
from the firmware's template (a backup does not hold them yet)."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def backed_up_uuid(xml: str) -> str | None:
    return ET.fromstring(xml).findtext("uuid")


def vm_xml(xml: str, name: str, disks: dict[str, str], uuid: str | None) -> str:
    """The backed-up definition under `name`, its disks on `disks` (target -> path)."""
    root = ET.fromstring(xml)
    for node in root.findall("name"):
        node.text = name
    for node in root.findall("uuid"):
        root.remove(node)
    if uuid:
        root.insert(1, _text("uuid", uuid))
    os_node = root.find("os")
    if os_node is not None:
        for nvram in os_node.findall("nvram"):  # libvirt makes a fresh one
            os_node.remove(nvram)
    devices = root.find("devices")
    assert devices is not None, "a domain has devices"
    put_disks(devices, disks)
    return ET.tostring(root, encoding="unicode")


def put_disks(devices: ET.Element, disks: dict[str, str]) -> None:
    """Each backed-up disk (target -> path) on its restored qcow2; CD-ROMs and floppies
    emptied; disks not in the backup (read-only, shared) left out (`left_out` names
    them)."""
    for disk in devices.findall("disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev in disks:
            disk.set("type", "file")
            for tag in ("source", "backingStore", "driver"):
                for node in disk.findall(tag):
                    disk.remove(node)
            disk.insert(0, ET.Element("driver", name="qemu", type="qcow2"))
            disk.insert(1, ET.Element("source", file=disks[dev]))
        elif disk.get("device") in ("cdrom", "floppy"):
            for source in disk.findall("source"):
                disk.remove(source)
        else:
            devices.remove(disk)


def left_out(xml: str, disks: dict[str, str]) -> list[str]:
    """The backed-up VM's disks that a backup does not hold (read-only or shared)."""
    root = ET.fromstring(xml)
    return [t.get("dev", "?") for d in root.findall("devices/disk")
            if d.get("device") not in ("cdrom", "floppy")
            and (t := d.find("target")) is not None and t.get("dev") not in disks]  # fmt: skip


def _text(tag: str, text: str) -> ET.Element:
    node = ET.Element(tag)
    node.text = text
    return node
