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


def create_overlay(path: str, backing: str) -> None:
    """A new qcow2 file at `path` that reads through to the qcow2 `backing` until
    written."""
    _img(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, path], path)


def rebase_unsafe(overlay: str, backing: str) -> None:
    """Point the qcow2 `overlay` at the qcow2 `backing`, which must hold the same bytes
    as its backing file now (a copy of it elsewhere): the data is not looked at."""
    _img(["rebase", "-u", "-F", "qcow2", "-b", backing, overlay], overlay)


def _img(argv: list[str], path: str) -> None:
    done = subprocess.run([find_program("qemu-img"), *argv], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    if done.returncode != 0:
        raise ComponentError(f"qemu-img {argv[0]} of {path}: {done.stderr.strip()}")
