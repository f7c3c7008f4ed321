"""Process-migration test nodes on test hosts (the procnode fixture as a guest).

A node is the fixture image uploaded as the volume NAME.qcow2 of the host's pool
`default` and defined as the domain NAME, one vCPU, on the host's bridge, its
settings in SMBIOS OEM strings. `start` returns once the node says it is ready
(sshd, and the counter service where it runs one, listening); every wait has a time
limit, and what went wrong names the node with the end of its console.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from p2v import accel
from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import console as virt_console
from p2v.host.virt import storage
from tests.fixtures import procnode
from tests.fixtures.procnode import build as procnode_build
from tests.guests import POOL, GuestError, _tail, _virtual_size, volume_name
from tests.guests.domain import BRIDGE

START_TIMEOUT = 240.0


def domain_xml(name: str, settings: procnode.NodeSettings, disk: str, domain_type: str) -> str:
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(procnode.MEMORY_MIB)
    ET.SubElement(domain, "vcpu").text = "1"
    # CRIU restores a process on a CPU that has what the source's had: both nodes
    # get the same model.
    ET.SubElement(domain, "cpu", mode="custom", match="exact").append(
        ET.fromstring("<model fallback='forbid'>qemu64</model>")
    )
    oem = ET.SubElement(ET.SubElement(domain, "sysinfo", type="smbios"), "oemStrings")
    for entry in settings.oem_strings():
        ET.SubElement(oem, "entry").text = entry
    os_node = ET.SubElement(domain, "os")
    ET.SubElement(os_node, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_node, "boot", dev="hd")
    ET.SubElement(os_node, "smbios", mode="sysinfo")
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(domain, event).text = "destroy"
    devices = ET.SubElement(domain, "devices")
    disk_node = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk_node, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk_node, "source", file=disk)
    ET.SubElement(disk_node, "target", dev="vda", bus="virtio")
    nic = ET.SubElement(devices, "interface", type="bridge")
    ET.SubElement(nic, "source", bridge=BRIDGE)
    ET.SubElement(nic, "model", type="virtio")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")
    ET.SubElement(devices, "rng", model="virtio").append(
        ET.fromstring("<backend model='random'>/dev/urandom</backend>")
    )
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def start(
    uri: str, name: str, settings: procnode.NodeSettings, timeout: float = START_TIMEOUT
) -> dict[str, str]:
    """Upload, define and start the node; its ready line's fields once it is ready. A
    node that does not get there is removed again, with its volume."""
    image = procnode_build.build()
    with virt.connection(uri) as conn:
        if virt.lookup(conn, name) is not None:
            raise InputError(f"{uri}: a domain named {name!r} exists; stop it first")
        pool = virt.pool(conn, POOL)
        vol = virt.create_volume(pool, volume_name(name), _virtual_size(image), "qcow2")
        try:
            storage.upload_file(conn, vol, str(image))
            xml = domain_xml(name, settings, storage.path(vol), accel.detect().libvirt_domain_type)
            domain = virt.define(conn, xml)
            try:
                virt.start(domain)
                text = virt_console.read_console_until(
                    conn, domain,
                    lambda t: procnode.ready(t) is not None or procnode.failure(t) is not None,
                    timeout,
                )  # fmt: skip
                if failed := procnode.failure(text):
                    raise GuestError(f"{name} on {uri} failed: {failed}\n{_tail(text)}")
                if (fields := procnode.ready(text)) is None:
                    raise GuestError(
                        f"{name} on {uri}: not ready after {timeout:g} s\n{_tail(text)}"
                    )
                return fields
            except BaseException:
                virt.destroy(domain)
                virt.undefine(domain)
                raise
        except BaseException:
            storage.delete_volume(vol)
            raise
