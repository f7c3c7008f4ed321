"""UEFI boot entries and Secure Boot from recorded efivars."""

from __future__ import annotations

import struct
from pathlib import Path

from agent.inventory.model import Machine
from agent.inventory.probe import Probe
from agent.inventory.sources import firmware
from tests.unit.agent.machine import load_option, write_efivars


def test_load_option_with_file_path() -> None:
    entry = firmware.parse_load_option(4, load_option(1, "debian", "\\EFI\\debian\\shimx64.efi"))
    assert (entry.number, entry.description, entry.active) == (4, "debian", True)
    assert entry.path == "\\EFI\\debian\\shimx64.efi"


def test_load_option_without_file_and_inactive() -> None:
    entry = firmware.parse_load_option(1, load_option(0, "UEFI PXEv4", None))
    assert entry.path is None and not entry.active and entry.description == "UEFI PXEv4"


def test_boot_order() -> None:
    assert firmware.parse_boot_order(struct.pack("<3H", 4, 0, 1)) == [4, 0, 1]
    assert firmware.parse_boot_order(b"\x04") == []


def test_uefi_machine(tmp_path: Path) -> None:
    write_efivars(tmp_path, secure_boot=False)
    machine, probe = Machine(), Probe(root=tmp_path)
    firmware.read_firmware(probe, machine)
    assert machine.firmware == "uefi" and machine.secure_boot is False
    assert machine.boot_order == [4, 0, 1]
    assert [e.number for e in machine.boot_entries] == [0, 1, 4]
    assert any("Boot0002 is malformed" in n for n in probe.notes)


def test_bios_machine_and_unmounted_efivarfs(tmp_path: Path) -> None:
    machine = Machine()
    firmware.read_firmware(Probe(root=tmp_path), machine)
    assert machine.firmware == "bios" and machine.secure_boot is None
    (tmp_path / "sys/firmware/efi").mkdir(parents=True)
    machine, probe = Machine(), Probe(root=tmp_path)
    firmware.read_firmware(probe, machine)
    assert machine.firmware == "uefi" and machine.secure_boot is None
    assert any("efivarfs is not mounted" in n for n in probe.notes)
