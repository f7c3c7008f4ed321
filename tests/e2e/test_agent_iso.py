"""The agent ISO booted on a stand-in physical server whose hardware we set: the
inventory read through one forwarded port reports exactly that hardware, and the
served fixture disk reads back with the fixture image's digest.

Slow: each boot runs the ISO under QEMU (TCG on hosts where KVM does not work).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.inventory.model import Inventory
from agent.protocol import generate_secret
from tests.conftest import fixture_image, free_port
from tests.e2e.converted import check_converted
from tests.fixtures import standin
from tests.fixtures.standin import Drive, Hardware
from tests.integration.transfer.disks import make_disk, p2v, scattered

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture(scope="session")
def agent_iso() -> Path:
    """`make iso`: cached by the hash of its recipe, seconds when nothing changed."""
    subprocess.run(["make", "--no-print-directory", "iso"], cwd=REPO, check=True)
    return REPO / "build" / "p2v-agent.iso"


@pytest.fixture(scope="module")
def hardware(tmp_path_factory: pytest.TempPathFactory) -> Hardware:
    """The bios-ext4 sample server's disk on SATA, a blank NVMe disk and an NVMe disk
    holding scattered random data. Small disks: every byte read crosses an emulated
    NIC and TLS in an emulated CPU. One SATA disk only: the live kernel probes SATA
    ports in parallel, so with two the fixture would not always be sda, the name its
    fstab uses."""
    disks = tmp_path_factory.mktemp("disks")
    blank, nvme = disks / "blank.qcow2", disks / "nvme.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", blank, "64M"], check=True)
    make_disk(nvme, 256 * MiB, scattered(256 * MiB, 6, 2 * MiB))
    return Hardware(
        drives=(
            Drive(fixture_image("bios-ext4"), "sata", "P2V-SATA-FIXTURE"),
            Drive(blank, "nvme", "P2V-NVME-BLANK"),
            Drive(nvme, "nvme", "P2V-NVME-0"),
        )
    )


@pytest.fixture(scope="module", params=["bios-cd", "uefi-secure-usb"])
def agent(
    request: pytest.FixtureRequest,
    agent_iso: Path,
    hardware: Hardware,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, standin.Running, Path]]:
    """(boot kind, the running stand-in, the secret file) — one boot per kind:
    - bios-cd: the ISO as a CD, the secret through QEMU's fw_cfg;
    - uefi-secure-usb: a job ISO (`make job-iso`, the secret on the medium) written to
      a USB stick, OVMF enforcing Secure Boot (Debian's signed shim, GRUB, kernel)."""
    workdir = tmp_path_factory.mktemp(request.param)
    secret = generate_secret()
    secret_file = workdir / "conversion-host-secret"
    secret_file.write_text(secret + "\n")
    iso, given = agent_iso, secret
    if request.param == "uefi-secure-usb":
        iso, given = workdir / "job.iso", None
        subprocess.run(
            ["make", "--no-print-directory", "job-iso", f"SECRET_FILE={secret_file}",
             f"JOB_ISO={iso}"],
            cwd=REPO, check=True,
        )  # fmt: skip
        assert iso.stat().st_mode & 0o077 == 0, "a job ISO holds a secret: owner only"
    with standin.booted(hardware, iso, request.param, workdir, given) as running:
        yield request.param, running, secret_file


def inventory_of(running: standin.Running, secret_file: Path) -> Inventory:
    done = p2v(
        "inventory", "--agent", f"127.0.0.1:{running.port}", "--secret-file", str(secret_file),
        "--json", check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stderr}\nagent console:\n{running.console()[-3000:]}"
    return Inventory.from_json(done.stdout)


def test_inventory_reports_the_hardware_it_runs_on(
    agent: tuple[str, standin.Running, Path], hardware: Hardware
) -> None:
    boot, running, secret_file = agent
    inv = inventory_of(running, secret_file)

    assert inv.machine.firmware == ("uefi" if boot.startswith("uefi") else "bios")
    assert bool(inv.machine.secure_boot) == ("secure" in boot)
    assert (inv.machine.vendor, inv.machine.product) == (hardware.vendor, hardware.product)
    assert inv.machine.serial == hardware.serial
    assert inv.machine.uuid == hardware.uuid
    assert (inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads) == (2, 2, 2)
    assert inv.memory.installed_bytes == hardware.memory_mib * MiB
    # What the kernel manages: all of it but what firmware and the kernel keep back.
    assert inv.memory.usable_bytes is not None
    assert (
        hardware.memory_mib * MiB - 256 * MiB < inv.memory.usable_bytes <= hardware.memory_mib * MiB
    )

    assert sorted(nic.mac for nic in inv.nics) == sorted(hardware.macs)
    assert all(nic.driver == "e1000" for nic in inv.nics)

    by_serial = {d.serial: d for d in inv.disks}
    fixture, blank, nvme = hardware.drives
    assert by_serial[fixture.serial].size_bytes == fixture.image.stat().st_size
    assert by_serial[fixture.serial].transport == "sata"
    assert by_serial[blank.serial].size_bytes == 64 * MiB
    assert by_serial[blank.serial].transport == "nvme"
    assert by_serial[nvme.serial].size_bytes == 256 * MiB
    assert by_serial[nvme.serial].transport == "nvme"
    assert_partitions_match(by_serial[fixture.serial], fixture.image)

    live = [d for d in inv.disks if d.live_medium]
    if boot == "uefi-secure-usb":
        # Booted from a USB stick: the stick is listed as the live medium...
        assert [d.transport for d in live] == ["usb"]
        # ...and the agent does not serve it.
        refused = p2v(
            "checksum", f"agent://127.0.0.1:{running.port}/{live[0].name}",
            "--secret-file", str(secret_file), check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert live[0].name in refused.stderr
    else:
        assert live == []  # a CD drive is not a disk of the server

    console = running.console()
    assert ("from the job medium" if boot == "uefi-secure-usb" else "from QEMU fw_cfg") in console
    key = secret_file.read_text().strip()
    assert key not in console and key.replace("-", "") not in console


def test_a_wrong_secret_is_refused(
    agent: tuple[str, standin.Running, Path], tmp_path: Path
) -> None:
    boot, running, _ = agent
    wrong = tmp_path / "wrong"
    wrong.write_text(generate_secret() + "\n")
    refused = p2v(
        "inventory", "--agent", f"127.0.0.1:{running.port}", "--secret-file", str(wrong),
        check=False,
    )  # fmt: skip
    assert refused.returncode == 6
    assert "refused the secret" in refused.stderr


def assert_partitions_match(disk: object, image: Path) -> None:
    """The partitions the agent reports, against sfdisk and blkid run on the image."""
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", image], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    sector = table.get("sectorsize", 512)
    expected = [(p["start"] * sector, p["size"] * sector) for p in table["partitions"]]
    partitions = disk.partitions  # type: ignore[attr-defined]
    assert disk.partition_table == "msdos"  # type: ignore[attr-defined]
    assert [(p.start_bytes, p.size_bytes) for p in partitions] == expected
    for part in partitions:
        probed = subprocess.run(
            ["blkid", "-p", "-o", "export", "--offset", str(part.start_bytes),
             "--size", str(part.size_bytes), image],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        values = dict(line.split("=", 1) for line in probed.splitlines() if "=" in line)
        assert part.filesystem is not None
        assert (part.filesystem.type, part.filesystem.uuid) == (values["TYPE"], values["UUID"])


def test_served_disk_reads_back_with_the_image_digest(
    agent: tuple[str, standin.Running, Path], hardware: Hardware
) -> None:
    boot, running, secret_file = agent
    if boot != "bios-cd":
        pytest.skip("the digest is checked once; the boot kind does not change the export")
    inv = inventory_of(running, secret_file)
    nvme = hardware.drives[2]  # the one with data
    name = next(d.name for d in inv.disks if d.serial == nvme.serial)
    before = p2v("checksum", str(nvme.image)).stdout.split()[0]
    served = p2v(
        "checksum", f"agent://127.0.0.1:{running.port}/{name}", "--secret-file", str(secret_file),
        timeout=1200,
    ).stdout.split()[0]  # fmt: skip
    assert served == before
    assert p2v("checksum", str(nvme.image)).stdout.split()[0] == before


def test_convert_through_the_agent_boots_on_virtio(
    agent: tuple[str, standin.Running, Path], hardware: Hardware, out: Path
) -> None:
    """The path of `make demo`: `p2v convert --agent` reads the inventory and the disks
    from the agent, and the guest keeps the server's identity: its hostname (the
    default name), CPUs, memory, disks in the same order, NICs with their MACs."""
    boot, running, secret_file = agent
    if boot != "bios-cd":
        pytest.skip("converted once: bios-ext4 is a BIOS server")
    fixture = hardware.drives[0]
    before = p2v("checksum", str(fixture.image)).stdout.split()[0]
    done = p2v(
        "convert", "--agent", f"127.0.0.1:{running.port}", "--secret-file", str(secret_file),
        "--output-dir", str(out), "--verify-boot", "--json", timeout=1400,
    )  # fmt: skip
    result = json.loads(done.stdout)
    check_converted("bios-ext4", result, done.stderr)

    profile = result["plan"]["profile"]
    assert profile["name"] == "p2v-bios-ext4"  # the guest's hostname
    assert (profile["sockets"] * profile["cores"], profile["memory_mib"]) == (
        hardware.sockets,
        hardware.memory_mib,
    )
    # The three disks in the server's order: the fixture (sda, booted), then the NVMe
    # disks (the live kernel numbers those in the order it finds them).
    assert [d["target"] for d in profile["disks"]] == ["vda", "vdb", "vdc"]
    sizes = [d["size_bytes"] for d in profile["disks"]]
    assert sizes[0] == fixture.image.stat().st_size and sorted(sizes[1:]) == [64 * MiB, 256 * MiB]
    assert [d["boot"] for d in profile["disks"]] == [True, False, False]
    assert sorted(mac for mac, _ in result["plan"]["nics"]) == sorted(hardware.macs)
    origins = [d["origin"] for d in result["plan"]["disks"]]
    assert origins == [
        f"agent://127.0.0.1:{running.port}/{n}" for n in ("sda", "nvme0n1", "nvme1n1")
    ]
    assert sum(c["copied"] for c in result["copies"]) < fixture.image.stat().st_size / 2
    assert p2v("checksum", str(fixture.image)).stdout.split()[0] == before


def test_unattended_agent_announces_itself(agent_iso: Path, tmp_path: Path) -> None:
    """Boot options as an operator types them: a static address on the NIC named by its
    MAC, the secret and the conversion host on the command line. The agent announces
    itself and `p2v agents` lists it once it has checked it with the secret."""
    hw = Hardware()
    secret = generate_secret()
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    port, announce_port = free_port(), free_port()
    waiter = subprocess.Popen(
        [sys.executable, "-m", "p2v.cli", "agents", "--listen", f"127.0.0.1:{announce_port}",
         "--secret-file", str(secret_file), "--count", "1", "--timeout", "400", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    options = (
        f"options:ip=10.0.2.50::10.0.2.2:24::{hw.macs[0]}:off p2v.listen=:{port} "
        f"p2v.secret={secret} p2v.server={standin.ANNOUNCE_ADDRESS}"
    )
    net = standin.Network(guest=f"10.0.2.50:{port}", host_port=port, announce_port=announce_port)
    workdir = tmp_path / "machine"
    workdir.mkdir()
    try:
        with standin.booted(hw, agent_iso, options, workdir, secret=None, net=net) as running:
            out, err = waiter.communicate(timeout=120)
            inv = inventory_of(running, secret_file)
            console = running.console()
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    record = json.loads(out.splitlines()[0])
    assert record["agent"] == f"127.0.0.1:{port}"
    assert (record["serial"], record["uuid"]) == (hw.serial, hw.uuid)
    by_mac = {nic.mac: nic for nic in inv.nics}
    assert "10.0.2.50/24" in by_mac[hw.macs[0]].addresses
    assert not any(a.startswith("10.") for a in by_mac[hw.macs[1]].addresses)
    assert "from the kernel command line" in console
    assert f"announced to {standin.ANNOUNCE_ADDRESS}:8444: ok" in console
