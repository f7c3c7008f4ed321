"""Every verb, given bad paths, unwritable places, unreachable URIs and wrong values:
one clear line, a non-zero exit, no traceback, and no job recorded for what was
refused before it started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.transfer.disks import p2v

DEAD_URI = f"qemu+tcp://127.0.0.1:{free_port()}/system"  # nothing listens there


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A journal of this test's own, and a small image to point commands at."""
    monkeypatch.setenv("P2V_HOME", str(tmp_path / "state"))
    with open(tmp_path / "disk.raw", "wb") as f:
        f.truncate(64 << 20)
    (tmp_path / "secret").write_text("0123456789abcdef0123456789abcdef\n")
    return tmp_path


REFUSED = [
    # (argv, exit code, what the message says); {t} is the test's directory
    (["copy", "/nonexistent", "{t}/out.raw"], 2, "source /nonexistent: no such file"),
    (["copy", "{t}/disk.raw", "/proc/x.raw"], 2, "cannot make the target /proc/x.raw"),
    (["copy", "{t}/disk.raw", "/proc/nope/x.raw"], 2, "target directory /proc/nope does not"),
    (["copy", "{t}/disk.raw", "{t}", "--overwrite"], 2, "is a directory"),
    (["copy", "{t}/disk.raw", "{t}/out.raw", "--connections", "0"], 2, "not a whole number"),
    (["copy", "{t}/disk.raw", "{t}/out.raw", "--bwlimit", "abc"], 2, "not a size: 'abc'"),
    (["copy", "{t}/disk.raw", "{t}/out.raw", "--bwlimit", "0"], 2, "a rate is above 0"),
    (["copy", "{t}/disk.raw", "{t}/out.raw", "--io-timeout", "-1"], 2, "not a number of sec"),
    (["copy", "{t}/disk.raw", "{t}/out.raw", "--free-map", "/nonexistent"], 2,
     "--free-map /nonexistent: No such file"),
    (["copy", "nbd://127.0.0.1:1/x", "{t}/out.raw"], 1, "Connection refused"),
    (["copy", "--resume", "copy-00000000"], 2, "no job 'copy-00000000'"),
    (["copy", "{t}/disk.raw", "{t}/out.raw", "--every", "1d"], 2,
     "fails from its second run, which finds the target there"),
    (["backup", "vm", "--to", "{t}/b", "--nbd-port", "70000"], 2, "not a TCP port"),
    (["backup", "list", "{t}"], 2, "holds no backups (catalog.sqlite is missing)"),
    (["backup", "prune", "{t}"], 2, "prune needs --keep-last"),
    (["restore", "{t}", "--to", "{t}/x.raw", "--check"], 2, "one of --to PATH, --define"),
    (["restore", "--to", "{t}/x.raw"], 2, "restore needs DIR"),
    (["restore", "--resume", "restore-00000000", "{t}"], 2, "takes the job's own directory"),
    (["restore", "--resume", "restore-00000000"], 2, "no job 'restore-00000000'"),
    (["checksum", "agent://127.0.0.1:1/sda", "--secret-file", "/nonexistent"], 2,
     "cannot read secret file /nonexistent"),
    (["inventory", "--agent", "127.0.0.1:1", "--secret-file", "{t}/secret"], 6,
     "cannot reach the agent at 127.0.0.1:1"),
    (["history", "--limit", "0"], 2, "not a whole number above 0"),
    (["agents", "--listen", "127.0.0.1:1", "--secret-file", "{t}/disk.raw"], 2,
     "a secret is made of hex digits"),
    (["convert", "--disk", "/nonexistent", "--output-dir", "{t}/out"], 2,
     "/nonexistent: no such file"),
    (["convert", "--disk", "{t}/disk.raw", "--output-dir", "/proc/x"], 2,
     "cannot make the directory /proc/x"),
    (["convert", "--disk", "{t}/disk.raw", "--output-dir", "{t}/disk.raw"], 2,
     "is not a directory"),
    (["convert", "--disk", "{t}/disk.raw", "--output-dir", "{t}/out", "--vcpus", "0"], 2,
     "--vcpus must be 1 or more"),
    (["convert", "--disk", "{t}/disk.raw", "--output-dir", "{t}/out", "--network", "wifi"], 2,
     "--network wifi: use user"),
    (["convert", "--disk", "{t}/disk.raw", "--output-dir", "{t}/out", "--inventory", "/no"], 2,
     "--inventory /no: No such file"),
    (["convert", "--disk", "{t}/disk.raw", "--target", "kvm", "-c", DEAD_URI, "--dry-run"],
     4, f"libvirt at {DEAD_URI} does not answer"),
    (["convert", "--disk", "{t}/disk.raw", "--target", "kvm", "-c", DEAD_URI,
      "--storage", "{t}/out"], 2, "--storage is a directory of this host"),
    (["convert", "--disk", "{t}/disk.raw", "--target", "kvm", "--pool", "default",
      "--storage", "{t}/out"], 2, "--pool and --storage: choose one"),
    (["convert", "--disk", "{t}/disk.raw", "--output-dir", "{t}/out", "--start"], 2,
     "--start needs --target kvm"),
    (["convert", "--resume", "convert-00000000", "--name", "x"], 2, "--name cannot change"),
    (["convert", "--resume", "convert-00000000"], 2, "no job 'convert-00000000'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "says"), REFUSED, ids=[" ".join(a)[:60] for a, _, _ in REFUSED]
)
def test_refused_in_one_line_with_nothing_recorded(
    home: Path, argv: list[str], code: int, says: str
) -> None:
    done = p2v(*(a.format(t=home) for a in argv), check=False, timeout=60)
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert p2v("history").stdout.startswith("no jobs"), "a refused command records nothing"
    assert not (home / "out").exists(), "a refused command makes nothing"
