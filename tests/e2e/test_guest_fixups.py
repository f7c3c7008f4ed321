"""The guest fix-ups make a SATA-only server boot on virtio-blk and virtio-net, with
its root found by UUID or LVM name and its NIC keeping its name and configuration.

The fix-ups run on a qcow2 overlay of the fixture: the fixture is never written.
Slow: a libguestfs appliance, then a boot under QEMU (TCG here).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imagebuilder.fixups.linux import fix_linux_guest, inspect_and_mount
from p2v import appliance
from tests.conftest import fixture_image
from tests.fixtures import boot, recipes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_fixed_guest_boots_on_virtio(name: str, tmp_path: Path) -> None:
    recipe = recipes.RECIPES[name]
    image = fixture_image(name)
    before = os.stat(image).st_mtime_ns
    overlay = tmp_path / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "raw", overlay], check=True
    )
    g = appliance.new_handle()
    try:
        g.add_drive_opts(str(overlay), format="qcow2")
        g.launch()
        guest = inspect_and_mount(g)
        assert (guest.type, guest.distro, guest.hostname) == ("linux", "debian", recipe.hostname)
        reports = fix_linux_guest(g, ["sda"], [(boot.TEST_MAC, recipe.nic_name)])
        fstab = g.cat("/etc/fstab")
        backups = [b for r in reports for b in r.backups]
        assert all(g.is_file(b) for b in backups)
        g.shutdown()
    finally:
        g.close()
    changes = "\n".join(c for r in reports for c in r.changes)
    specs = [line.split()[0] for line in fstab.splitlines() if line.split() and line[0] != "#"]
    assert not any(spec.startswith("/dev/sd") for spec in specs), fstab
    assert "virtio drivers added (virtio_pci, virtio_blk" in changes
    assert "/etc/fstab.p2v-orig" in backups

    # Another slot than the SATA machine's NIC: only the MAC pins the name now.
    result = boot.boot(overlay, recipe.firmware, "virtio", nic="virtio")
    assert result.booted, f"{name} did not boot on virtio:\n{result.tail()}\n{changes}"
    assert result.fields["host"] == recipe.hostname
    assert result.fields["disk"] == "virtio_blk"
    root_lv = next((lv for lv in recipe.logical_volumes if lv.mountpoint == "/"), None)
    assert result.fields["root"] == (recipe.lv_device(root_lv) if root_lv else "/dev/vda1")
    assert result.fields["mac"] == f"{recipe.nic_name}={boot.TEST_MAC}"
    assert result.fields["net"] == f"{recipe.nic_name}:{recipe.nic_address}"
    assert os.stat(image).st_mtime_ns == before, "the fixture must not be written"
