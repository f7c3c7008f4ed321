"""Finding the QEMU programs and their versions."""

import re
import shutil
import subprocess

from p2v.errors import MissingComponent

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
