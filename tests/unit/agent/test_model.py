"""The inventory record: round trip, and refusals of what it cannot read."""

from __future__ import annotations

import json

import pytest

from agent.inventory.model import (
    SCHEMA_VERSION,
    BootEntry,
    Disk,
    Filesystem,
    Inventory,
    LogicalVolume,
    Partition,
    SchemaError,
    VolumeGroup,
)
from agent.protocol import (
    Address,
    SecretError,
    fingerprint,
    generate_secret,
    normalize_secret,
)


def test_round_trip_keeps_nested_records() -> None:
    inv = Inventory(agent_version="1")
    inv.machine.boot_entries.append(BootEntry(1, "debian", "\\EFI\\debian\\grubx64.efi", True))
    disk = Disk(name="sda", path="/dev/sda", size_bytes=10, partition_table="gpt")
    disk.partitions.append(
        Partition(1, "sda1", 1, 5, "gpt", filesystem=Filesystem("ext4", uuid="u", used_bytes=1))
    )
    inv.disks.append(disk)
    inv.volume_groups.append(
        VolumeGroup("vg", None, 1, 0, 4, ["/dev/sda2"], [LogicalVolume("root", 1)])
    )
    back = Inventory.from_json(inv.to_json())
    assert back == inv
    assert isinstance(back.disks[0].partitions[0].filesystem, Filesystem)


def test_other_schema_version_is_refused() -> None:
    data = json.loads(Inventory().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match="schema version 2 is not supported"):
        Inventory.from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["", "[]", "{}", '{"schema_version": 1, "disks": [1]}'])
def test_not_an_inventory(text: str) -> None:
    with pytest.raises(SchemaError):
        Inventory.from_json(text)


def test_unknown_fields_from_a_newer_minor_agent_are_ignored() -> None:
    data = json.loads(Inventory().to_json())
    data["gpu"] = {"model": "x"}
    assert Inventory.from_json(json.dumps(data)) == Inventory()


def test_secrets() -> None:
    secret = generate_secret()
    key = normalize_secret(secret)
    assert len(key) == 32 and normalize_secret(f"  {secret.upper()}\n") == key
    assert generate_secret() != secret
    assert key not in fingerprint(key) and fingerprint(key) == fingerprint(key)
    with pytest.raises(SecretError, match="hex digits"):
        normalize_secret("not-a-secret-at-all-not-a-secret")
    with pytest.raises(SecretError, match="128 bits"):
        normalize_secret("abcd")


def test_addresses() -> None:
    assert Address.parse("10.0.0.5") == Address("10.0.0.5", 8443)
    assert Address.parse("srv:9000") == Address("srv", 9000)
    assert Address.parse("[fe80::1]:9000") == Address("fe80::1", 9000)
    assert str(Address.parse("[fe80::1]")) == "[fe80::1]:8443"
    assert Address.parse(":9000", default_host="0.0.0.0") == Address("0.0.0.0", 9000)
    assert Address.parse("fe80::1") == Address("fe80::1", 8443)  # bare IPv6: a host
    for bad in (":9000", "srv:0", "srv:http", "[fe80::1"):
        with pytest.raises(ValueError):
            Address.parse(bad)
