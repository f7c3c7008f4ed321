"""The machine's identity from SMBIOS: sysfs first, dmidecode when sysfs lacks it."""

from __future__ import annotations

from agent.inventory.model import Machine
from agent.inventory.probe import Probe, placeholder

_SYSFS = {
    "vendor": "sys_vendor",
    "product": "product_name",
    "serial": "product_serial",
    "uuid": "product_uuid",
}
_DMIDECODE = {
    "vendor": "Manufacturer",
    "product": "Product Name",
    "serial": "Serial Number",
    "uuid": "UUID",
}


def parse_dmidecode_system(text: str) -> dict[str, str | None]:
    """The fields of the "System Information" record of `dmidecode -t 1`."""
    fields: dict[str, str | None] = {}
    inside = False
    for line in text.splitlines():
        if not line.startswith(("\t", " ")):
            inside = line.strip() == "System Information"
            continue
        key, _, value = line.strip().partition(": ")
        for name, label in _DMIDECODE.items():
            if inside and key == label:
                fields[name] = placeholder(value)
    return fields


def read_identity(probe: Probe, machine: Machine) -> None:
    found = {name: placeholder(probe.read(f"/sys/class/dmi/id/{f}")) for name, f in _SYSFS.items()}
    if not all(found.values()):
        out = probe.run(["dmidecode", "-t", "1"], "system vendor, product, serial and UUID")
        if out is not None:
            for name, value in parse_dmidecode_system(out).items():
                found[name] = found[name] or value
    machine.vendor, machine.product = found["vendor"], found["product"]
    machine.serial = found["serial"]
    machine.uuid = found["uuid"].lower() if found["uuid"] else None
    missing = [name for name, value in found.items() if not value]
    if missing:
        probe.note(f"SMBIOS does not give the system {', '.join(missing)}")
