"""What every converted test server must show, whichever way it was converted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from p2v.host import virt
from p2v.host.virt import storage
from p2v.host.virt.domainxml import DomainXml
from tests import hosts
from tests.fixtures import recipes
from tests.integration.transfer.disks import p2v


def check_converted(name: str, result: dict[str, Any], stderr: str) -> None:
    """What a converted test server must show: booted on virtio-blk and virtio-net,
    same hostname, root by UUID or LVM name, the NIC with its MAC and configuration,
    free space not moved, valid XML, fix-ups reported and every step in the journal."""
    recipe = recipes.RECIPES[name]
    boot = result["boot"]
    assert boot["booted"], f"{name} did not boot: {boot['line']}\n{stderr[-3000:]}"
    assert not boot["waited"], f"{name}'s boot waited for what never came"
    fields = dict(f.split("=", 1) for f in boot["line"].split()[1:])
    assert fields["host"] == recipe.hostname
    assert fields["disk"] == "virtio_blk"
    # The same root as on the server; a disk's name moves from sdX to vdX.
    assert fields["root"] == recipe.root_device().replace("/dev/sd", "/dev/vd")
    nics = dict((nic, mac) for mac, nic in result["plan"]["nics"])
    mac = nics[recipe.nic_name]
    assert f"{recipe.nic_name}={mac}" in fields["mac"].split(",")
    assert f"{recipe.nic_name}:{recipe.nic_address}" in fields["net"].split(",")

    copy = result["copies"][0]
    assert copy["copied"] < copy["size"] / 2
    assert result["plan"]["profile"]["firmware"] == recipe.firmware
    xml = subprocess.run(["virt-xml-validate", result["xml"], "domain"], capture_output=True)
    assert xml.returncode == 0, xml.stderr
    changes = [c for f in result["fixups"] for c in f["changes"]]
    assert any("virtio drivers added" in c for c in changes)
    assert any(c.startswith("/etc/fstab: /dev/sda") for c in changes)

    shown = p2v("history", result["job_id"]).stdout
    for step in ("plan", "fix-ups", "free space", "copy sda", "define", "verify boot"):
        assert f"  {step} " in shown


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
