"""PCI devices: IDs, class and driver from sysfs; names from `lspci -vmm` when present."""

from __future__ import annotations

import os

from agent.inventory.model import PciDevice
from agent.inventory.probe import Probe


def parse_lspci_vmm(text: str) -> dict[str, str]:
    """Slot -> "Vendor Device" from `lspci -vmm -D`."""
    names = {}
    for record in text.split("\n\n"):
        fields = {}
        for line in record.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "Slot" in fields:
            names[fields["Slot"]] = " ".join(
                v for v in (fields.get("Vendor"), fields.get("Device")) if v
            )
    return names


def read_pci(probe: Probe) -> list[PciDevice]:
    devices = []
    base = probe.path("/sys/bus/pci/devices")
    for entry in sorted(base.glob("*")):
        sysfs = f"/sys/bus/pci/devices/{entry.name}"
        vendor, device = probe.read(f"{sysfs}/vendor"), probe.read(f"{sysfs}/device")
        klass = probe.read(f"{sysfs}/class")
        if not (vendor and device and klass):
            continue
        driver = entry / "driver"
        devices.append(
            PciDevice(
                slot=entry.name,
                vendor_id=vendor.removeprefix("0x"),
                device_id=device.removeprefix("0x"),
                class_id=klass.removeprefix("0x"),
                driver=os.path.basename(os.readlink(driver)) if driver.is_symlink() else None,
            )
        )
    if not devices:
        probe.note("no PCI devices in sysfs: PCI devices unknown")
        return devices
    out = probe.run(["lspci", "-vmm", "-D"], "PCI device names")
    if out:
        names = parse_lspci_vmm(out)
        for dev in devices:
            dev.description = names.get(dev.slot)
    return devices
