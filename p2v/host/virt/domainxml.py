"""A typed view of an existing domain's XML: read from any host, rewritten for another
name, UUID, MACs or disk paths, and written back with everything else kept as it was.

Pure XML: no libvirt here, so it serves files as well as live definitions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
        "m": 1024, "mib": 1024, "mb": 1_000_000 / 1024, "g": 1024**2, "gib": 1024**2,
        "gb": 1e9 / 1024}  # fmt: skip


@dataclass
class DiskXml:
    target: str  # vda, sda, ...
    device: str  # disk, cdrom, floppy
    kind: str  # file, block, volume, network
    source: str  # the path, the device, pool/volume, or the network name
    format: str | None  # the driver's type: raw, qcow2, ...
    bus: str | None
    read_only: bool = False


@dataclass
class NicXml:
    mac: str
    kind: str  # network, bridge, user, ...
    source: str | None  # the network's or bridge's name
    model: str | None


@dataclass
class DomainXml:
    name: str
    uuid: str | None
    vcpus: int
    memory_kib: int
    firmware: str  # bios or uefi
    nvram: str | None  # the variable store's path, in either form libvirt writes
    loader: str | None = None  # the firmware's code, which each host has of its own
    disks: list[DiskXml] = field(default_factory=list)
    nics: list[NicXml] = field(default_factory=list)
    _tree: ET.Element | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, xml: str) -> DomainXml:
        root = ET.fromstring(xml)
        if root.tag != "domain":
            raise ValueError(f"not a domain's XML: its root is <{root.tag}>")
        memory = root.find("memory")
        loader = root.find("os/loader")
        uefi = root.find("os[@firmware='efi']") is not None or (
            loader is not None and loader.get("type") == "pflash"
        )
        return cls(
            name=root.findtext("name", ""),
            uuid=root.findtext("uuid"),
            vcpus=int(root.findtext("vcpu", "1")),
            memory_kib=_kib(memory) if memory is not None else 0,
            firmware="uefi" if uefi else "bios",
            nvram=_nvram_path(root),
            loader=(root.findtext("os/loader") or "").strip() or None,
            disks=[_disk(d) for d in root.findall("devices/disk")],
            nics=[_nic(n) for n in root.findall("devices/interface")],
            _tree=root,
        )

    def to_xml(self) -> str:
        """The XML with this view's values written into the original definition."""
        root = self._tree if self._tree is not None else ET.Element("domain")
        _set_text(root, "name", self.name)
        if self.uuid:
            _set_text(root, "uuid", self.uuid)
        else:
            for node in root.findall("uuid"):
                root.remove(node)
        _set_text(root, "vcpu", str(self.vcpus))
        memory = _set_text(root, "memory", str(self.memory_kib))
        memory.set("unit", "KiB")
        current = root.find("currentMemory")
        if current is not None and _kib(current) > self.memory_kib:
            current.text, current.attrib = str(self.memory_kib), {"unit": "KiB"}
        nvram = root.find("os/nvram")
        if nvram is not None:
            source = nvram.find("source")
            if not self.nvram:  # libvirt makes a fresh one from its template
                root.find("os").remove(nvram)  # type: ignore[union-attr]
            elif source is not None and source.get("file") is not None:
                source.set("file", self.nvram)
            else:
                nvram.text = self.nvram
        for disk, node in zip(self.disks, root.findall("devices/disk"), strict=True):
            _write_disk(node, disk)
        for nic, node in zip(self.nics, root.findall("devices/interface"), strict=True):
            mac = node.find("mac")
            if mac is None:
                mac = ET.SubElement(node, "mac")
            mac.set("address", nic.mac)
        return ET.tostring(root, encoding="unicode")

    def passthrough(self) -> list[str]:
        """The host devices handed to the guest (PCI, USB, SCSI, SR-IOV NICs): they
        stay with their host, so the guest cannot move while it holds them."""
        if self._tree is None:
            return []
        found = []
        for node in self._tree.findall("devices/hostdev"):
            address = node.find("source/address")
            where = " ".join(f"{k}={v}" for k, v in (address.attrib if address is not None
                                                      else {}).items())  # fmt: skip
            found.append(f"{node.get('type', 'host')} device {where}".strip())
        found += [f"NIC {nic.mac} (hostdev)" for nic in self.nics if nic.kind == "hostdev"]
        return found

    def tpm_state(self) -> bool:
        """An emulated TPM, whose state (keys, measurements) its host keeps."""
        return self._tree is not None and bool(
            self._tree.findall("devices/tpm/backend[@type='emulator']")
        )

    def disk(self, target: str) -> DiskXml:
        for disk in self.disks:
            if disk.target == target:
                return disk
        raise KeyError(target)

    def writable_disks(self) -> list[DiskXml]:
        """The disks that hold the guest's data (no CD-ROMs, nothing read-only)."""
        return [d for d in self.disks if d.device == "disk" and not d.read_only]


def _nvram_path(root: ET.Element) -> str | None:
    """<nvram>PATH</nvram>, or <nvram type='file'><source file='PATH'/></nvram>."""
    node = root.find("os/nvram")
    if node is None:
        return None
    source = node.find("source")
    if source is not None and source.get("file"):
        return source.get("file")
    return (node.text or "").strip() or None


def _kib(node: ET.Element) -> int:
    return int(int(node.text or "0") * _KIB[node.get("unit", "KiB").lower()])


def _set_text(root: ET.Element, tag: str, text: str) -> ET.Element:
    node = root.find(tag)
    if node is None:
        node = ET.SubElement(root, tag)
    node.text = text
    return node


def _disk(node: ET.Element) -> DiskXml:
    kind = node.get("type", "file")
    src = node.find("source")
    attrs = src.attrib if src is not None else {}
    if kind == "volume":
        source = f"{attrs.get('pool', '')}/{attrs.get('volume', '')}"
    else:
        source = attrs.get({"file": "file", "block": "dev"}.get(kind, "name"), "")
    driver, target = node.find("driver"), node.find("target")
    return DiskXml(
        target=target.get("dev", "") if target is not None else "",
        device=node.get("device", "disk"),
        kind=kind,
        source=source,
        format=driver.get("type") if driver is not None else None,
        bus=target.get("bus") if target is not None else None,
        read_only=node.find("readonly") is not None,
    )


def _write_disk(node: ET.Element, disk: DiskXml) -> None:
    node.set("type", disk.kind)
    src = node.find("source")
    if src is None:
        src = ET.SubElement(node, "source")
    src.attrib.clear()
    if disk.kind == "volume":
        pool, _, volume = disk.source.partition("/")
        src.set("pool", pool)
        src.set("volume", volume)
    else:
        src.set({"file": "file", "block": "dev"}.get(disk.kind, "name"), disk.source)
    if disk.format:
        driver = node.find("driver")
        if driver is None:
            driver = ET.SubElement(node, "driver", name="qemu")
        driver.set("type", disk.format)


def _nic(node: ET.Element) -> NicXml:
    mac, src, model = node.find("mac"), node.find("source"), node.find("model")
    source = None
    if src is not None:
        source = src.get("network") or src.get("bridge") or src.get("dev")
    return NicXml(
        mac=mac.get("address", "") if mac is not None else "",
        kind=node.get("type", ""),
        source=source,
        model=model.get("type") if model is not None else None,
    )
