"""The final dump's protocol, run here with a stand-in `criu` that calls the action
script as CRIU does after writing its images: p2v gets the images and their digests
on the session, and only a `go` lets CRIU end the program; anything else (an
`abort`, or p2v's session closing) makes the hook fail, which is what has CRIU thaw
the program where it was."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from p2v.host import criu

# Writes two images and a `parent` link the way a dump does, then runs the action
# script given with --action-script; its status is CRIU's answer (non-zero: thawed).
STAND_IN = """#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in --action-script) script=$2; shift ;; -D) dir=$2; shift ;; esac
	shift
done
echo page-data >"$dir/pages-1.img"
echo core >"$dir/core-1.img"
ln -s ../1 "$dir/parent"
echo log >"$dir/dump.log"
CRTOOLS_SCRIPT_ACTION=post-dump "$script" || exit 1
echo ended >"$dir/../ended"
"""


def _final_dump(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    (bin_dir / "criu").write_text(STAND_IN)
    (bin_dir / "criu").chmod(0o755)
    opened = tmp_path / "svc.log"
    opened.write_text("the service's log\n")
    script = criu.install_script(str(work), {"ADDRESS": "", "SOURCE_DEV": "", "UNIT": ""},
                                 [str(opened)])  # fmt: skip
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    (work / "final").mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["sh", "-c", f"cd {work} && exec ./final-dump {work} -t 1 -D final"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
    )  # fmt: skip
    return proc, work


def _images(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    header = proc.stdout.readline().decode().split()
    assert header[0] == "P2V-DUMPED"
    data = b""
    while len(data) < int(header[1]):
        chunk = proc.stdout.read(int(header[1]) - len(data))
        assert chunk, f"the images stopped after {len(data)} of {header[1]} bytes"
        data += chunk
    return data


def test_a_go_ends_it_after_the_images_and_their_digests_came(tmp_path: Path) -> None:
    proc, work = _final_dump(tmp_path)
    data = _images(proc)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        here = str(work).lstrip("/")
        assert f"{here}/final/pages-1.img" in names and f"{here}/final/parent" in names
        assert f"{here}/final/dump.log" not in names  # CRIU still writes it
        assert str(tmp_path / "svc.log").lstrip("/") in names
        sums = tar.extractfile(f"{here}/final.sha256")
        assert sums is not None
        listed = dict(reversed(line.split("  ", 1)) for line in sums.read().decode().splitlines())
    page = hashlib.sha256(b"page-data\n").hexdigest()
    assert listed[f"{here}/final/pages-1.img"] == page
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    assert proc.stdout is not None
    assert criu._readline(proc.stdout, proc, 30) == b"P2V-DUMP-EXIT 0"
    proc.wait(timeout=30)
    assert (work / "ended").exists()


@pytest.mark.parametrize("answer", [b"abort\n", b""], ids=["abort", "p2v-gone"])
def test_anything_but_go_has_criu_thaw_it(tmp_path: Path, answer: bytes) -> None:
    proc, work = _final_dump(tmp_path)
    _images(proc)
    assert proc.stdin is not None
    proc.stdin.write(answer)
    proc.stdin.close()  # p2v-gone: the session's end is all the hook hears
    assert proc.stdout is not None
    assert criu._readline(proc.stdout, proc, 30) == b"P2V-DUMP-EXIT 1"
    proc.wait(timeout=30)
    assert not (work / "ended").exists()
