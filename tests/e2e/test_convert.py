"""`p2v convert --disk FIXTURE --output-dir DIR --verify-boot`: the SATA-only test
servers come out as guests that boot on virtio-blk and virtio-net, with the same
hostname, the root found by UUID or LVM name, and the NIC keeping its name and
configuration. The source image is never written.

Slow: an appliance, a copy and a boot under QEMU (TCG here) per fixture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fixture_image
from tests.fixtures import recipes
from tests.integration.transfer.disks import digest, p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture
def out() -> Iterator[Path]:
    """An output directory libvirt's QEMU user can reach (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="p2v-convert-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_converted_fixture_boots_on_virtio(name: str, out: Path) -> None:
    recipe = recipes.RECIPES[name]
    image = fixture_image(name)
    before = digest(image)
    done = p2v(
        "convert", "--disk", str(image), "--output-dir", str(out), "--name", name,
        # Two vCPUs: the emulated boot uses both host cores.
        "--vcpus", "2", "--verify-boot", "--json", timeout=1400,
    )  # fmt: skip
    result = json.loads(done.stdout)
    boot = result["boot"]
    assert boot["booted"], f"{name} did not boot: {boot['line']}\n{done.stderr[-3000:]}"
    fields = dict(f.split("=", 1) for f in boot["line"].split()[1:])
    assert fields["host"] == recipe.hostname
    assert fields["disk"] == "virtio_blk"
    root_lv = next((lv for lv in recipe.logical_volumes if lv.mountpoint == "/"), None)
    assert fields["root"] == (recipe.lv_device(root_lv) if root_lv else "/dev/vda1")
    (mac, nic), = result["plan"]["nics"]  # fmt: skip
    assert nic == recipe.nic_name
    assert fields["mac"] == f"{recipe.nic_name}={mac}"
    assert fields["net"] == f"{recipe.nic_name}:{recipe.nic_address}"

    # Free space was not moved; the XML is valid; the plan saw the firmware.
    (copy,) = result["copies"]
    assert copy["copied"] < copy["size"] / 2
    assert result["plan"]["profile"]["firmware"] == recipe.firmware
    xml = subprocess.run(["virt-xml-validate", result["xml"], "domain"], capture_output=True)
    assert xml.returncode == 0, xml.stderr
    changes = [c for f in result["fixups"] for c in f["changes"]]
    assert any("virtio drivers added" in c for c in changes)
    assert any(c.startswith("/etc/fstab: /dev/sda") for c in changes)

    # Every step is in the journal, and `p2v history` shows them.
    shown = p2v("history", result["job_id"]).stdout
    for step in ("plan", "fix-ups", "free space", "copy sda", "define", "verify boot"):
        assert f"{step}" in shown
    assert digest(image) == before, "the source image must not change"


def test_a_private_output_dir_is_refused_before_copying(tmp_path: Path) -> None:
    image = fixture_image("bios-ext4")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    done = p2v("convert", "--disk", str(image), "--output-dir", str(private / "out"),
               "--verify-boot", check=False)  # fmt: skip
    assert done.returncode == 2
    assert "libvirt's QEMU user cannot reach" in done.stderr
    assert not (private / "out").exists() or not list((private / "out").iterdir())


def test_a_disk_without_an_os_is_refused_before_copying(tmp_path: Path) -> None:
    blank = tmp_path / "blank.raw"
    with open(blank, "wb") as f:
        f.truncate(256 << 20)
    out = tmp_path / "out"
    done = p2v("convert", "--disk", str(blank), "--output-dir", str(out), check=False)
    assert done.returncode == 7
    assert "no operating system found on the disks" in done.stderr
    assert not list(out.glob("*.qcow2"))
