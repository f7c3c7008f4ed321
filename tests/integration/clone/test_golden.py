"""`p2v golden seal` on a real Debian 12 image (the bios-ext4 test server) that was
given the identity an installed machine has: a machine-id, SSH host keys, a random
seed, DHCP leases, a shell history, and its MAC bound in every network configuration
system (ifupdown, netplan, systemd-networkd, NetworkManager, udev, p2v's own .link).
The golden keeps none of it, gets the first-boot unit, and its source is untouched."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from p2v import appliance
from tests.conftest import fixture_image
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MAC = "52:54:00:a1:b2:c3"
PLANTED = {
    "/etc/machine-id": "0123456789abcdef0123456789abcdef\n",
    "/etc/ssh/ssh_host_ed25519_key": "not a real key\n",
    "/etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA golden\n",
    "/var/lib/systemd/random-seed": "0" * 512,
    "/var/lib/dhcp/dhclient.ens3.leases": f"lease {{ hardware ethernet {MAC}; }}\n",
    "/root/.bash_history": "echo golden\n",
    "/etc/network/interfaces.d/ens3": f"auto ens3\niface ens3 inet dhcp\n  hwaddress ether {MAC}\n",
    "/etc/netplan/50-net.yaml": "network:\n  version: 2\n  ethernets:\n    nic0:\n      match:\n"
    f"        macaddress: {MAC}\n      set-name: ens3\n      dhcp4: true\n",
    "/etc/systemd/network/20-wired.network": f"[Match]\nMACAddress={MAC}\n\n[Network]\nDHCP=yes\n",
    "/etc/systemd/network/10-p2v-ens3.link": f"[Match]\nMACAddress={MAC}\n\n[Link]\nName=ens3\n",
    "/etc/NetworkManager/system-connections/wired.nmconnection":
        f"[connection]\nid=wired\ntype=ethernet\n\n[ethernet]\nmac-address={MAC.upper()}\n",
    "/etc/udev/rules.d/70-persistent-net.rules":
        f'SUBSYSTEM=="net", ATTR{{address}}=="{MAC}", NAME="ens3"\n',
}  # fmt: skip


def _plant(image: Path) -> None:
    g = appliance.new_handle()
    try:
        g.add_drive_opts(str(image), format="qcow2")
        g.launch()
        g.mount(g.inspect_os()[0], "/")
        for path, text in PLANTED.items():
            g.mkdir_p(os.path.dirname(path))
            g.write(path, text.encode())
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


def _digest(image: Path) -> str:
    return str(json.loads(p2v("checksum", str(image), "--json").stdout)["digest"])


def test_a_sealed_golden_keeps_no_identity_and_its_source_is_untouched(tmp_path: Path) -> None:
    server = tmp_path / "server.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(fixture_image("bios-ext4")),
                    str(server)], check=True, timeout=600)  # fmt: skip
    _plant(server)
    before = _digest(server)
    golden = tmp_path / "web.qcow2"

    done = p2v("golden", "seal", str(server), "--to", str(golden), "--json")
    sealed = json.loads(done.stdout)
    assert sealed["name"] == "web" and sealed["version"] == "1"
    assert sealed["first_boot"] == "p2v-firstboot" and sealed["macs"] == [MAC]
    assert sealed["nic_names"] == ["ens3"]
    assert _digest(server) == before, "the source was written"
    assert _digest(golden) == sealed["digest"]
    assert not stat.S_IMODE(golden.stat().st_mode) & 0o222, "the golden stays writable"

    g = appliance.new_handle()
    try:
        g.add_drive_opts(str(golden), format="qcow2", readonly=1)
        g.launch()
        g.mount_ro(g.inspect_os()[0], "/")
        assert g.cat("/etc/machine-id").strip() in ("", "uninitialized")
        assert not [k for k in g.ls("/etc/ssh") if k.startswith("ssh_host_")]
        for path in (
            "/var/lib/systemd/random-seed",
            "/var/lib/dhcp/dhclient.ens3.leases",
            "/root/.bash_history",
            "/etc/systemd/network/10-p2v-ens3.link",
        ):
            assert not g.exists(path), path  # fmt: skip
        for path in PLANTED:
            if g.is_file(path):
                assert MAC not in g.cat(path).lower(), f"{path} still names the golden's MAC"
        assert g.cat("/etc/network/interfaces.d/ens3") == "auto ens3\niface ens3 inet dhcp\n"
        assert "dhcp4: true" in g.cat("/etc/netplan/50-net.yaml")
        assert g.is_file("/usr/local/sbin/p2v-firstboot")
        assert g.is_symlink("/etc/systemd/system/sysinit.target.wants/p2v-firstboot.service")
        assert "version=1" in g.cat("/etc/p2v-golden")
    finally:
        g.close()

    listed = json.loads(p2v("golden", "list", "--json").stdout)
    assert [(r["name"], r["version"], r["digest"]) for r in listed] == [
        ("web", "1", sealed["digest"])
    ]
    again = p2v("golden", "seal", str(server), "--to", str(golden), check=False)
    assert again.returncode == 2 and "exists" in again.stderr
