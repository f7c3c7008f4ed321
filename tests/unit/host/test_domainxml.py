"""The typed view of a domain's XML: read, rewritten for a clone or another host, and
written back with everything it does not model kept as it was."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from imagebuilder.domain import Placement, domain_xml
from imagebuilder.profile import HardwareProfile, VirtualDisk, VirtualNic
from p2v.host.virt.domainxml import DomainXml

UUID = "6f1c7e2a-3b4d-4c5e-8f90-1a2b3c4d5e6f"


def _converted(firmware: str = "bios") -> str:
    profile = HardwareProfile(
        name="web1", firmware=firmware, sockets=2, memory_mib=2048,
        disks=[VirtualDisk("sda", "vda", 8 << 30, boot=True, file="/pool/web1-sda.qcow2"),
               VirtualDisk("sdb", "vdb", 4 << 30, file="/pool/web1-sdb.qcow2")],
        nics=[VirtualNic("52:54:00:12:34:56")],
    )  # fmt: skip
    xml = ET.fromstring(domain_xml(profile, Placement("qemu", "bridge:br0", "/log/web1.log")))
    ET.SubElement(xml, "uuid").text = UUID
    return ET.tostring(xml, encoding="unicode")


def test_reads_what_a_domain_is_made_of() -> None:
    domain = DomainXml.parse(_converted())
    assert (domain.name, domain.uuid, domain.vcpus, domain.firmware) == ("web1", UUID, 2, "bios")
    assert domain.memory_kib == 2048 * 1024
    assert [(d.target, d.source, d.format, d.bus) for d in domain.disks] == [
        ("vda", "/pool/web1-sda.qcow2", "qcow2", "virtio"),
        ("vdb", "/pool/web1-sdb.qcow2", "qcow2", "virtio"),
    ]
    assert [(n.mac, n.kind, n.source) for n in domain.nics] == [
        ("52:54:00:12:34:56", "bridge", "br0")
    ]
    assert DomainXml.parse(_converted("uefi")).firmware == "uefi"


def test_rewritten_for_a_clone_keeps_the_rest() -> None:
    original = _converted()
    domain = DomainXml.parse(original)
    domain.name, domain.uuid = "web2", None
    domain.nics[0].mac = "52:54:00:aa:bb:cc"
    domain.disk("vdb").kind, domain.disk("vdb").format = "volume", "raw"
    domain.disk("vdb").source = "default/web2-sdb.img"
    domain.memory_kib = 1024 * 1024
    rewritten = domain.to_xml()

    again = DomainXml.parse(rewritten)
    assert (again.name, again.uuid, again.memory_kib) == ("web2", None, 1024 * 1024)
    assert again.nics[0].mac == "52:54:00:aa:bb:cc"
    assert (again.disk("vdb").kind, again.disk("vdb").source) == ("volume", "default/web2-sdb.img")
    assert again.disk("vdb").format == "raw"
    assert again.disk("vda").source == "/pool/web1-sda.qcow2"
    root = ET.fromstring(rewritten)
    assert root.find("devices/disk[2]/source").attrib == {
        "pool": "default",
        "volume": "web2-sdb.img",
    }  # type: ignore[union-attr]
    # What the view does not model is untouched: the console log, the boot order, ...
    before, after = ET.fromstring(original), root
    assert after.find("devices/serial/log").get("file") == "/log/web1.log"  # type: ignore[union-attr]
    assert after.find("devices/disk/boot") is not None
    assert len(list(after.iter())) == len(list(before.iter())) - 1  # less the <uuid>


def test_a_writable_disk_is_not_a_cdrom() -> None:
    xml = ET.fromstring(_converted())
    cdrom = ET.SubElement(xml.find("devices"), "disk", type="file", device="cdrom")  # type: ignore[arg-type]
    ET.SubElement(cdrom, "target", dev="sdc", bus="sata")
    ET.SubElement(cdrom, "readonly")
    domain = DomainXml.parse(ET.tostring(xml, encoding="unicode"))
    assert [d.target for d in domain.writable_disks()] == ["vda", "vdb"]


def _uefi(nvram: str) -> str:
    return (
        "<domain type='qemu'><name>u1</name><os firmware='efi'><type>hvm</type>"
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
        f"{nvram}</os><devices/></domain>"
    )


def test_the_variable_store_is_read_and_moved_in_both_forms_libvirt_writes() -> None:
    plain = DomainXml.parse(_uefi("<nvram>/var/lib/libvirt/qemu/nvram/u1_VARS.fd</nvram>"))
    sourced = DomainXml.parse(_uefi(
        "<nvram type='file'><source file='/var/lib/libvirt/qemu/nvram/u1_VARS.fd'/></nvram>"
    ))  # fmt: skip
    for domain in (plain, sourced):
        assert domain.nvram == "/var/lib/libvirt/qemu/nvram/u1_VARS.fd"
        assert domain.loader == "/usr/share/OVMF/OVMF_CODE_4M.fd"
        domain.nvram = "/srv/nvram/u1_VARS.fd"
        assert DomainXml.parse(domain.to_xml()).nvram == "/srv/nvram/u1_VARS.fd"
    assert ET.fromstring(sourced.to_xml()).find("os/nvram/source").get("file") == (
        "/srv/nvram/u1_VARS.fd"
    )
    assert DomainXml.parse(_uefi("")).nvram is None
