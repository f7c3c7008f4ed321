"""`p2v convert --target kvm -c qemu+tcp://HOST/system`: the guest lands on another
libvirt host (a test host), its disk a volume of that host's storage pool filled
through the libvirt connection; this host keeps no copy of the disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
        done = p2v(*convert, "--name", name, "--verify-boot", "--json", timeout=1400)
        result = json.loads(done.stdout)
        check_converted(name, result, done.stderr)
        on_the_host(host, name, "sda", result, image.stat().st_size)


def on_the_host(
    host: hosts.TestHost, name: str, disk: str, result: dict[str, Any], size: int
) -> None:
    """The domain is defined on the host, its disk a raw volume of the host's pool; no
    file of this host holds the disk."""
    assert result["defined"] == host.uri
    assert result["copies"][0]["target"] == f"volume:default/{name}-{disk}.img@{host.uri}"
    with virt.connection(host.uri) as conn:
        domain = virt.find(conn, name)
        assert virt.state(domain) == "shut off"
        vdisk = DomainXml.parse(domain.XMLDesc()).writable_disks()[0]
        volumes = {storage.path(v): v for v in virt.pool(conn, "default").listAllVolumes()}
        assert vdisk.source in volumes and vdisk.format == "raw"
        assert storage.capacity(volumes[vdisk.source]) == size
    assert vdisk.source.startswith(hosts.POOL_DIR)  # a path of the host, not of ours
    places = [Path(os.environ["P2V_HOME"]), Path("/var/lib/libvirt/images"), Path("/var/tmp")]
    ours = [f for place in places if place.exists() for f in place.rglob(f"{name}-{disk}*")]
    assert not ours, f"this host holds a copy of the disk: {ours}"
