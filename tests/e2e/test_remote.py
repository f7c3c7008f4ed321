"""`p2v convert --target kvm -c qemu+tcp://HOST/system`: the guest lands on another
libvirt host (a test host), its disk a volume of that host's storage pool filled
through the libvirt connection; this host keeps no copy of the disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from p2v import accel
from p2v.host import virt
from p2v.host.virt import storage
from p2v.host.virt.domainxml import DomainXml
from tests import hosts
from tests.conftest import fixture_image, require_root
from tests.e2e.converted import check_converted
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _files_named(prefix: str, *places: Path) -> list[Path]:
    return [f for place in places if place.exists() for f in place.rglob(f"{prefix}*")]


def test_bios_ext4_converted_onto_another_host_boots_there_from_its_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_root("test hosts are namespaces")
    name = "bios-ext4"
    image = fixture_image(name)
    # The test host shares this machine's processor: the accelerator that works here.
    monkeypatch.setenv("P2V_ACCEL", accel.detect().accel)
    with hosts.running(["p2vt-target"]) as [host]:
        convert = ["convert", "--disk", str(image), "--target", "kvm", "-c", host.uri]
        refused = p2v(*convert, "--pool", "nope", check=False)
        assert refused.returncode == 2 and "no storage pool 'nope'" in refused.stderr
        assert "its pools: default" in refused.stderr

        done = p2v(*convert, "--name", name, "--verify-boot", "--json", timeout=1400)
        result = json.loads(done.stdout)
        check_converted(name, result, done.stderr)
        assert result["defined"] == host.uri
        target = result["copies"][0]["target"]
        assert target == f"volume:default/{name}-sda.img@{host.uri}"

        with virt.connection(host.uri) as conn:
            domain = virt.find(conn, name)
            assert virt.state(domain) == "shut off"
            disk = DomainXml.parse(domain.XMLDesc()).writable_disks()[0]
            volumes = {storage.path(v): v for v in virt.pool(conn, "default").listAllVolumes()}
            assert disk.source in volumes and disk.format == "raw"
            assert storage.capacity(volumes[disk.source]) == image.stat().st_size
        assert disk.source.startswith(hosts.POOL_DIR)  # a path of the host, not of ours

        home = Path(os.environ["P2V_HOME"])
        ours = _files_named(f"{name}-sda", home, Path("/var/lib/libvirt/images"), Path("/var/tmp"))
        assert not ours, f"this host holds a copy of the disk: {ours}"

        again = p2v(*convert, "--name", name, check=False)
        assert again.returncode == 2 and "already exist" in again.stderr
