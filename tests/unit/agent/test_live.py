"""The live agent's boot options, secret sources, NIC choice and console screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.inventory.model import Disk, Inventory, Machine, Nic
from agent.live import network
from agent.live.options import IpConfig, OptionError, parse_cmdline
from agent.live.screen import Consoles, Status, render
from agent.live.secret import find_secret
from agent.protocol import ANNOUNCE_PORT, Address, SecretError, fingerprint

KEY = "00112233445566778899aabbccddeeff"
BOOT = "BOOT_IMAGE=/boot/vmlinuz console=tty0 console=ttyS0,115200n8 quiet"


def test_defaults_when_the_command_line_says_nothing() -> None:
    options = parse_cmdline(BOOT)
    assert options.listen == Address("0.0.0.0", 8443)
    assert options.disks is None and options.secret is None and options.server is None
    assert options.ip == IpConfig()  # DHCP on every NIC


def test_agent_options() -> None:
    options = parse_cmdline(
        f"{BOOT} p2v.listen=:9000 p2v.disks=sda,/dev/nvme0n1 p2v.secret={KEY.upper()} "
        "p2v.server=conv.example"
    )
    assert options.listen == Address("0.0.0.0", 9000)
    assert options.disks == ("sda", "nvme0n1")
    assert options.secret == KEY
    assert options.server == Address("conv.example", ANNOUNCE_PORT)
    assert parse_cmdline("p2v.server=10.1.1.1:7000").server == Address("10.1.1.1", 7000)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("ip=dhcp", IpConfig()),
        ("ip=off", IpConfig(mode="off")),
        ("ip=:::::eno2:dhcp", IpConfig(device="eno2")),
        ("ip=52:54:00:AA:BB:CC", IpConfig(device="52:54:00:aa:bb:cc")),
        (
            "ip=192.168.10.5::192.168.10.1:255.255.255.0::eno1:off:192.168.10.53",
            IpConfig("static", "eno1", "192.168.10.5/24", "192.168.10.1", ("192.168.10.53",)),
        ),
        (
            "ip=10.0.0.7::10.0.0.1:16::52:54:00:aa:bb:cc:none",
            IpConfig("static", "52:54:00:aa:bb:cc", "10.0.0.7/16", "10.0.0.1"),
        ),
    ],
)
def test_ip_option(option: str, expected: IpConfig) -> None:
    assert parse_cmdline(option).ip == expected


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("ip=10.0.0.300::10.0.0.1:24::eno1:off", "ip="),
        ("ip=:::::eno1:rarp", "ip=:::::eno1:rarp: autoconf .rarp. is not supported"),
        ("p2v.listen=host:notaport", "p2v.listen"),
        ("p2v.server=[::1", "p2v.server"),
        ("p2v.secret=1234", "p2v.secret"),
    ],
)
def test_bad_options_are_named(option: str, named: str) -> None:
    with pytest.raises(OptionError, match="^" + named.replace("[", r"\[")):
        parse_cmdline(option)


def test_a_bad_secret_is_never_repeated_in_the_message() -> None:
    with pytest.raises(OptionError) as error:
        parse_cmdline("p2v.secret=zz112233445566778899aabbccddeeff")
    assert "zz1122" not in str(error.value)


def test_secret_sources_in_order(tmp_path: Path) -> None:
    job, fw_cfg = tmp_path / "job", tmp_path / "fw_cfg"
    generated = find_secret(None, job, fw_cfg)
    assert generated.generated and len(generated.key) == 32
    assert find_secret(KEY, job, fw_cfg).source.startswith("from the kernel command line")
    fw_cfg.write_text("ffeeddcc-bbaa-9988-7766-554433221100\n")
    assert find_secret(KEY, job, fw_cfg).key == "ffeeddccbbaa99887766554433221100"
    job.write_text(KEY + "\n")
    found = find_secret(None, job, fw_cfg)
    assert (found.key, found.generated) == (KEY, False)
    assert found.source == "from the job medium"


def test_an_unusable_given_secret_stops_the_agent(tmp_path: Path) -> None:
    """A job medium with a broken secret must not fall back to a generated one."""
    job = tmp_path / "job"
    job.write_text("not a secret\n")
    with pytest.raises(SecretError, match="job medium"):
        find_secret(None, job, tmp_path / "none")


def _nic(root: Path, name: str, mac: str, kind: str = "1", device: bool = True) -> None:
    (root / name).mkdir()
    (root / name / "type").write_text(kind + "\n")
    (root / name / "address").write_text(mac + "\n")
    if device:
        (root / name / "device").mkdir()


def test_physical_links_and_choosing_one(tmp_path: Path) -> None:
    _nic(tmp_path, "lo", "00:00:00:00:00:00", kind="772", device=False)
    _nic(tmp_path, "br0", "52:54:00:00:00:09", device=False)
    _nic(tmp_path, "eno1", "52:54:00:AA:00:01")
    _nic(tmp_path, "eno2", "52:54:00:aa:00:02")
    links = network.physical_links(tmp_path)
    assert [link.name for link in links] == ["eno1", "eno2"]
    assert network.select_links(links, "") == links
    assert network.select_links(links, "52:54:00:aa:00:01") == links[:1]
    assert network.select_links(links, "eno2") == links[1:]
    with pytest.raises(OptionError, match=r"no NIC eth7; this machine has: eno1 \(52:54"):
        network.select_links(links, "eth7")


def _status(generated: bool) -> Status:
    inventory = Inventory(
        hostname="p2v-agent",
        machine=Machine(vendor="Dell Inc.", product="PowerEdge R640", serial="ABC1234"),
        disks=[
            Disk("sda", "/dev/sda", 480 << 30, model="SSD 480", serial="S1"),
            Disk("sdb", "/dev/sdb", 8 << 30, live_medium=True),
        ],
        nics=[Nic("eno1", "52:54:00:aa:00:01")],
    )
    return Status(
        version="1.0",
        inventory=inventory,
        listen=Address("0.0.0.0", 8443),
        addresses={"eno1": ["192.168.10.5/24"]},
        exported=["sda"],
        fingerprint=fingerprint(KEY),
        secret_source="made at boot" if generated else "from the job medium",
        shown_secret=KEY if generated else None,
        server=None,
    )


def test_screen_says_how_to_reach_the_agent() -> None:
    text = render(_status(generated=False))
    assert "192.168.10.5 port 8443" in text
    assert "sda  480.0 GiB SSD 480 S1" in text
    assert "not served sdb (this agent's own boot medium)" in text
    assert f"fingerprint {fingerprint(KEY)}" in text
    assert "p2v inventory --agent 192.168.10.5 --secret-file F" in text
    assert KEY not in text and KEY[:4] + "-" not in text  # a given secret is never shown


def test_screen_shows_a_generated_secret_grouped() -> None:
    text = render(_status(generated=True))
    assert "0011-2233-4455-6677-8899-aabb-ccdd-eeff" in text


def test_consoles_write_to_each_active_console(tmp_path: Path) -> None:
    active = tmp_path / "active"
    first, second = tmp_path / "tty0", tmp_path / "ttyS0"
    first.touch()
    second.touch()
    active.write_text("tty0 ttyS0\n")
    consoles = Consoles(active)
    assert consoles.devices == ["/dev/tty0", "/dev/ttyS0"]
    consoles.devices = [str(first), str(second)]
    consoles.say("hello")
    assert first.read_text() == second.read_text() == "p2v-agent: hello\n"
