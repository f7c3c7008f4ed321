"""The test guest's domain XML and the settings `python -m tests.guests start` gives it."""

import xml.etree.ElementTree as ET

import pytest

from p2v.errors import InputError
from tests import guests
from tests.fixtures.vmguest import Settings
from tests.guests.domain import GuestSpec


def test_domain_boots_from_its_disk_alone_and_reads_its_settings() -> None:
    settings = Settings("hot", "10.253.0.100/24", "10.253.0.1")
    xml = GuestSpec("g1", settings, 384, "/var/lib/libvirt/images/g1.qcow2").to_xml()
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "g1"
    assert root.findtext("memory") == "384" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert [e.text for e in root.findall("sysinfo/oemStrings/entry")] == [
        "p2v.workload=hot", "p2v.ip=10.253.0.100/24", "p2v.gw=10.253.0.1"
    ]  # fmt: skip
    assert root.find("os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]
    assert root.find("os/kernel") is None and root.find("os/initrd") is None
    [disk] = root.findall("devices/disk")
    assert disk.find("source").get("file") == "/var/lib/libvirt/images/g1.qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    [nic] = root.findall("devices/interface")
    assert nic.find("source").get("bridge") == "br0"  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert root.find("devices/serial") is not None


def test_a_guest_without_an_address_has_no_nic() -> None:
    xml = GuestSpec("g2", Settings(), 256, "/images/g2.qcow2").to_xml()
    assert ET.fromstring(xml).find("devices/interface") is None


def test_an_address_on_the_test_subnet_gets_its_prefix_and_gateway() -> None:
    assert guests.settings_for("warm", "10.253.0.120", None) == Settings(
        "warm", "10.253.0.120/24", "10.253.0.1"
    )
    assert guests.settings_for("idle", "192.0.2.5/28", None) == Settings("idle", "192.0.2.5/28")
    assert guests.settings_for("idle", None, None) == Settings()
    with pytest.raises(InputError, match="--ip 10.253.0.300"):
        guests.settings_for("idle", "10.253.0.300", None)
