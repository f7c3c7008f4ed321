"""A clone's domain XML, from the golden and its identity. Pure.

The identity travels in the domain's SMBIOS table, so that a clone needs no
appliance and no file of its own to become itself at its first boot: OEM strings
`p2v.identity.hostname=NAME` and `p2v.identity.nic.NAME=MAC` for p2v's first-boot
unit, and the system serial `ds=nocloud;h=NAME;i=UUID` for cloud-init's NoCloud
datasource (a new instance id makes it give the clone new SSH host keys).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from imagebuilder.domain import Placement, domain_xml
from imagebuilder.profile import HardwareProfile, VirtualDisk, VirtualNic
from p2v.clone.plan import Identity
from p2v.clone.seal import OEM_PREFIX


@dataclass(frozen=True)
class Shape:
    """What every clone of one bulk clone has alike."""

    firmware: str  # bios or uefi, as the golden boots
    memory_mib: int
    vcpus: int
    network: str  # user, network:NAME or bridge:NAME
    domain_type: str  # kvm, or qemu (TCG)
    nic_names: tuple[str, ...] = ()  # the golden's NIC names, pinned to each clone's MACs
    identity: bool = True  # False: --personalize none, the SMBIOS strings left out


def clone_xml(identity: Identity, disk: str, size: int, shape: Shape) -> str:
    profile = HardwareProfile(
        name=identity.name, firmware=shape.firmware, cores=shape.vcpus,
        memory_mib=shape.memory_mib,
        disks=[VirtualDisk("golden", "vda", size, boot=True, file=disk)],
        nics=[VirtualNic(mac) for mac in identity.macs],
    )  # fmt: skip
    root = ET.fromstring(domain_xml(profile, Placement(shape.domain_type, shape.network)))
    ET.SubElement(root, "uuid").text = identity.uuid
    if shape.identity:
        _sysinfo(root, identity, shape)
    return ET.tostring(root, encoding="unicode")


def oem_strings(identity: Identity, shape: Shape) -> list[str]:
    strings = [f"{OEM_PREFIX}hostname={identity.name}"]
    strings += [f"{OEM_PREFIX}nic.{name}={mac}"
                for name, mac in zip(shape.nic_names, identity.macs, strict=False)]  # fmt: skip
    if identity.ip:
        strings.append(f"{OEM_PREFIX}ip={identity.ip}")
    return strings


def _sysinfo(root: ET.Element, identity: Identity, shape: Shape) -> None:
    sysinfo = ET.Element("sysinfo", type="smbios")
    system = ET.SubElement(sysinfo, "system")
    serial = ET.SubElement(system, "entry", name="serial")
    serial.text = f"ds=nocloud;h={identity.name};i={identity.uuid}"
    oem = ET.SubElement(sysinfo, "oemStrings")
    for text in oem_strings(identity, shape):
        ET.SubElement(oem, "entry").text = text
    # libvirt wants <sysinfo> before <os>, and <smbios mode='sysinfo'/> in <os>.
    os_node = root.find("os")
    assert os_node is not None, "domain_xml writes <os>"
    root.insert(list(root).index(os_node), sysinfo)
    ET.SubElement(os_node, "smbios", mode="sysinfo")


def identity_of(xml: str) -> dict[str, str]:
    """The identity a clone's domain carries (OEM strings without their prefix)."""
    root = ET.fromstring(xml)
    found = {}
    for entry in root.findall("sysinfo/oemStrings/entry"):
        key, _, value = (entry.text or "").partition("=")
        if key.startswith(OEM_PREFIX):
            found[key.removeprefix(OEM_PREFIX)] = value
    return found
