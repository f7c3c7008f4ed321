"""Sizes as people write them (4G, 512M, 1.5T) and as people read them, and times as
people read them."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from p2v.errors import InputError

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from '4096', '64K', '1.5G', '10MiB' (binary multiples)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise InputError(f"not a size: {text!r} (examples: 4096, 64K, 512M, 4G)")
    return int(float(match.group(1)) * _SUFFIXES[match.group(2).upper()])


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_time(seconds: float, tz: tzinfo | None = None) -> str:
    """A time (seconds since the epoch) in `tz`, local time by default."""
    return datetime.fromtimestamp(seconds, tz).strftime("%Y-%m-%d %H:%M:%S")
