"""The test guest's libvirt domain: pure XML from what the guest is given."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tests.fixtures.vmguest import Settings

BRIDGE = "br0"  # inside each test host: its link to the test subnet


@dataclass(frozen=True)
class GuestSpec:
    name: str
    settings: Settings
    memory_mib: int
    disk_path: str  # the qcow2 volume's path on its host
    domain_type: str = "qemu"  # "kvm" where KVM really works
    uefi: bool = False  # OVMF (no Secure Boot) with a variable store libvirt makes
    agent: bool = False  # the guest agent's channel (its qemu-ga starts when it is there)

    def to_xml(self) -> str:
        """The domain: one vCPU, the disk, a virtio NIC on the host's bridge when the
        guest has an address, the serial console, the settings as OEM strings."""
        domain = ET.Element("domain", type=self.domain_type)
        ET.SubElement(domain, "name").text = self.name
        ET.SubElement(domain, "memory", unit="MiB").text = str(self.memory_mib)
        ET.SubElement(domain, "vcpu").text = "1"
        sysinfo = ET.SubElement(domain, "sysinfo", type="smbios")
        oem = ET.SubElement(sysinfo, "oemStrings")
        for entry in self.settings.oem_strings():
            ET.SubElement(oem, "entry").text = entry
        os_node = (
            ET.SubElement(domain, "os", firmware="efi")
            if self.uefi
            else ET.SubElement(domain, "os")
        )
        ET.SubElement(os_node, "type", arch="x86_64", machine="q35").text = "hvm"
        if self.uefi:
            chosen = ET.SubElement(os_node, "firmware")
            for feature in ("secure-boot", "enrolled-keys"):
                ET.SubElement(chosen, "feature", enabled="no", name=feature)
        ET.SubElement(os_node, "boot", dev="hd")
        ET.SubElement(os_node, "smbios", mode="sysinfo")
        ET.SubElement(ET.SubElement(domain, "features"), "acpi")
        # A guest that stops, for whatever reason, stays stopped for the test to see.
        for event in ("on_poweroff", "on_reboot", "on_crash"):
            ET.SubElement(domain, event).text = "destroy"
        devices = ET.SubElement(domain, "devices")
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2")
        ET.SubElement(disk, "source", file=self.disk_path)
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
        if self.settings.ip:
            nic = ET.SubElement(devices, "interface", type="bridge")
            ET.SubElement(nic, "source", bridge=BRIDGE)
            ET.SubElement(nic, "model", type="virtio")
        serial = ET.SubElement(devices, "serial", type="pty")
        ET.SubElement(serial, "target", port="0")
        console = ET.SubElement(devices, "console", type="pty")
        ET.SubElement(console, "target", type="serial", port="0")
        if self.agent:
            channel = ET.SubElement(devices, "channel", type="unix")
            ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
        ET.SubElement(devices, "memballoon", model="none")
        return ET.tostring(domain, encoding="unicode")
