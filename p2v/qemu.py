"""Finding the QEMU programs, their versions, and what qemu-img says of an image."""

import json
import re
import shutil
import subprocess
from typing import Any

from p2v.errors import ComponentError, MissingComponent

SYSTEM_EMULATOR = "qemu-system-x86_64"

# QEMU 7.2 (bookworm) corrupts guest memory during pre-copy migration under TCG;
# the dirty-tracking fix landed in 9.0.
MINIMUM_VERSION = (9, 0)

_PACKAGE_OF = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "qemu-nbd": "qemu-utils",
}


def find_program(name: str) -> str:
    """Absolute path of a QEMU program, or MissingComponent naming its package."""
    path = shutil.which(name)
    if path is None:
        package = _PACKAGE_OF.get(name, name)
        raise MissingComponent(
            name, f"install {package} from bookworm-backports (`make setup` does)"
        )
    return path


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, micro) from the first line of `qemu-* --version`."""
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"no QEMU version in {text!r}")
    major, minor, micro = match.groups()
    return int(major), int(minor), int(micro or 0)


def version(program: str = SYSTEM_EMULATOR) -> tuple[int, int, int]:
    out = subprocess.run(
        [find_program(program), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return parse_version(out)


def image_info(path: str) -> dict[str, Any]:
    """What `qemu-img info` says of an image file (format, virtual size, backing
    file), read while another process may hold it (-U); ComponentError when it
    cannot read it."""
    result = subprocess.run(
        [find_program("qemu-img"), "info", "--output=json", "-U", path],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ComponentError(f"qemu-img cannot read {path}: {lines[-1] if lines else ''}")
    info: dict[str, Any] = json.loads(result.stdout)
    return info
