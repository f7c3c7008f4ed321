"""The plan's decisions and refusals, from facts given directly (no guest needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.inventory.model import Cpu, Disk, Inventory, Machine, Memory, Nic
from imagebuilder.fixups.linux import GuestOS
from imagebuilder.profile import Overrides
from p2v.convert.disks import SourceDisk
from p2v.convert.plan import Plan, PlanError, check_space, guest_name, make_plan
from p2v.convert.sources import disk_order

GiB = 1 << 30


def server() -> tuple[Inventory, list[SourceDisk]]:
    inventory = Inventory(
        machine=Machine(firmware="uefi"),
        cpu=Cpu(sockets=2, cores=4, threads=8),
        memory=Memory(installed_bytes=8 * GiB),
        disks=[Disk("sda", "/dev/sda", 40 * GiB), Disk("nvme0n1", "/dev/nvme0n1", 20 * GiB)],
        nics=[Nic("eno1", "AA:BB:CC:00:11:22"), Nic("eno2", "aa:bb:cc:00:11:23")],
    )
    disks = [
        SourceDisk("sda", "nbd+unix:///sda?socket=/s", 40 * GiB, "raw", "agent://h:8443/sda"),
        SourceDisk("nvme0n1", "nbd+unix:///nvme0n1?socket=/s", 20 * GiB, "raw"),
    ]
    return inventory, disks


def guest(kind: str = "linux") -> GuestOS:
    return GuestOS("/dev/sda2", kind, "debian", "12.0", "web1.example.com", {"/": "/dev/sda2"})


def test_the_plan_keeps_the_servers_identity_and_survives_the_journal() -> None:
    inventory, disks = server()
    plan = make_plan(
        inventory, disks, guest(), name="web1", overrides=Overrides(),
        configured_nics=["eno1"], used_bytes=3 * GiB,
    )  # fmt: skip
    p = plan.profile
    assert (p.firmware, p.sockets, p.cores, p.threads, p.memory_mib) == ("uefi", 2, 2, 2, 8192)
    assert [(d.source, d.target) for d in p.disks] == [("sda", "vda"), ("nvme0n1", "vdb")]
    assert plan.nics == [("aa:bb:cc:00:11:22", "eno1"), ("aa:bb:cc:00:11:23", "eno2")]
    assert "agent://h:8443/sda (40.0 GiB) -> vda virtio, boot" in plan.describe()
    # What --resume reads back from the journal is the same plan.
    again = Plan.from_json(plan.to_json())
    assert again == plan


def test_a_guest_that_is_not_linux_is_refused_with_what_it_is() -> None:
    inventory, disks = server()
    with pytest.raises(PlanError) as refused:
        make_plan(
            inventory, disks, guest("windows"), name="w", overrides=Overrides(),
            configured_nics=[], used_bytes=0,
        )  # fmt: skip
    assert (
        str(refused.value) == "the disks hold windows (debian); this version converts Linux guests"
    )
    assert refused.value.exit_code == 7


def test_a_target_without_room_for_the_data_is_refused() -> None:
    check_space(Path("/big"), free=10 * GiB, used=9 * GiB)  # 10% margin: fits
    with pytest.raises(PlanError) as refused:
        check_space(Path("/small"), free=1 * GiB, used=3 * GiB)
    assert str(refused.value) == (
        "/small has 1.0 GiB free; the guest holds 3.0 GiB of data: make room or choose "
        "another --output-dir, --storage or --pool"
    )


@pytest.mark.parametrize(
    ("hostname", "name"),
    [("web1.example.com", "web1"), ("db_2", "db_2"), ("localhost", "p2v-guest"),
     ("", "p2v-guest"), ("bad name!", "bad-name")],
)  # fmt: skip
def test_the_default_name_is_the_guests_short_hostname(hostname: str, name: str) -> None:
    assert guest_name(hostname) == name


def test_the_boot_disk_is_the_one_the_plan_found() -> None:
    inventory, disks = server()
    plan = make_plan(
        inventory, disks, guest(), name="web1", overrides=Overrides(),
        configured_nics=[], used_bytes=0, boot_disk=1,
    )  # fmt: skip
    assert [d.boot for d in plan.profile.disks] == [False, True]


def test_an_agents_disks_are_taken_in_the_order_the_guest_names_them() -> None:
    names = ["nvme0n1", "sdaa", "sdb", "nvme1n1", "sda"]
    assert sorted(names, key=disk_order) == ["sda", "sdb", "sdaa", "nvme0n1", "nvme1n1"]
