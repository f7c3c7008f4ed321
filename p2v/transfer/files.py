"""Files from one machine to another over SSH, digests checked: the CRIU images of a
process move's pre-dump passes (its final images travel inside the move itself:
p2v/host/criu.py).

The source's tar streams through this process into the destination's tar (the two
machines need no way to each other, nor keys for each other); meanwhile the source
lists each file's SHA-256, and the destination checks its copies against that list.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass

from p2v.errors import TransferError
from p2v.host.ssh import Shell

CHUNK = 1 << 20


@dataclass(frozen=True)
class Moved:
    bytes: int  # of the tar stream
    seconds: float


def move(src: Shell, dst: Shell, root: str, paths: list[str], timeout: float) -> Moved:
    """`paths` (relative to `root` on both sides; directories whole) from `src` to
    `dst`, the copies checked there against the source's digests."""
    if not paths:
        return Moved(0, 0.0)
    q = shlex.quote
    names = " ".join(q(p) for p in paths)
    started = time.monotonic()
    hashing = src.popen(
        f"cd {q(root)} && find {names} -type f -print0 | xargs -0 -r sha256sum",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    sender = src.popen(f"tar -C {q(root)} -cf - -- {names}", stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    receiver = dst.popen(f"mkdir -p {q(root)} && tar -C {q(root)} -xf -",
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)  # fmt: skip
    total = 0
    try:
        assert sender.stdout is not None and receiver.stdin is not None
        deadline = started + timeout
        while chunk := sender.stdout.read(CHUNK):
            receiver.stdin.write(chunk)
            total += len(chunk)
            if time.monotonic() > deadline:
                raise TransferError(f"{src.peer} -> {dst.peer}: not done in {timeout:g} s")
        receiver.stdin.close()
        left = max(1.0, deadline - time.monotonic())
        manifest, hash_errors = hashing.communicate(timeout=left)
        for proc, side in ((sender, src.peer), (receiver, dst.peer)):
            if proc.wait(timeout=left) != 0:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise TransferError(f"{side}: tar failed: {err.strip()[-300:]}")
        if hashing.returncode != 0:
            raise TransferError(f"{src.peer}: sha256sum failed: {hash_errors.decode().strip()}")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TransferError(f"{src.peer} -> {dst.peer}: {error}") from None
    finally:
        for proc in (hashing, sender, receiver):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    check(dst, root, manifest.decode(), timeout)
    return Moved(total, time.monotonic() - started)


def check(dst: Shell, root: str, manifest: str, timeout: float) -> None:
    code = dst.popen(f"cd {shlex.quote(root)} && sha256sum --quiet --strict -c -",
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT)  # fmt: skip
    out, _ = code.communicate(manifest.encode(), timeout=timeout)
    if code.returncode != 0:
        raise TransferError(f"{dst.peer}: copies differ from the source: "
                            f"{out.decode(errors='replace').strip()[-300:]}")  # fmt: skip
