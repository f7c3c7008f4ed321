"""Offline personalization's parts that touch no disk: the files a clone gets, the
keys made for it, and the goldens it refuses."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from p2v.clone import batch, job, personalize, seal
from p2v.clone.inventory import fingerprint
from p2v.errors import InputError


def test_hosts_names_the_clone_once_and_keeps_the_rest() -> None:
    hosts = "127.0.0.1\tlocalhost\n127.0.1.1\tgolden.example golden\n::1\tlocalhost\n"
    assert seal.with_hostname(hosts, "web-7") == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tweb-7\n"
    )
    assert seal.with_hostname("", "web-7") == "127.0.1.1\tweb-7\n"


def test_a_nic_is_pinned_to_the_clones_mac_where_the_first_boot_script_would() -> None:
    path, text = seal.pinned_link("enp0s3", "52:54:00:12:34:56")
    assert path == "/etc/systemd/network/10-p2v-enp0s3.link"
    assert seal.pinned_name(path) == "enp0s3"
    assert "MACAddress=52:54:00:12:34:56\n" in text and "Name=enp0s3\n" in text
    assert f"{seal.PINNED_PREFIX}$nic.link" in seal.firstboot_script()


def test_each_clone_gets_its_own_host_keys_of_every_default_type(tmp_path: Path) -> None:
    one = personalize.host_keys(str(tmp_path), "web-1")
    two = personalize.host_keys(str(tmp_path), "web-2")
    kinds = ("rsa", "ecdsa", "ed25519")
    assert sorted(one) == sorted(
        f"/etc/ssh/ssh_host_{t}_key{e}" for t in kinds for e in ("", ".pub")
    )
    assert one["/etc/ssh/ssh_host_ed25519_key.pub"].endswith(b" root@web-1\n")
    prints = {fingerprint(key.decode()) for keys in (one, two)
              for path, key in keys.items() if path.endswith(".pub")}  # fmt: skip
    assert None not in prints and len(prints) == 6, "six public keys, none alike"
    key = tmp_path / "check"
    key.write_bytes(one["/etc/ssh/ssh_host_ed25519_key"])
    key.chmod(0o600)
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert public.split()[1] == one["/etc/ssh/ssh_host_ed25519_key.pub"].decode().split()[1]
    assert not list(tmp_path.glob("web-*/*")), "no private key is left behind"


@pytest.mark.parametrize("root", ["/dev/vg0/root", None])
def test_a_golden_whose_root_is_not_a_partition_is_not_personalized_offline(
    root: str | None,
) -> None:
    request = job.Request(source="web", pattern="web-{n}", count=2, uris=["test:///default"],
                          personalize="offline")  # fmt: skip
    with pytest.raises(InputError, match="is not a partition"):
        job.check_offline(request, {"name": "web", "root": root})
    job.check_offline(request, {"name": "web", "root": "/dev/sda2"})


@pytest.mark.parametrize(
    ("disks", "cores", "size"),
    [(4, 2, 4), (31, 2, 31), (32, 2, 16), (100, 2, 50), (100, 1, 100), (1000, 2, 255),
     (1000, 8, 125), (1, 8, 1)],
)  # fmt: skip
def test_disks_are_shared_out_one_appliance_a_core_within_the_limits(
    disks: int, cores: int, size: int
) -> None:
    assert batch.batch_size(disks, cores) == size


INTERFACES = """auto lo
iface lo inet loopback

auto enp0s3
iface enp0s3 inet static
\taddress 10.0.0.5/24
\tgateway 10.0.0.1
\thwaddress ether 52:54:00:12:34:56

auto enp0s4
iface enp0s4 inet dhcp
"""


def test_a_clone_takes_its_address_on_its_nic_and_keeps_the_rest() -> None:
    inside = personalize.with_address(INTERFACES, "enp0s3", "10.0.0.7/24")
    assert inside == INTERFACES.replace(
        "\taddress 10.0.0.5/24\n\tgateway 10.0.0.1\n", "\taddress 10.0.0.7/24\n\tgateway 10.0.0.1\n"
    ), "its gateway is in the new network: kept"
    moved = personalize.with_address(INTERFACES, "enp0s3", "10.9.0.7/16")
    assert moved is not None and "\taddress 10.9.0.7/16\n\tgateway 10.9.0.1\n" in moved
    assert "10.0.0.1" not in moved and "\thwaddress ether 52:54:00:12:34:56\n" in moved
    dhcp = personalize.with_address(INTERFACES, "enp0s4", "10.9.0.8/16")
    assert dhcp is not None and dhcp.endswith(
        "iface enp0s4 inet static\n\taddress 10.9.0.8/16\n\tgateway 10.9.0.1\n"
    )
    assert "\taddress 10.0.0.5/24\n" in dhcp, "another NIC's stanza is left alone"
    assert personalize.with_address(INTERFACES, "eth9", "10.9.0.9/16") is None


@pytest.mark.parametrize("awk", ["mawk", "gawk"])
@pytest.mark.parametrize(
    ("nic", "address"),
    [("enp0s3", "10.0.0.7/24"), ("enp0s3", "10.9.0.7/16"), ("enp0s4", "10.9.0.8/16"),
     ("enp0s3", "192.168.7.130/25"), ("eth9", "10.9.0.9/16")],
)  # fmt: skip
def test_the_first_boot_unit_writes_the_address_as_offline_personalization_does(
    awk: str, nic: str, address: str
) -> None:
    """The clone's first boot (awk in the guest: Debian's is mawk) and the offline
    writing (Python) give a NIC its address alike."""
    if shutil.which(awk) is None:
        pytest.skip(f"no {awk} here")
    with tempfile.NamedTemporaryFile("w", suffix=".interfaces") as f:
        f.write(INTERFACES)
        f.flush()
        done = subprocess.run([awk, "-v", f"nic={nic}", "-v", f"addr={address}",
                               seal.IFUPDOWN_ADDRESS_AWK, f.name, f.name],
                              capture_output=True, text=True, check=True)  # fmt: skip
    offline = personalize.with_address(INTERFACES, nic, address)
    assert done.stdout == (INTERFACES if offline is None else offline)
