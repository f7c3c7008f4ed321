"""`p2v copy` and `p2v checksum` against real files, qemu-nbd and qemu-img."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import attach_loop, require_programs, require_root
from tests.integration.transfer.disks import (
    MiB,
    allocated,
    copy_json,
    digest,
    make_disk,
    p2v,
    qemu_nbd,
)

SIZE = 64 * MiB
# Data at odd offsets, across a block boundary, and in the disk's last bytes.
CHUNKS = [(0, MiB), (10 * MiB + 12345, 3 * MiB), (SIZE - 100 * 1024, 100 * 1024)]


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_programs("qemu-img", "qemu-nbd", "qemu-io", "nbdkit")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.raw"
    make_disk(path, SIZE, CHUNKS)
    # An allocated run of zeros inside data: read, found zero, not written.
    with open(path, "r+b") as f:
        f.seek(30 * MiB)
        f.write(bytes(2 * MiB))
    return path


def unchanged(path: Path, before: tuple[str, float]) -> bool:
    return (digest(path), os.stat(path).st_mtime) == before


def test_copy_gives_the_same_bytes_sparse_and_the_same_digest(source: Path, tmp_path: Path) -> None:
    before = (digest(source), os.stat(source).st_mtime)
    target = tmp_path / "copy.raw"
    done = copy_json(str(source), str(target))
    assert target.read_bytes() == source.read_bytes()
    assert done["digest"] == before[0]
    data = sum(length for _, length in CHUNKS)
    assert allocated(source) >= data + 2 * MiB
    # Only the data is written, to the filesystem block: not the zeros around it in
    # its first and last 64 KiB piece, nor the run of zeros inside it.
    assert done["copied"] <= allocated(source) - 2 * MiB
    assert allocated(target) <= allocated(source) - 2 * MiB
    assert unchanged(source, before)


def test_raw_and_qcow2_of_one_disk_have_one_digest(source: Path, tmp_path: Path) -> None:
    before = (digest(source), os.stat(source).st_mtime)
    qcow2 = tmp_path / "peer.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(source), str(qcow2)], check=True)
    assert digest(qcow2) == before[0]

    ours = tmp_path / "ours.qcow2"
    assert copy_json(str(source), str(ours))["digest"] == before[0]
    assert (
        json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", str(ours)]))[
            "format"
        ]
        == "qcow2"
    )
    subprocess.run(["qemu-img", "compare", "-q", str(source), str(ours)], check=True)
    back = tmp_path / "back.raw"
    assert copy_json(str(ours), str(back), "--verify")["verified"] is True
    assert back.read_bytes() == source.read_bytes()
    assert unchanged(source, before)


def test_nbd_exports_as_source_and_as_target(source: Path, tmp_path: Path) -> None:
    before = (digest(source), os.stat(source).st_mtime)
    with qemu_nbd(source, tmp_path / "src.sock", "raw", "--read-only") as uri:
        assert digest(uri) == before[0]
        out = tmp_path / "from-nbd.raw"
        assert copy_json(uri, str(out))["digest"] == before[0]
    assert out.read_bytes() == source.read_bytes()

    target = tmp_path / "nbd-target.raw"
    target.write_bytes(b"")
    os.truncate(target, SIZE)
    with qemu_nbd(target, tmp_path / "dst.sock") as uri:
        assert copy_json(str(source), uri)["digest"] == before[0]
    assert target.read_bytes() == source.read_bytes()
    assert unchanged(source, before)


def test_output_format_is_taken_from_the_option(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "disk.img"
    copy_json(str(source), str(target), "--output-format", "qcow2")
    info = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", str(target)]))
    assert info["format"] == "qcow2"


def test_free_ranges_are_not_read_and_read_as_zeros(source: Path, tmp_path: Path) -> None:
    free = tmp_path / "free.json"
    free.write_text(json.dumps([[10 * MiB, 4 * MiB]]))  # covers the middle chunk
    target = tmp_path / "copy.raw"
    done = copy_json(str(source), str(target), "--free-map", str(free))
    expected = bytearray(source.read_bytes())
    expected[10 * MiB : 14 * MiB] = bytes(4 * MiB)
    assert target.read_bytes() == expected
    assert done["digest"] == digest(target)
    assert done["copied"] < 2 * MiB


def test_null_target_and_null_source(source: Path) -> None:
    assert copy_json(str(source), "null:")["digest"] == digest(source)
    zeros = copy_json("null:8M", "null:")
    assert zeros["copied"] == 0 and zeros["zeroed"] == 8 * MiB


def test_incremental_copy_takes_only_what_the_dirty_bitmap_marks(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    qemu_io(base, "write -P 0x11 0 4M", "write -P 0x22 20M 3M")
    target = tmp_path / "backup.raw"
    copy_json(str(base), str(target))
    subprocess.run(["qemu-img", "bitmap", "--add", str(base), "since-backup"], check=True)
    qemu_io(base, "write -P 0x33 1M 64k", "write -z 20M 1M", "write -P 0x44 40M 512k")

    done = copy_json(str(base), str(target), "--dirty-bitmap", "since-backup", "--verify")
    subprocess.run(["qemu-img", "compare", "-q", str(base), str(target)], check=True)
    assert done["copied"] <= 64 * 1024 + 512 * 1024
    assert done["skipped"] >= 60 * MiB
    assert done["verified"] is True


def qemu_io(image: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    subprocess.run([*argv, str(image)], check=True, capture_output=True)


# -- bad input: a clear error, and nothing lost ----------------------------


def test_a_missing_source_is_named(tmp_path: Path) -> None:
    done = p2v("copy", str(tmp_path / "nope.raw"), str(tmp_path / "out.raw"), check=False)
    assert done.returncode == 2
    assert "no such file or block device" in done.stderr
    assert not (tmp_path / "out.raw").exists()


def test_a_directory_is_not_a_source(tmp_path: Path) -> None:
    done = p2v("checksum", str(tmp_path), check=False)
    assert done.returncode == 2 and "is a directory" in done.stderr


def test_an_existing_target_is_kept_unless_overwrite(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.raw"
    target.write_bytes(b"keep me")
    done = p2v("copy", str(source), str(target), check=False)
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert target.read_bytes() == b"keep me"
    copy_json(str(source), str(target), "--overwrite")
    assert target.read_bytes() == source.read_bytes()


def test_a_smaller_target_is_refused_before_copying(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "small.raw"
    target.write_bytes(b"\x5a" * MiB)
    with qemu_nbd(target, tmp_path / "small.sock") as uri:
        done = p2v("copy", str(source), uri, check=False)
    assert done.returncode == 2
    assert "less than the source" in done.stderr
    assert target.read_bytes() == b"\x5a" * MiB


def test_a_read_only_export_is_refused_as_target(source: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.raw"
    other.write_bytes(bytes(SIZE))
    with qemu_nbd(other, tmp_path / "ro.sock", "raw", "--read-only") as uri:
        done = p2v("copy", str(source), uri, check=False)
    assert done.returncode != 0 and "read-only export" in done.stderr


def test_an_unknown_job_cannot_be_resumed() -> None:
    done = p2v("copy", "--resume", "copy-00000000", check=False)
    assert done.returncode == 2 and "no job 'copy-00000000'" in done.stderr


def test_tls_export_with_a_pre_shared_key(source: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "keys.psk").write_text("p2v:" + os.urandom(32).hex() + "\n")
    sock = tmp_path / "tls.sock"
    tls = ["--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={keys}", "--tls-creds=tls0"]
    with qemu_nbd(source, sock, "raw", "--read-only", *tls):
        uri = f"nbds+unix://p2v@/?socket={sock}&tls-psk-file={keys / 'keys.psk'}"
        assert copy_json(uri, str(tmp_path / "out.raw"))["digest"] == digest(source)
        wrong = tmp_path / "wrong.psk"
        wrong.write_text("p2v:" + os.urandom(32).hex() + "\n")
        refused = p2v("checksum", uri.replace(str(keys / "keys.psk"), str(wrong)), check=False)
        assert refused.returncode != 0 and "cannot open" in refused.stderr
        plain = p2v("checksum", f"nbd+unix:///?socket={sock}", check=False)
        assert plain.returncode != 0
    assert (tmp_path / "out.raw").read_bytes() == source.read_bytes()


def test_block_devices_as_source_and_target(source: Path, tmp_path: Path) -> None:
    require_root("attaches loop devices")
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * SIZE)  # not zero: zero ranges must really be zeroed
    small = tmp_path / "small.img"
    small.write_bytes(bytes(MiB))
    devices = [attach_loop(source, "--read-only"), attach_loop(disk), attach_loop(small)]
    try:
        src, dst, tiny = devices
        done = p2v("copy", src, dst, check=False)
        assert done.returncode == 2 and "--overwrite" in done.stderr
        assert copy_json(src, dst, "--overwrite")["digest"] == digest(source)
        assert digest(dst) == digest(source)
        refused = p2v("copy", src, tiny, "--overwrite", check=False)
        assert refused.returncode == 2 and "less than the source" in refused.stderr
    finally:
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False)
    assert disk.read_bytes() == source.read_bytes()


def resident(path: Path) -> int:
    """Bytes of `path` in the page cache, as util-linux's fincore counts them."""
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          check=True, capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


