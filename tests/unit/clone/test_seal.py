"""What sealing a golden takes out of network configuration, and the first-boot
script each clone runs."""

from __future__ import annotations

import subprocess

import pytest

from p2v.clone import seal

MAC = "52:54:00:12:34:56"


def test_a_link_file_that_names_a_nic_by_its_mac_goes_whole() -> None:
    text = f"[Match]\nMACAddress={MAC}\n\n[Link]\nName=ens3\n"
    new, removed = seal.unbind("/etc/systemd/network/10-p2v-ens3.link", text)
    assert new is None and removed


@pytest.mark.parametrize(
    ("path", "text", "kept"),
    [
        ("/etc/network/interfaces",
         f"auto ens3\niface ens3 inet dhcp\n    hwaddress ether {MAC}\n",
         "auto ens3\niface ens3 inet dhcp\n"),
        ("/etc/systemd/network/20-wired.network",
         f"[Match]\nName=ens3\nMACAddress={MAC.upper()}\n\n[Network]\nDHCP=yes\n",
         "[Match]\nName=ens3\n\n[Network]\nDHCP=yes\n"),
        ("/etc/NetworkManager/system-connections/wired.nmconnection",
         f"[connection]\nid=wired\ntype=ethernet\n\n[ethernet]\nmac-address={MAC}\n"
         f"cloned-mac-address={MAC}\n\n[ipv4]\nmethod=auto\n",
         "[connection]\nid=wired\ntype=ethernet\n\n[ethernet]\n\n[ipv4]\nmethod=auto\n"),
        ("/etc/udev/rules.d/70-net.rules",
         f'# names\nSUBSYSTEM=="net", ATTR{{address}}=="{MAC}", NAME="ens3"\n',
         "# names\n"),
        ("/etc/sysconfig/network-scripts/ifcfg-eth0",
         f"DEVICE=eth0\nHWADDR={MAC}\nBOOTPROTO=dhcp\n",
         "DEVICE=eth0\nBOOTPROTO=dhcp\n"),
    ],
)  # fmt: skip
def test_mac_bindings_go_and_the_rest_of_the_configuration_stays(
    path: str, text: str, kept: str
) -> None:
    new, removed = seal.unbind(path, text)
    assert new == kept
    assert removed and all(path in r for r in removed)
    assert not seal.macs_in(new)


def test_a_netplan_match_left_empty_goes_with_its_set_name() -> None:
    text = (
        "network:\n  version: 2\n  ethernets:\n    nic0:\n      match:\n"
        f"        macaddress: {MAC}\n      set-name: ens3\n      dhcp4: true\n"
    )
    new, _ = seal.unbind("/etc/netplan/50-cloud-init.yaml", text)
    assert new == "network:\n  version: 2\n  ethernets:\n    nic0:\n      dhcp4: true\n"


def test_a_mac_that_binds_nothing_is_left_and_a_file_without_one_is_untouched() -> None:
    text = f"# this server's old MAC was {MAC}\nauto lo\niface lo inet loopback\n"
    assert seal.unbind("/etc/network/interfaces", text) == (text, [])


def test_macs_in_finds_both_spellings_and_not_longer_runs() -> None:
    assert seal.macs_in(f"a {MAC} b 52-54-00-AB-CD-EF c") == {MAC, "52:54:00:ab:cd:ef"}
    assert seal.macs_in("fe80::5054:ff:fe12:3456 00:11:22:33:44:55:66") == set()


def test_the_first_boot_script_is_valid_shell_and_its_unit_runs_before_udev_names_nics() -> None:
    checked = subprocess.run(["sh", "-n"], input=seal.firstboot_script(), text=True,
                             capture_output=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    unit = seal.firstboot_unit()
    assert "Before=systemd-udev-trigger.service" in unit
    assert f"ConditionPathExists=!{seal.FIRSTBOOT_DONE}" in unit


def test_the_names_a_conversion_pinned_are_told_from_other_link_files() -> None:
    assert seal.pinned_name("/etc/systemd/network/10-p2v-enp0s3.link") == "enp0s3"
    assert seal.pinned_name("/etc/systemd/network/50-wired.link") is None
    assert seal.pinned_name("/etc/udev/rules.d/10-p2v-net-names.rules") is None
    assert f"{seal.PINNED_PREFIX}$nic.link" in seal.firstboot_script()
