"""The contract between the agent and the conversion host.

One TCP port carries everything: an NBD server that requires TLS with a pre-shared
key (TLS-PSK, done by GnuTLS in nbdkit and libnbd). The inventory is an export of
its own, next to one read-only export per disk, named by the disk's kernel name.

The secret is 128 random bits written as 32 hex digits in groups of four, so that an
operator can read it off the server's screen and type it on the conversion host. It
is used as the PSK itself; the only thing shown elsewhere is its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8443
INVENTORY_EXPORT = "inventory"
PSK_IDENTITY = "p2v"
LIVE_LABEL = "P2V-AGENT"  # volume label of the agent's boot medium
SECRET_BITS = 128
# Unattended mode: agents announce themselves to `p2v agents --listen` on this port.
ANNOUNCE_PORT = 8444
ANNOUNCE_VERSION = 1
# Beside each disk DISK, an export DISK.zeros holds the ZeroMap of what the agent has
# scanned of it so far (a JSON record).
ZEROS_SUFFIX = ".zeros"
ZERO_MAP_VERSION = 1


class SecretError(ValueError):
    pass


@dataclass(frozen=True)
class Address:
    """Where the agent listens, or where the conversion host finds it."""

    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str, default_host: str = "", default_port: int = DEFAULT_PORT) -> Address:
        """HOST, HOST:PORT, :PORT (with a default host) or [IPv6]:PORT."""
        host, port = text, str(default_port)
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: missing ]")
            host, rest = text[1:end], text[end + 1 :]
            if rest:
                port = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, port = text.split(":")
        host = host or default_host
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not HOST[:PORT]")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def generate_secret() -> str:
    digits = secrets.token_hex(SECRET_BITS // 8)
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def normalize_secret(text: str) -> str:
    """The hex key from a secret as typed: case, spaces and dashes do not matter."""
    key = re.sub(r"[\s-]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]+", key or "-"):
        raise SecretError("a secret is made of hex digits (0-9, a-f), optionally grouped by dashes")
    if len(key) * 4 < SECRET_BITS:
        raise SecretError(
            f"a secret needs at least {SECRET_BITS} bits ({SECRET_BITS // 4} hex digits)"
        )
    return key


def read_secret_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SecretError(f"cannot read secret file {path}: {e.strerror}") from None
    try:
        return normalize_secret(text)
    except SecretError as e:
        raise SecretError(f"secret file {path}: {e}") from None


def fingerprint(key: str) -> str:
    """What may be shown of a secret: enough to tell two apart, nothing to rebuild it."""
    digest = hashlib.sha256(b"p2v-agent-secret:" + bytes.fromhex(key)).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def write_psk_file(directory: Path, key: str) -> Path:
    """A GnuTLS PSK file (identity:hexkey) readable by its owner only."""
    path = directory / "psk"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{PSK_IDENTITY}:{key}\n")
    return path


def zero_map_export(disk: str) -> str:
    return disk + ZEROS_SUFFIX


@dataclass
class ZeroMap:
    """The runs of zeros the agent found on a disk: [offset, length] pairs, sorted,
    covering [0, scanned). What lies past `scanned` is not known yet."""

    size: int
    scanned: int = 0
    runs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.scanned >= self.size

    @property
    def zero_bytes(self) -> int:
        return sum(length for _, length in self.runs)

    def to_json(self) -> str:
        return json.dumps(
            {"version": ZERO_MAP_VERSION, "size": self.size, "scanned": self.scanned,
             "runs": self.runs}
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> ZeroMap:
        """Raises ValueError for a record that is not a zero map this version reads."""
        try:
            data = json.loads(text)
            if data.get("version") != ZERO_MAP_VERSION:
                raise ValueError(f"zero map version {data.get('version')} is not supported")
            runs = [(int(offset), int(length)) for offset, length in data["runs"]]
            zero_map = cls(int(data["size"]), int(data["scanned"]), runs)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a zero map: {e}") from None
        end = 0
        for offset, length in zero_map.runs:
            if offset < end or length <= 0 or offset + length > zero_map.scanned:
                raise ValueError("a zero map with runs out of order or out of range")
            end = offset + length
        return zero_map