def storage_reads() -> int:
    """Bytes this process has made the kernel read from storage (not the page cache)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes"))


def test_a_source_in_the_page_cache_is_read_from_it_and_a_cold_one_past_it(
    tmp_path: Path,
) -> None:
    from p2v.jobs.journal import Journal
    from p2v.transfer import jobs

    path = tmp_path / "golden.raw"
    data = make_disk(path, SIZE, [(0, 24 * MiB), (40 * MiB, 8 * MiB)])
    fd = os.open(path, os.O_RDONLY)
    journal = Journal()
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        before = storage_reads()
        cold = jobs.copy(jobs.CopyRequest(str(path), "null:"), journal)
        assert storage_reads() - before >= data, "a cold source is read from the disk"
        assert resident(path) < MiB, "direct reads leave the page cache alone"

        os.pread(fd, SIZE, 0)  # now the page cache holds all of it
        before = storage_reads()
        hot = jobs.copy(jobs.CopyRequest(str(path), "null:"), journal)
        assert storage_reads() - before < MiB, "a source in the page cache is read from it"
        assert hot.digest == cold.digest == digest(path)
    finally:
        journal.close()
        os.close(fd)


def test_a_copy_made_for_another_job_is_recorded_as_its_child(source: Path) -> None:
    from p2v.jobs.journal import Journal
    from p2v.transfer import jobs

    journal = Journal()
    try:
        conversion = journal.create("convert", {})
        copied = jobs.copy(jobs.CopyRequest(str(source), "null:"), journal, parent=conversion.id)
        assert journal.get(copied.job_id).parent == conversion.id
        assert [j.id for j in journal.children(conversion.id)] == [copied.job_id]
        assert journal.get(copied.job_id).result == copied.to_json()
    finally:
        journal.close()
