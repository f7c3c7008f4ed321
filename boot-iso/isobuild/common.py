"""Helpers shared by the layers: commands, hashes, the cache and its lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

BOOT_ISO = Path(__file__).resolve().parent.parent
REPO = BOOT_ISO.parent
SUITE = "bookworm"
VOLUME_LABEL = "P2V-AGENT"  # agent.protocol.LIVE_LABEL: the agent never exports it


class BuildError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"iso: {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | os.PathLike[str]], **kwargs: object) -> str:
    """Run a command; its output is shown only when it fails."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise BuildError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return str(done.stdout)


def cache_dir() -> Path:
    """Outside the checkout, so a fresh clone reuses what an earlier run built."""
    env = os.environ.get("P2V_ISO_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "p2v" / "iso"
    base.mkdir(parents=True, exist_ok=True)
    return base


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def digest(files: Iterable[Path], *extra: str) -> str:
    """Short hash of files (names relative to the repository, and contents) and strings."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    for text in extra:
        h.update(text.encode() + b"\0")
    return h.hexdigest()[:16]


def debian_mirror() -> str:
    """The mirror apt on this host uses for the suite."""
    out = run(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)"])
    for line in out.splitlines():
        uri, _, release = line.partition(" ")
        if release == SUITE:
            return uri
    raise BuildError(f"apt has no source for {SUITE}; cannot install the live system")


def recipe_lines(path: Path) -> list[str]:
    """The non-comment, non-empty lines of a recipe file."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def pack_cpio(root: Path, output: Path, compress: Sequence[str]) -> None:
    """An initramfs part: newc cpio of `root` (owned by root), compressed by `compress`."""
    names = run(["find", ".", "-mindepth", "1"], cwd=root).splitlines()
    listing = "\n".join(sorted(names)) + "\n"
    with open(output, "wb") as out:
        cpio = subprocess.Popen(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        packer = subprocess.Popen(list(compress), stdin=cpio.stdout, stdout=out)
        assert cpio.stdin is not None and cpio.stdout is not None
        cpio.stdout.close()
        cpio.stdin.write(listing.encode())
        cpio.stdin.close()
        if cpio.wait() != 0 or packer.wait() != 0:
            raise BuildError(f"packing {root} into {output} failed")
