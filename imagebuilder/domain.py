"""HardwareProfile -> libvirt domain XML (q35, virtio everywhere, serial console).

Pure: the caller says where the disks and the console log are and how the NICs
connect; libvirt picks the OVMF build through firmware auto-selection.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from imagebuilder.profile import HardwareProfile

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class Placement:
    """Where the domain's pieces live on the host."""

    domain_type: str = "kvm"  # "kvm", or "qemu" (TCG) where KVM does not work
    network: str = "user"  # "user", "network:NAME" or "bridge:NAME"
    console_log: str | None = None  # the serial console is also written here


def domain_xml(profile: HardwareProfile, placement: Placement = Placement()) -> str:
    domain = ET.Element("domain", type=placement.domain_type)
    _text(domain, "name", profile.name)
    _text(domain, "memory", str(profile.memory_mib), unit="MiB")
    _text(domain, "vcpu", str(profile.vcpus), placement="static")
    _os(domain, profile)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if profile.secure_boot:
        ET.SubElement(features, "smm", state="on")  # OVMF's Secure Boot needs it
    _cpu(domain, profile, placement)
    ET.SubElement(domain, "clock", offset="utc")
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart")):
        _text(domain, event, action)
    _text(domain, "on_crash", "destroy")
    devices = ET.SubElement(domain, "devices")
    for disk in profile.disks:
        _disk(devices, disk.file, disk.target, disk.boot)
    for nic in profile.nics:
        _nic(devices, nic.mac, nic.model, placement.network)
    serial = ET.SubElement(devices, "serial", type="pty")
    if placement.console_log:
        ET.SubElement(serial, "log", file=placement.console_log, append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    rng = ET.SubElement(devices, "rng", model="virtio")
    _text(rng, "backend", "/dev/urandom", model="random")
    # A local screen for the administrator; nothing listens beyond this host.
    ET.SubElement(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="virtio")
    ET.SubElement(devices, "memballoon", model="virtio")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _os(domain: ET.Element, profile: HardwareProfile) -> None:
    os_attrs = {"firmware": "efi"} if profile.firmware == "uefi" else {}
    os_element = ET.SubElement(domain, "os", os_attrs)
    _text(os_element, "type", "hvm", arch="x86_64", machine=profile.machine)
    if profile.firmware == "uefi":
        firmware = ET.SubElement(os_element, "firmware")
        state = "yes" if profile.secure_boot else "no"
        ET.SubElement(firmware, "feature", enabled=state, name="secure-boot")
        ET.SubElement(firmware, "feature", enabled=state, name="enrolled-keys")


def _cpu(domain: ET.Element, profile: HardwareProfile, placement: Placement) -> None:
    if profile.cpu_model:
        cpu = ET.SubElement(domain, "cpu", mode="custom", match="exact")
        _text(cpu, "model", profile.cpu_model, fallback="forbid")
    elif placement.domain_type == "kvm":
        cpu = ET.SubElement(domain, "cpu", mode="host-passthrough", check="none")
    else:
        cpu = ET.SubElement(domain, "cpu")  # TCG: QEMU's default model
    ET.SubElement(
        cpu,
        "topology",
        sockets=str(profile.sockets),
        dies="1",
        cores=str(profile.cores),
        threads=str(profile.threads),
    )


def _disk(devices: ET.Element, file: str, target: str, boot: bool) -> None:
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    ET.SubElement(disk, "source", file=file)
    ET.SubElement(disk, "target", dev=target, bus="virtio")
    if boot:
        ET.SubElement(disk, "boot", order="1")


def network_kind(network: str) -> tuple[str, str]:
    """("user", ""), ("network", NAME) or ("bridge", NAME) from how the NICs connect,
    as --network takes it; ValueError for anything else."""
    kind, _, name = network.partition(":")
    if kind not in ("user", "network", "bridge") or (kind != "user" and not name):
        raise ValueError(f"network {network!r}: use user, network:NAME or bridge:NAME")
    return kind, name


def _nic(devices: ET.Element, mac: str, model: str, network: str) -> None:
    kind, name = network_kind(network)
    interface = ET.SubElement(devices, "interface", type=kind)
    ET.SubElement(interface, "mac", address=mac)
    if kind != "user":
        ET.SubElement(interface, "source", {kind: name})
    ET.SubElement(interface, "model", type=model)
