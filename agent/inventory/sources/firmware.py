"""Firmware type, Secure Boot state and UEFI boot entries from efivarfs.

efivarfs files start with 4 bytes of variable attributes, then the payload. A boot
entry (BootNNNN) is an EFI_LOAD_OPTION: attributes (u32), length of the device path
list (u16), a NUL-terminated UTF-16 description, then the device path nodes; the
file path node (type 4, subtype 4) names the loader the entry starts.
"""

from __future__ import annotations

import re
import struct

from agent.inventory.model import BootEntry, Machine
from agent.inventory.probe import Probe

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
_LOAD_OPTION_ACTIVE = 0x1
_MEDIA_PATH, _FILE_PATH, _END = 4, 4, 0x7F


def _utf16z(data: bytes) -> tuple[str, int]:
    """A NUL-terminated UTF-16LE string and the bytes it took, NUL included."""
    for i in range(0, len(data) - 1, 2):
        if data[i : i + 2] == b"\0\0":
            return data[:i].decode("utf-16-le", errors="replace"), i + 2
    return data.decode("utf-16-le", errors="replace"), len(data)


def parse_load_option(number: int, payload: bytes) -> BootEntry:
    attributes, path_length = struct.unpack_from("<IH", payload)
    description, used = _utf16z(payload[6:])
    paths = payload[6 + used : 6 + used + path_length]
    files: list[str] = []
    pos = 0
    while pos + 4 <= len(paths):
        kind, subtype, length = struct.unpack_from("<BBH", paths, pos)
        if kind == _END or length < 4:
            break
        if kind == _MEDIA_PATH and subtype == _FILE_PATH:
            files.append(_utf16z(paths[pos + 4 : pos + length])[0])
        pos += length
    return BootEntry(
        number=number,
        description=description,
        path="".join(files) or None,
        active=bool(attributes & _LOAD_OPTION_ACTIVE),
    )


def parse_boot_order(payload: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(payload) // 2}H", payload[: len(payload) // 2 * 2]))


def read_firmware(probe: Probe, machine: Machine) -> None:
    if not probe.path("/sys/firmware/efi").is_dir():
        machine.firmware = "bios"
        return
    machine.firmware = "uefi"
    variables = probe.path("/sys/firmware/efi/efivars")
    if not variables.is_dir():
        probe.note("efivarfs is not mounted: Secure Boot state and boot entries unknown")
        return

    def payload(name: str) -> bytes | None:
        data = probe.read_bytes(variables / f"{name}-{EFI_GLOBAL}")
        return data[4:] if data is not None and len(data) > 4 else None

    secure = payload("SecureBoot")
    machine.secure_boot = bool(secure[0]) if secure else None
    if secure is None:
        probe.note("no SecureBoot variable: Secure Boot state unknown")
    order = payload("BootOrder")
    machine.boot_order = parse_boot_order(order) if order else []
    for path in sorted(
        variables.glob(f"Boot[0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f]-{EFI_GLOBAL}")
    ):
        number = int(re.match(r"Boot([0-9A-Fa-f]{4})", path.name).group(1), 16)  # type: ignore[union-attr]
        data = payload(path.name.split("-")[0])
        if data is None:
            continue
        try:
            machine.boot_entries.append(parse_load_option(number, data))
        except struct.error:
            probe.note(f"boot entry {path.name.split('-')[0]} is malformed; left out")
