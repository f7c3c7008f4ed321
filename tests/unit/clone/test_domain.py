"""A clone's domain: its own UUID and MACs, its identity in the SMBIOS table."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from p2v.clone.domain import Shape, clone_xml, identity_of
from p2v.clone.plan import Identity

SHAPE = Shape("bios", 512, 2, "bridge:br0", "qemu", ("ens3",))
ONE = Identity("web-1", "qemu:///system", "0f8fad5b-d9cb-469f-a165-70867728950e",
               ["52:54:00:00:00:0a"], "10.0.0.2/24")  # fmt: skip


def test_the_identity_travels_in_the_smbios_table(tmp_path: Path) -> None:
    xml = clone_xml(ONE, "/pool/web-1.qcow2", 3 << 30, SHAPE)
    root = ET.fromstring(xml)
    assert root.findtext("name") == "web-1" and root.findtext("uuid") == ONE.uuid
    assert [m.get("address") for m in root.findall("devices/interface/mac")] == ONE.macs
    assert root.find("devices/disk/source").get("file") == "/pool/web-1.qcow2"  # type: ignore[union-attr]
    assert root.find("os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]
    serial = root.findtext("sysinfo/system/entry[@name='serial']")
    assert serial == f"ds=nocloud;h=web-1;i={ONE.uuid}"
    assert identity_of(xml) == {"hostname": "web-1", "nic.ens3": ONE.macs[0], "ip": ONE.ip}
    (tmp_path / "d.xml").write_text(xml)
    checked = subprocess.run(["virt-xml-validate", str(tmp_path / "d.xml"), "domain"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_with_personalize_none_no_identity_is_given() -> None:
    xml = clone_xml(ONE, "/pool/web-1.qcow2", 1 << 30, Shape("uefi", 512, 1, "user", "qemu",
                                                             identity=False))  # fmt: skip
    assert ET.fromstring(xml).find("sysinfo") is None and identity_of(xml) == {}
